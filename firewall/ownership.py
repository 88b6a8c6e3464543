"""The firewall's ownership records: which addresses and isolation pairs an attachment has rules for.

One record per attachment (``cni.records``), written before a commit adds rules and removed after
the commit that took them out, so DEL and GC know exactly what to remove without prevResult::

    {"families": {"4": {"addresses": ["10.88.0.5"], "isolation": [["cni0", "same-bridge"]]}}}

Stdlib only: every DEL reads these.
"""
from __future__ import annotations

import sys

from cni.errors import IO_FAILURE, CNIError
from cni.records import RecordStore, is_foreign, state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from cni.records import Attachment

    Pair = tuple[str, str]  # (bridge, ingress policy)

OWNER = "firewall"
FAMILIES = (4, 6)


class Holdings:
    """Addresses and isolation (bridge, policy) pairs in one family: what one attachment owns, or what
    the others claim. ``complete`` is False when some record could not be read: then nothing shared
    by bridge is dropped on its account."""

    __slots__ = ("addresses", "pairs", "complete")

    def __init__(self, addresses: Iterable[str] = (), pairs: Iterable[Pair] = (), complete: bool = True) -> None:
        self.addresses = list(dict.fromkeys(addresses))
        self.pairs = list(dict.fromkeys((str(b), str(p)) for b, p in pairs))
        self.complete = complete

    def __bool__(self) -> bool:
        return bool(self.addresses or self.pairs)

    def __or__(self, other: Holdings) -> Holdings:
        return Holdings(self.addresses + other.addresses, self.pairs + other.pairs,
                        self.complete and other.complete)

    def __sub__(self, other: Holdings) -> Holdings:
        """What ``self`` has and ``other`` does not: a re-ADD's stale addresses and pairs."""
        return Holdings([a for a in self.addresses if a not in other.addresses],
                        [p for p in self.pairs if p not in other.pairs])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Holdings) and (self.addresses, self.pairs, self.complete) == \
            (other.addresses, other.pairs, other.complete)

    def __repr__(self) -> str:
        return f"Holdings({self.addresses!r}, {self.pairs!r}, complete={self.complete})"


def empty() -> dict[int, Holdings]:
    return {family: Holdings() for family in FAMILIES}


def store_for(config: dict[str, Any]) -> RecordStore:
    return RecordStore(state_dir(config), OWNER)


def to_record(holdings: dict[int, Holdings], backend: str = "iptables") -> dict[str, Any]:
    return {"backend": backend,
            "families": {str(family): {"addresses": h.addresses, "isolation": [list(p) for p in h.pairs]}
                         for family, h in sorted(holdings.items()) if h}}


def backend_of(data: dict[str, Any] | None) -> str:
    """The backend holding a record's rules (records from before backends existed: iptables)."""
    backend = (data or {}).get("backend")
    return backend if backend in ("iptables", "nftables") else "iptables"


def recorded_backend(store: RecordStore, att: Attachment) -> str | None:
    """The backend the attachment's record names; None without a readable record."""
    try:
        data = store.load(att)
    except CNIError:
        return None
    return backend_of(data) if data is not None else None


def from_record(data: dict[str, Any]) -> dict[int, Holdings]:
    """The holdings a record names; ValueError when it is not one of ours."""
    families = data.get("families")
    if not isinstance(families, dict):
        raise ValueError("no families")
    found = empty()
    for key, entry in families.items():
        if key not in ("4", "6") or not isinstance(entry, dict):
            raise ValueError(f"bad family {key!r}")
        addresses = entry.get("addresses", [])
        pairs = entry.get("isolation", [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ValueError(f"bad addresses in family {key}")
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
            raise ValueError(f"bad isolation pairs in family {key}")
        found[int(key)] = Holdings(addresses, [(p[0], p[1]) for p in pairs])
    return found


def load(store: RecordStore, att: Attachment) -> dict[int, Holdings] | None:
    """The attachment's holdings; None without a record. A corrupt record raises CNIError (code 5).

    A foreign record (written in another boot or another network namespace) holds nothing: its rules
    were in tables that are gone, so it never keeps a rule here (:func:`claims`), a DEL or GC of it
    removes no rule, and a re-ADD over it has no stale rules to take out.
    """
    data = store.load(att)
    if data is None:
        return None
    return load_data(store, att, data)


def load_data(store: RecordStore, att: Attachment, data: dict[str, Any]) -> dict[int, Holdings]:
    """The holdings of a record already read (see :func:`load`)."""
    if is_foreign(data):
        return empty()
    try:
        return from_record(data)
    except ValueError as exc:
        raise CNIError(IO_FAILURE, f"corrupt ownership record {store.path(att)}: {exc}") from None


def load_reporting(store: RecordStore, att: Attachment) -> dict[int, Holdings] | None:
    """Like :func:`load`, but a corrupt record is reported on stderr and counts as none."""
    try:
        return load(store, att)
    except CNIError as err:
        print(f"firewall: {err}", file=sys.stderr)
        return None


def save(store: RecordStore, att: Attachment, holdings: dict[int, Holdings], backend: str = "iptables") -> None:
    """Write the record, or remove it when nothing is held."""
    if any(holdings.values()):
        store.save(att, to_record(holdings, backend))
    else:
        store.delete(att)


def claims(store: RecordStore, exclude: Iterable[Attachment], family: int, backend: str = "iptables") -> Holdings:
    """What every other attachment's record (of any network in this state directory) holds in ``family``.

    A record written by an ADD that is still under way claims both its old and its new holdings, so
    reading this inside the table lock never misses rules that are, or are about to be, in the table.
    """
    excluded = set(exclude)
    addresses: list[str] = []
    pairs: list[Pair] = []
    complete = True
    for att in store.attachments():
        if att in excluded:
            continue
        try:
            data = store.load(att)
            held = None if data is None else load_data(store, att, data)
            if backend_of(data) != backend:
                continue  # its rules are in the other backend's tables
        except CNIError:
            complete = False
            continue
        if held is not None:
            addresses += held[family].addresses
            pairs += held[family].pairs
    return Holdings(addresses, pairs, complete)
