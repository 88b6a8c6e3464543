"""Small immutable value objects.

The rule model is imported by every plugin exec, and ``dataclasses`` costs ~9 ms to
import (it pulls in inspect, ast, tokenize); this base class gives the same value
semantics (equality, hashing, repr, immutability) for classes with explicit ``__init__``.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Self


class Record:
    """Immutable value object; subclasses set ``__slots__ = _fields = (attribute names)``."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _set(self, **values: object) -> None:
        """Assign attributes from ``__init__`` (normal assignment is refused)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def _trusted(cls, **values: object) -> Self:
        """An instance with exactly these attribute values, bypassing ``__init__`` checks."""
        instance = object.__new__(cls)
        instance._set(**values)
        return instance

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def replace(self, **changes: object) -> Self:
        """A copy with some attributes changed, validated again by ``__init__``."""
        values = {name: getattr(self, name) for name in self._fields}
        values.update(changes)
        return type(self)(**values)
