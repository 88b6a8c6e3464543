"""Thin, typed ctypes access to libiptc (libip4tc / libip6tc) through one table handle.

python-iptables' own ``Table`` objects are process-wide singletons that keep a snapshot
of the table, and (with autocommit, its default) commit that snapshot when they are
refreshed or garbage-collected, which can silently undo other tools' changes. This module
never uses them: each :class:`Handle` is one ``iptc_init`` read of one table in the
calling thread's network namespace, mutated in memory, committed at most once, freed.

The libraries are the ones python-iptables loaded (same instance); the functions get
their own prototypes here, and errno is captured by ctypes right after each call.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator

from chains.errors import IptcError
from chains.iptc_loader import load_iptc

ENOENT = 2
EAGAIN = 11
EINVAL = 22
EEXIST = 17
ENOTEMPTY = 39
EMLINK = 31  # libiptc: "Can't delete chain with references left"


class xt_counters(ctypes.Structure):
    _fields_ = [("pcnt", ctypes.c_uint64), ("bcnt", ctypes.c_uint64)]


_Ptr = ctypes.c_void_p
_Str = ctypes.c_char_p
_Int = ctypes.c_int
_UInt = ctypes.c_uint

# name -> (restype, argtypes); the libraries prefix them with iptc_ / ip6tc_
_PROTOTYPES: dict[str, tuple["Any", list["Any"]]] = {
    "init": (_Ptr, [_Str]),
    "free": (None, [_Ptr]),
    "commit": (_Int, [_Ptr]),
    "is_chain": (_Int, [_Str, _Ptr]),
    "builtin": (_Int, [_Str, _Ptr]),
    "first_chain": (_Str, [_Ptr]),
    "next_chain": (_Str, [_Ptr]),
    "first_rule": (_Ptr, [_Str, _Ptr]),
    "next_rule": (_Ptr, [_Ptr, _Ptr]),
    "get_target": (_Str, [_Ptr, _Ptr]),
    "create_chain": (_Int, [_Str, _Ptr]),
    "delete_chain": (_Int, [_Str, _Ptr]),
    "flush_entries": (_Int, [_Str, _Ptr]),
    "append_entry": (_Int, [_Str, _Ptr, _Ptr]),
    "insert_entry": (_Int, [_Str, _Ptr, _UInt, _Ptr]),
    "delete_entry": (_Int, [_Str, _Ptr, _Ptr, _Ptr]),
    "check_entry": (_Int, [_Str, _Ptr, _Ptr, _Ptr]),
    "delete_num_entry": (_Int, [_Str, _UInt, _Ptr]),
    "get_references": (_Int, [ctypes.POINTER(_UInt), _Str, _Ptr]),
    "get_policy": (_Str, [_Str, ctypes.POINTER(xt_counters), _Ptr]),
    "strerror": (_Str, [_Int]),
}


TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a few ms to import; plugin execs cannot afford it
    from typing import Any

_CFunction = Callable[..., "Any"]


class LibIptc:
    """The libiptc functions of one address family (names without the iptc_/ip6tc_ prefix)."""

    init: _CFunction
    free: _CFunction
    commit: _CFunction
    is_chain: _CFunction
    builtin: _CFunction
    first_chain: _CFunction
    next_chain: _CFunction
    first_rule: _CFunction
    next_rule: _CFunction
    get_target: _CFunction
    create_chain: _CFunction
    delete_chain: _CFunction
    flush_entries: _CFunction
    append_entry: _CFunction
    insert_entry: _CFunction
    delete_entry: _CFunction
    check_entry: _CFunction
    delete_num_entry: _CFunction
    get_references: _CFunction
    get_policy: _CFunction
    strerror: _CFunction

    def __init__(self, family: int) -> None:
        iptc = load_iptc()
        loaded = iptc.ip4tc._libiptc if family == 4 else iptc.ip6tc._libiptc
        # A second CDLL of the same file is the same library instance (dlopen refcount);
        # it only gives us private function objects with use_errno.
        library = ctypes.CDLL(loaded._name, mode=ctypes.RTLD_GLOBAL, use_errno=True)
        prefix = "iptc_" if family == 4 else "ip6tc_"
        self.family = family
        for name, (restype, argtypes) in _PROTOTYPES.items():
            function = library[prefix + name]  # __getitem__: a fresh object, not the shared one
            function.restype = restype
            function.argtypes = argtypes
            setattr(self, name, function)

    def error(self, what: str) -> IptcError:
        errno = ctypes.get_errno()
        message = self.strerror(errno).decode(errors="replace") if errno else "libiptc version error"
        return IptcError(f"{what}: {message}", errno)


_libraries: dict[int, LibIptc] = {}


def library(family: int) -> LibIptc:
    if family not in (4, 6):
        raise ValueError(f"address family must be 4 or 6, not {family!r}")
    if family not in _libraries:
        _libraries[family] = LibIptc(family)
    return _libraries[family]


class Handle:
    """One libiptc snapshot of ``table``; changes stay in memory until :meth:`commit`."""

    def __init__(self, family: int, table: str) -> None:
        self.family = family
        self.table = table
        self.lib = library(family)
        self._table_name = table.encode()
        ctypes.set_errno(0)
        self._handle: int | None = self.lib.init(self._table_name)
        if not self._handle:
            raise self.lib.error(f"can't initialize {self._iptables()} table {table}")

    def _iptables(self) -> str:
        return "iptables" if self.family == 4 else "ip6tables"

    @property
    def raw(self) -> int:
        if not self._handle:
            raise IptcError(f"{self._iptables()} table {self.table}: handle already freed")
        return self._handle

    def free(self) -> None:
        if self._handle:
            self.lib.free(self._handle)
            self._handle = None

    def commit(self) -> None:
        ctypes.set_errno(0)
        if self.lib.commit(self.raw) != 1:
            error = self.lib.error(f"can't commit {self._iptables()} table {self.table}")
            if error.errno == EINVAL:
                error = IptcError(f"{error} (the kernel refused a rule; its log says which and why)", EINVAL)
            raise error

    def _check(self, ok: int, what: str) -> None:
        if ok != 1:
            raise self.lib.error(what)

    # chains ---------------------------------------------------------------

    def is_chain(self, chain: str) -> bool:
        return bool(self.lib.is_chain(chain.encode(), self.raw))

    def is_builtin(self, chain: str) -> bool:
        return bool(self.lib.builtin(chain.encode(), self.raw))

    def chains(self) -> list[str]:
        names = []
        name = self.lib.first_chain(self.raw)
        while name:
            names.append(name.decode())
            name = self.lib.next_chain(self.raw)
        return names

    def create_chain(self, chain: str) -> None:
        ctypes.set_errno(0)
        self._check(self.lib.create_chain(chain.encode(), self.raw), f"can't create chain {chain}")

    def delete_chain(self, chain: str) -> None:
        ctypes.set_errno(0)
        self._check(self.lib.delete_chain(chain.encode(), self.raw), f"can't delete chain {chain}")

    def flush(self, chain: str) -> None:
        ctypes.set_errno(0)
        self._check(self.lib.flush_entries(chain.encode(), self.raw), f"can't flush chain {chain}")

    def references(self, chain: str) -> int:
        count = _UInt(0)
        ctypes.set_errno(0)
        self._check(self.lib.get_references(ctypes.byref(count), chain.encode(), self.raw),
                    f"can't count references to chain {chain}")
        return count.value

    def policy(self, chain: str) -> tuple[str, int, int] | None:
        """(policy, packets, bytes) of a built-in chain, None for user chains."""
        if not self.is_builtin(chain):
            return None
        counters = xt_counters()
        policy = self.lib.get_policy(chain.encode(), ctypes.byref(counters), self.raw)
        if not policy:
            raise self.lib.error(f"can't get policy of chain {chain}")
        return policy.decode(), counters.pcnt, counters.bcnt

    # rules ----------------------------------------------------------------

    def entries(self, chain: str) -> Iterator[int]:
        """Addresses of the rule entries of ``chain`` in order (valid until the next change)."""
        entry = self.lib.first_rule(chain.encode(), self.raw)
        while entry:
            yield entry
            entry = self.lib.next_rule(entry, self.raw)

    def target_name(self, entry: int) -> str:
        """What libiptc calls the entry's target: a chain, verdict, extension, or ""."""
        name = self.lib.get_target(entry, self.raw)
        return name.decode() if name else ""

    def append(self, chain: str, entry: ctypes.Array[ctypes.c_ubyte]) -> None:
        ctypes.set_errno(0)
        self._check(self.lib.append_entry(chain.encode(), ctypes.addressof(entry), self.raw),
                    f"can't append rule to chain {chain}")

    def insert(self, chain: str, entry: ctypes.Array[ctypes.c_ubyte], index: int) -> None:
        """Insert before the rule at 0-based ``index``."""
        ctypes.set_errno(0)
        self._check(self.lib.insert_entry(chain.encode(), ctypes.addressof(entry), index, self.raw),
                    f"can't insert rule into chain {chain}")

    def delete_at(self, chain: str, index: int) -> None:
        """Delete the rule at 0-based ``index``."""
        ctypes.set_errno(0)
        self._check(self.lib.delete_num_entry(chain.encode(), index, self.raw),
                    f"can't delete rule {index + 1} of chain {chain}")

    def delete_matching(self, chain: str, entry: ctypes.Array[ctypes.c_ubyte],
                        mask: ctypes.Array[ctypes.c_ubyte]) -> bool:
        """Delete the first rule equal to ``entry`` (as ``iptables -D`` compares); False if none."""
        ctypes.set_errno(0)
        if self.lib.delete_entry(chain.encode(), ctypes.addressof(entry), ctypes.addressof(mask), self.raw) == 1:
            return True
        if ctypes.get_errno() == ENOENT:
            return False
        raise self.lib.error(f"can't delete rule from chain {chain}")

    def contains(self, chain: str, entry: ctypes.Array[ctypes.c_ubyte], mask: ctypes.Array[ctypes.c_ubyte]) -> bool:
        """Whether ``chain`` holds a rule equal to ``entry`` (``iptables -C``)."""
        ctypes.set_errno(0)
        if self.lib.check_entry(chain.encode(), ctypes.addressof(entry), ctypes.addressof(mask), self.raw) == 1:
            return True
        if ctypes.get_errno() == ENOENT:
            return False
        raise self.lib.error(f"can't check rule in chain {chain}")
