"""Transactions on nftables tables of our own: look up by name or key, stage, commit once.

``transaction(fn)`` takes our lock (one flock for every pycni process on the host, so that two of
our plugins never decide on the same shared object at once; foreign tools never touch our tables
and need no lock), opens a netfilter socket, runs ``fn(tx)``, and sends everything ``fn`` staged
as **one** nf_tables batch: the kernel applies all of it or nothing. Lookups address single
objects (a table, a chain, a map element, the rules of one small chain) and never list a table.
"""
from __future__ import annotations

import errno as errnos
import os

from chains.errors import ChainsError, TryAgain
from chains.nft import wire as w
from chains.nft.expr import NftRule, canonical_exprs, rule_expressions, rule_userdata
from chains.nft.session import NftError, Session
from netlink.wire import NLM_F_APPEND, NLM_F_CREATE, attr, iter_attrs, nested, parse_attrs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

DEFAULT_LOCK_PATH = "/run/pycni/nftables.lock"
ATTEMPTS = 5
_RETRY_ERRNOS = (errnos.EAGAIN, errnos.EINTR, errnos.EBUSY, errnos.ENOBUFS)


def lock_path() -> str:
    return os.environ.get("PYCNI_NFT_LOCKFILE") or DEFAULT_LOCK_PATH


class Table:
    """A table of ours: ``family`` (NFPROTO_*), name, and the comment that marks it as ours."""

    __slots__ = ("family", "name", "comment")

    def __init__(self, family: int, name: str, comment: str) -> None:
        self.family, self.name, self.comment = family, name, comment

    def __str__(self) -> str:
        return f"table {w.FAMILY_NAMES[self.family]} {self.name}"


class Chain:
    """A chain of ``table``; a base chain when ``hook`` is given as (hook number, priority, type)."""

    __slots__ = ("table", "name", "hook")

    def __init__(self, table: Table, name: str, hook: tuple[int, int, str] | None = None) -> None:
        if not name or len(name.encode()) > 255:
            raise ValueError(f"invalid nftables chain name {name!r}")
        self.table, self.name, self.hook = table, name, hook


class Map:
    """A hash set (``verdicts=False``) or verdict map of ``table`` keyed by the concatenation ``key_types``.

    No interval sets: every change of one rebuilds its lookup structure (a delete at 5,000
    elements took ~80 ms on the VM); subnets are matched with masks instead (chains.nft.prefixsets)."""

    __slots__ = ("table", "name", "key_types", "verdicts")

    def __init__(self, table: Table, name: str, key_types: tuple[int, ...], verdicts: bool = True) -> None:
        self.table, self.name, self.key_types, self.verdicts = table, name, key_types, verdicts

    @property
    def key_len(self) -> int:
        sizes = [w.TYPE_SIZES[kind] for kind in self.key_types]
        return sizes[0] if len(sizes) == 1 else sum((size + 3) // 4 * 4 for size in sizes)


class KernelRule:
    """A rule as the kernel has it: handle, decoded expressions, comment."""

    __slots__ = ("handle", "exprs", "comment")

    def __init__(self, handle: int, exprs: list[tuple[str, dict[int, object]]], comment: str | None) -> None:
        self.handle, self.exprs, self.comment = handle, exprs, comment

    def is_(self, rule: NftRule) -> bool:
        return rule.matches(self.exprs) and self.comment == rule.comment

    def lookup_set(self) -> str | None:
        """The set a rule looks up, or None."""
        for name, attrs in self.exprs:
            raw = attrs.get(1)
            if name == "lookup" and isinstance(raw, bytes):
                return raw.split(b"\0", 1)[0].decode()
        return None

    def immediate_value(self) -> bytes | None:
        """The first value a rule loads (a DNAT rule's address), or None."""
        for name, attrs in self.exprs:
            data = attrs.get(2)
            if name == "immediate" and isinstance(data, tuple) and data[0] == "value":
                return data[1] if isinstance(data[1], bytes) else None
        return None

    def verdict_chain(self) -> str | None:
        """The chain a jump/goto rule leads to (its last expression), or None."""
        if not self.exprs:
            return None
        name, attrs = self.exprs[-1]
        data = attrs.get(2)
        if name == "immediate" and isinstance(data, tuple) and data[0] == "verdict" and data[2]:
            return data[2].decode()
        return None


class Tx:
    """Lookups and staged changes of one transaction; valid only inside :func:`transaction`."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.staged: list[tuple[int, int, int, bytes, str]] = []
        self.log: list[str] = []  # what was staged, in nft syntax (debug logs, tests)
        self._set_ids = 0
        self.elements_deleted: dict[str, int] = {}  # per set, staged in this transaction
        self._deleted: set[tuple[object, ...]] = set()  # chains and rules staged for deletion

    # ------------------------------------------------------------------ lookups

    def table_comment(self, table: Table) -> str | None:
        """The comment of ``table`` ('' when it has none), or None when there is no such table."""
        found = self._session.get(w.GETTABLE, table.family, w.string(w.TABLE_NAME, table.name), f"get {table}")
        if found is None:
            return None
        udata = found.get(w.TABLE_USERDATA)
        return (w.udata_comment(udata, w.UDATA_TABLE_COMMENT) if udata else None) or ""

    def ours(self, table: Table) -> bool:
        """Whether ``table`` exists and is ours; a table of that name that is not ours is an error."""
        comment = self.table_comment(table)
        if comment is None:
            return False
        if comment != table.comment:
            shown = f'comment "{comment}"' if comment else "no comment"
            raise ChainsError(f"{table} exists but was not created by pycni ({shown}; ours say "
                              f'"{table.comment}"): refusing to change a table of another program')
        return True

    def chain_use(self, chain: Chain) -> int | None:
        """The kernel's use count of ``chain`` (its own rules plus the rules and map elements that
        jump to it); None if it does not exist."""
        found = self._session.get(w.GETCHAIN, chain.table.family,
                                  w.string(w.CHAIN_TABLE, chain.table.name) + w.string(w.CHAIN_NAME, chain.name),
                                  f"get chain {chain.name} of {chain.table}")
        if found is None:
            return None
        return w.get_be32(found[w.CHAIN_USE]) if w.CHAIN_USE in found else 0

    def references(self, chain: Chain) -> int | None:
        """How many rules and map elements jump to ``chain``; None if it does not exist."""
        use = self.chain_use(chain)
        return None if use is None else use - len(self.rules(chain))

    def has_chain(self, chain: Chain) -> bool:
        return self.chain_use(chain) is not None

    def rules(self, chain: Chain) -> list[KernelRule]:
        """The rules of one chain (a dump the kernel narrows to that chain)."""
        replies = self._session.dump(w.GETRULE, chain.table.family,
                                     w.string(w.RULE_TABLE, chain.table.name) + w.string(w.RULE_CHAIN, chain.name),
                                     f"list chain {chain.name} of {chain.table}")
        out = []
        for found in replies:
            udata = found.get(w.RULE_USERDATA)
            out.append(KernelRule(w.get_be64(found[w.RULE_HANDLE]), canonical_exprs(found.get(w.RULE_EXPRESSIONS, b"")),
                                  w.udata_comment(udata, w.UDATA_RULE_COMMENT) if udata else None))
        return out

    def chain_names(self, table: Table) -> list[str]:
        """Every chain of a table: only for recovery without records, never on the normal path."""
        replies = self._session.dump(w.GETCHAIN, table.family, w.string(w.CHAIN_TABLE, table.name),
                                     f"list chains of {table}")
        return [found[w.CHAIN_NAME].split(b"\0", 1)[0].decode() for found in replies
                if found.get(w.CHAIN_TABLE, b"").split(b"\0", 1)[0].decode() == table.name]

    def map_elements(self, map_: Map) -> list[tuple[bytes, tuple[int, str | None] | bool]]:
        """Every element of a map: only for recovery without records, never on the normal path."""
        replies = self._session.dump(w.GETSETELEM, map_.table.family, _element_list(map_, []),
                                     f"list map {map_.name} of {map_.table}")
        out = []
        for found in replies:
            for _type, elem in iter_attrs(found.get(w.SET_ELEM_LIST_ELEMENTS, b"")):
                parsed = parse_attrs(elem)
                key = parse_attrs(parsed.get(w.SET_ELEM_KEY, b"")).get(w.DATA_VALUE, b"")
                out.append((key, _element_target(parsed)))
        return out

    def holds_more_than(self, map_: Map, count: int) -> bool:
        """Whether a set holds more than ``count`` elements, judged from the first answer of a dump of
        it on a socket of its own that is then closed: a set of any size costs one small read."""
        probe = Session()
        _kept_open.append(probe)  # closed with the process: see _session
        replies = probe.first_dump_reply(w.GETSETELEM, map_.table.family, _element_list(map_, []),
                                         f"list {map_.name} of {map_.table}")
        seen = sum(1 for found in replies for _ in iter_attrs(found.get(w.SET_ELEM_LIST_ELEMENTS, b"")))
        return seen > count

    def element(self, map_: Map, key: bytes) -> tuple[int, str | None] | bool | None:
        """The verdict (code, chain) of a map element, True for a set member, None if absent."""
        elem = w.data_value(w.SET_ELEM_KEY, key)
        found = self._session.get(w.GETSETELEM, map_.table.family, _element_list(map_, [nested(w.LIST_ELEM, elem)]),
                                  f"get element of {map_.name} in {map_.table}")
        if found is None:
            return None
        for _type, elem in iter_attrs(found.get(w.SET_ELEM_LIST_ELEMENTS, b"")):
            return _element_target(parse_attrs(elem))
        return None

    # ------------------------------------------------------------------ staging

    def _stage(self, command: int, family: int, flags: int, attrs: bytes, text: str) -> None:
        self.staged.append((command, family, flags, attrs, text))
        self.log.append(text)

    def add_table(self, table: Table) -> None:
        self._stage(w.NEWTABLE, table.family, NLM_F_CREATE,
                    w.string(w.TABLE_NAME, table.name)
                    + attr(w.TABLE_USERDATA, w.comment_udata(w.UDATA_TABLE_COMMENT, table.comment)),
                    f'add {table} {{ comment "{table.comment}"; }}')

    def delete_table(self, table: Table) -> None:
        self._stage(w.DELTABLE, table.family, 0, w.string(w.TABLE_NAME, table.name), f"delete {table}")

    def add_chain(self, chain: Chain) -> None:
        attrs = w.string(w.CHAIN_TABLE, chain.table.name) + w.string(w.CHAIN_NAME, chain.name)
        text = f"add chain {w.FAMILY_NAMES[chain.table.family]} {chain.table.name} {chain.name}"
        if chain.hook is not None:
            hooknum, priority, kind = chain.hook
            attrs += nested(w.CHAIN_HOOK, w.be32(w.HOOK_HOOKNUM, hooknum), w.be32(w.HOOK_PRIORITY, priority))
            attrs += w.be32(w.CHAIN_POLICY, w.NF_ACCEPT) + w.string(w.CHAIN_TYPE, kind)
            text += f" {{ type {kind} hook {_HOOK_NAMES[hooknum]} priority {priority}; policy accept; }}"
        self._stage(w.NEWCHAIN, chain.table.family, NLM_F_CREATE, attrs, text)

    def delete_chain(self, chain: Chain) -> None:
        """Delete a chain with its rules (nothing may refer to it by the end of the batch)."""
        self._deleted.add(_chain_id(chain))
        self._stage(w.DELCHAIN, chain.table.family, 0,
                    w.string(w.CHAIN_TABLE, chain.table.name) + w.string(w.CHAIN_NAME, chain.name),
                    f"delete chain {w.FAMILY_NAMES[chain.table.family]} {chain.table.name} {chain.name}")

    def flush_chain(self, chain: Chain) -> None:
        """Remove every rule of a chain (a DELRULE naming only the chain)."""
        self._stage(w.DELRULE, chain.table.family, 0,
                    w.string(w.RULE_TABLE, chain.table.name) + w.string(w.RULE_CHAIN, chain.name),
                    f"flush chain {w.FAMILY_NAMES[chain.table.family]} {chain.table.name} {chain.name}")

    def add_map(self, map_: Map) -> None:
        # A concatenated key needs no NFT_SET_CONCAT here: that flag is for interval sets of
        # concatenations; a hash set treats the padded fields as one opaque key.
        flags = w.SET_F_MAP if map_.verdicts else 0
        self._set_ids += 1
        attrs = (w.string(w.SET_TABLE, map_.table.name) + w.string(w.SET_NAME, map_.name) + w.be32(w.SET_FLAGS, flags)
                 + w.be32(w.SET_KEY_TYPE, w.concat_type(map_.key_types)) + w.be32(w.SET_KEY_LEN, map_.key_len)
                 + w.be32(w.SET_ID, self._set_ids))  # unique in the batch
        if map_.verdicts:
            attrs += w.be32(w.SET_DATA_TYPE, 0xFFFFFF00) + w.be32(w.SET_DATA_LEN, 0)  # NFT_DATA_VERDICT
        if len(map_.key_types) == 1:  # how nft is to print the keys (an interface name is a host-order string)
            order = w.BYTEORDER_HOST if map_.key_types[0] == w.TYPE_IFNAME else w.BYTEORDER_BIG_ENDIAN
            attrs += attr(w.SET_USERDATA, bytes((w.UDATA_SET_KEYBYTEORDER, 4)) + order.to_bytes(4, "little"))
        self._stage(w.NEWSET, map_.table.family, NLM_F_CREATE, attrs,
                    f"add {'map' if map_.verdicts else 'set'} {w.FAMILY_NAMES[map_.table.family]} "
                    f"{map_.table.name} {map_.name}")

    def add_rule(self, table: Table, rule: NftRule) -> None:
        self._stage(w.NEWRULE, table.family, NLM_F_CREATE | NLM_F_APPEND,
                    w.string(w.RULE_TABLE, table.name) + w.string(w.RULE_CHAIN, rule.chain)
                    + rule_expressions(rule) + rule_userdata(rule),
                    f"add rule {w.FAMILY_NAMES[table.family]} {table.name} {rule.chain} {rule.text}")

    def deleting(self, chain: Chain, handle: int | None = None) -> bool:
        """Whether the chain (or its rule ``handle``) is already staged for deletion."""
        return _chain_id(chain) in self._deleted or (handle is not None and (*_chain_id(chain), handle) in self._deleted)

    def delete_rule(self, chain: Chain, handle: int) -> None:
        self._deleted.add((*_chain_id(chain), handle))
        self._stage(w.DELRULE, chain.table.family, 0,
                    w.string(w.RULE_TABLE, chain.table.name) + w.string(w.RULE_CHAIN, chain.name)
                    + w.be64(w.RULE_HANDLE, handle),
                    f"delete rule {w.FAMILY_NAMES[chain.table.family]} {chain.table.name} {chain.name} "
                    f"handle {handle}")

    def add_element(self, map_: Map, key: bytes, shown: str, target: tuple[int, str | None] | None = None) -> None:
        """Add ``key`` (shown as ``shown``); for a verdict map, mapped to ``target`` (code, chain)."""
        elem = w.data_value(w.SET_ELEM_KEY, key)
        text = shown
        if target is not None:
            elem += w.data_verdict(w.SET_ELEM_DATA, *target)
            text += f" : {w.VERDICT_NAMES[target[0]]}" + (f" {target[1]}" if target[1] else "")
        self._stage(w.NEWSETELEM, map_.table.family, NLM_F_CREATE, _element_list(map_, [nested(w.LIST_ELEM, elem)]),
                    f"add element {w.FAMILY_NAMES[map_.table.family]} {map_.table.name} {map_.name} {{ {text} }}")

    def has_map(self, map_: Map) -> bool:
        return self._session.get(w.GETSET, map_.table.family, w.string(w.SET_TABLE, map_.table.name)
                                 + w.string(w.SET_NAME, map_.name), f"get set {map_.name} of {map_.table}") is not None

    def delete_map(self, map_: Map) -> None:
        self._stage(w.DELSET, map_.table.family, 0,
                    w.string(w.SET_TABLE, map_.table.name) + w.string(w.SET_NAME, map_.name),
                    f"delete set {w.FAMILY_NAMES[map_.table.family]} {map_.table.name} {map_.name}")

    def delete_element(self, map_: Map, key: bytes, shown: str) -> None:
        self.elements_deleted[map_.name] = self.elements_deleted.get(map_.name, 0) + 1
        elem = w.data_value(w.SET_ELEM_KEY, key)
        self._stage(w.DELSETELEM, map_.table.family, 0, _element_list(map_, [nested(w.LIST_ELEM, elem)]),
                    f"delete element {w.FAMILY_NAMES[map_.table.family]} {map_.table.name} {map_.name} {{ {shown} }}")


_HOOK_NAMES = {w.HOOK_PREROUTING: "prerouting", w.HOOK_INPUT: "input", w.HOOK_FORWARD: "forward",
               w.HOOK_OUTPUT: "output", w.HOOK_POSTROUTING: "postrouting"}


def _chain_id(chain: Chain) -> tuple[int, str, str]:
    return (chain.table.family, chain.table.name, chain.name)


def _element_list(map_: Map, elements: list[bytes]) -> bytes:
    attrs = w.string(w.SET_ELEM_LIST_TABLE, map_.table.name) + w.string(w.SET_ELEM_LIST_SET, map_.name)
    return attrs + nested(w.SET_ELEM_LIST_ELEMENTS, *elements) if elements else attrs


def _element_target(elem: dict[int, bytes]) -> tuple[int, str | None] | bool:
    """A map element's verdict as (code, chain); True for a member of a plain set."""
    data = elem.get(w.SET_ELEM_DATA)
    if data is None:
        return True
    verdict = parse_attrs(parse_attrs(data).get(w.DATA_VERDICT, b""))
    chain = verdict.get(w.VERDICT_CHAIN)
    return w.get_be32s(verdict[w.VERDICT_CODE]), chain.split(b"\0", 1)[0].decode() if chain else None


# Sockets stay open until the process ends, on purpose: the first close of a netfilter socket after
# a commit that deleted something waits for the kernel's deferred destruction (an RCU grace period,
# ~10 ms on the VM). Left to the process's exit, that wait falls after the answer: in a helper worker
# it is off the caller's path entirely, and one exec pays it at most once instead of per transaction.
_sessions: dict[tuple[int, int], Session] = {}
_kept_open: list[Session] = []


def _session() -> Session:
    """This process's socket in the current thread's network namespace."""
    st = os.stat("/proc/thread-self/ns/net")
    key = (st.st_dev, st.st_ino)
    session = _sessions.get(key)
    if session is None:
        session = _sessions[key] = Session()
    return session


def _discard(session: Session) -> None:
    for key, known in list(_sessions.items()):
        if known is session:
            del _sessions[key]
    _kept_open.append(session)


def transaction(fn: Callable[[Tx], T], *, read_only: bool = False) -> T:
    """Run ``fn(tx)`` under our lock and commit what it staged as one batch.

    Retried on a fresh look-up when the kernel reports a transient failure; a persistent one
    raises :class:`~chains.errors.TryAgain` (CNI code 11).
    """
    from chains.lock import xtables_lock  # noqa: PLC0415

    path = lock_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    last: NftError | None = None
    for _attempt in range(ATTEMPTS):
        session = _session()
        try:
            with xtables_lock(path=path):
                tx = Tx(session)
                result = fn(tx)
                if tx.staged and not read_only:
                    from cni import faults  # noqa: PLC0415

                    faults.point("chains.commit.before")
                    session.commit(tx.staged)
                    faults.point("chains.commit.after")
                return result
        except NftError as err:
            _discard(session)  # a fresh socket for the next attempt: nothing left over to read
            if err.errno not in _RETRY_ERRNOS:
                raise ChainsError(f"nftables: {err.strerror}") from None
            last = err
    raise TryAgain(f"nftables kept refusing the change: {last.strerror if last else 'unknown error'}")
