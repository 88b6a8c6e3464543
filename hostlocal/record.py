"""``Record``: value semantics (==, hash, repr) for small ``__slots__`` classes.

A stand-in for frozen dataclasses on the exec path: importing ``dataclasses`` (it pulls in
``inspect``) and decorating a class cost about a millisecond each, paid by every container
start. Subclasses declare ``__slots__`` and a typed ``__init__``; nothing else.
"""
from __future__ import annotations


class Record:
    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
