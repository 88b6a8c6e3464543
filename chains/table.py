"""Transactions on one netfilter table: lock, read once, stage changes, commit once.

``apply(4, "nat", fn)`` takes the xtables lock, reads the table with one libiptc call,
runs ``fn(tx)``, which inspects and stages changes on the :class:`Tx`, commits once if
anything changed, and releases the lock. When the commit fails because the table changed
under us (EAGAIN: a writer that ignores the lock, such as another libiptc user), the
whole thing is re-run on a fresh read, a bounded number of times with backoff, and then
:class:`~chains.errors.TryAgain` is raised. ``fn`` must therefore only stage changes
through ``tx`` (and be safe to run again).

libiptc works in the network namespace of the calling thread: enter the namespace
before calling :func:`apply`. Every transaction reads the table afresh; nothing is cached
between transactions.

Rule numbers in this API are 1-based, as in ``iptables -I CHAIN 1`` / ``--line-numbers``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from chains import codec
from chains.errors import ChainsError, IptcError, TryAgain
from chains.libiptc import EAGAIN, Handle
from chains.lock import DEFAULT_WAIT_SECONDS, xtables_lock
from chains.rule import VERDICTS, Rule, render
from cni import faults, log

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a few ms to import; plugin execs cannot afford it
    from typing import TypeVar

    T = TypeVar("T")

TABLES = ("filter", "nat", "mangle", "raw", "security")
DEFAULT_ATTEMPTS = 5
_BACKOFF_SECONDS = 0.02


class Tx:
    """Staged changes to one table; obtained from :func:`apply`, valid only inside ``fn``."""

    def __init__(self, handle: Handle) -> None:
        self._handle = handle
        self.family = handle.family
        self.table = handle.table
        self.changed = False

    # chains -----------------------------------------------------------------

    def has_chain(self, name: str) -> bool:
        return self._handle.is_chain(name)

    def is_builtin(self, name: str) -> bool:
        return self._handle.is_builtin(name)

    def chains(self) -> list[str]:
        """All chains of the table, built-in ones first, as iptables-save lists them."""
        return self._handle.chains()

    def ensure_chain(self, name: str) -> bool:
        """Create chain ``name`` unless it exists; True if it was created."""
        if self._handle.is_chain(name):
            return False
        self._handle.create_chain(name)
        self.changed = True
        return True

    def flush(self, name: str) -> None:
        """Remove every rule of chain ``name`` (which must exist)."""
        self._require_chain(name)
        if not self.is_empty(name):
            self._handle.flush(name)
            self.changed = True

    def delete_chain(self, name: str) -> bool:
        """Flush and delete user chain ``name``; False if it did not exist.

        Raises ChainsError while rules elsewhere still jump to it.
        """
        if not self._handle.is_chain(name):
            return False
        if self._handle.is_builtin(name):
            raise ChainsError(f"cannot delete built-in chain {name}")
        references = self._handle.references(name)
        if references:
            raise ChainsError(f"cannot delete chain {name} in table {self.table}: {references} rule(s) still jump to it")
        self.flush(name)
        self._handle.delete_chain(name)
        self.changed = True
        return True

    def policy(self, name: str) -> tuple[str, int, int] | None:
        """(policy, packets, bytes) of a built-in chain; None for a user chain."""
        self._require_chain(name)
        return self._handle.policy(name)

    def references(self, name: str) -> int:
        """How many rules jump to chain ``name``."""
        self._require_chain(name)
        return self._handle.references(name)

    # reading rules ------------------------------------------------------------

    def rule_count(self, chain: str) -> int:
        self._require_chain(chain)
        return sum(1 for _ in self._handle.entries(chain))

    def is_empty(self, chain: str) -> bool:
        """Whether ``chain`` has no rules (without counting a long chain's rules one by one)."""
        self._require_chain(chain)
        return next(iter(self._handle.entries(chain)), None) is None

    def chain_rules(self, chain: str) -> list[Rule]:
        """The rules of ``chain`` in the model. Decodes every rule: meant for small chains."""
        return [decoded.rule for decoded in self._decoded(chain)]

    def rules_text(self, chain: str) -> list[str]:
        """The rules of ``chain`` as iptables-save prints them (``-A chain ...``)."""
        return [decoded.text for decoded in self._decoded(chain)]

    def rules_numbered(self, chain: str, numbers: Iterable[int]) -> dict[int, Rule]:
        """Decode only the rules with the given 1-based numbers of ``chain``, in one walk."""
        self._require_chain(chain)
        wanted = set(numbers)
        found: dict[int, Rule] = {}
        if not wanted:
            return found
        last = max(wanted)
        for number, entry in enumerate(self._handle.entries(chain), start=1):
            if number in wanted:
                found[number] = codec.decode(self._handle, chain, entry).rule
            if number >= last:
                break
        missing = wanted - set(found)
        if missing:
            raise ChainsError(f"chain {chain} has no rule {min(missing)}")
        return found

    def _decoded(self, chain: str) -> list[codec.Decoded]:
        self._require_chain(chain)
        return [codec.decode(self._handle, chain, entry) for entry in self._handle.entries(chain)]

    def find_jumps(self, in_chain: str, target_chain: str) -> list[int]:
        """1-based numbers of the rules in ``in_chain`` whose target is ``target_chain``.

        Only libiptc's rule walk and target names are used, no rule is decoded, so this
        is cheap even for chains with thousands of rules. A missing ``in_chain`` has none.
        """
        if not self._handle.is_chain(in_chain):
            return []
        wanted = target_chain
        target_name = self._handle.target_name
        return [number for number, entry in enumerate(self._handle.entries(in_chain), start=1)
                if target_name(entry) == wanted]

    def has_rule(self, rule: Rule) -> bool:
        """Whether ``rule.chain`` holds a rule equal to ``rule`` (like ``iptables -C``)."""
        if not self._handle.is_chain(rule.chain):
            return False
        if rule.target.is_chain_jump and not self._handle.is_chain(rule.target.name):
            return False  # nothing can jump to a chain that does not exist
        entry = self._encode(rule)
        return self._handle.contains(rule.chain, entry.data, entry.mask)

    # changing rules -----------------------------------------------------------

    def append(self, rule: Rule) -> None:
        """Add ``rule`` at the end of ``rule.chain``."""
        self._require_chain(rule.chain)
        entry = self._encode(rule)
        self._handle.append(rule.chain, entry.data)
        self.changed = True

    def insert(self, rule: Rule, position: int = 1) -> None:
        """Insert ``rule`` so it becomes rule number ``position`` (1 = first) of its chain."""
        self._require_chain(rule.chain)
        count = self.rule_count(rule.chain)
        if not 1 <= position <= count + 1:
            raise ChainsError(f"cannot insert at position {position} of chain {rule.chain} ({count} rules)")
        entry = self._encode(rule)
        self._handle.insert(rule.chain, entry.data, position - 1)
        self.changed = True

    def delete_rule(self, rule: Rule) -> bool:
        """Delete the first rule equal to ``rule`` from its chain; False if there is none."""
        if not self._handle.is_chain(rule.chain):
            return False
        if rule.target.is_chain_jump and not self._handle.is_chain(rule.target.name):
            return False
        entry = self._encode(rule)
        deleted = self._handle.delete_matching(rule.chain, entry.data, entry.mask)
        self.changed |= deleted
        return deleted

    def delete_rule_at(self, chain: str, number: int) -> None:
        """Delete rule number ``number`` (1-based) of ``chain``."""
        self._require_chain(chain)
        self._handle.delete_at(chain, number - 1)
        self.changed = True

    # helpers ----------------------------------------------------------------

    def _require_chain(self, name: str) -> None:
        if not self._handle.is_chain(name):
            raise ChainsError(f"chain {name} not found in table {self.table}")

    def _encode(self, rule: Rule) -> codec.Entry:
        if rule.family not in (None, self.family):
            raise ChainsError(f"IPv{rule.family} rule [{render(rule)}] cannot go into an IPv{self.family} table")
        target = rule.target
        is_chain = target.is_chain_jump
        if is_chain:
            if not self._handle.is_chain(target.name):
                raise ChainsError(f"chain {target.name} not found in table {self.table} "
                                  f"(needed by rule [{render(rule)}])")
            if self._handle.is_builtin(target.name):
                raise ChainsError(f"cannot jump to built-in chain {target.name}")
        elif target.name and target.name not in VERDICTS and not target.is_extension:
            raise ChainsError(f"unknown target {target.name}")
        return codec.build_entry(self.family, rule, target_is_chain=is_chain)


def apply(
    family: int,
    table: str,
    fn: Callable[[Tx], T],
    *,
    lock_wait: float = DEFAULT_WAIT_SECONDS,
    attempts: int = DEFAULT_ATTEMPTS,
) -> T:
    """Run ``fn`` on a fresh read of ``table`` (IPv``family``) and commit what it staged.

    Holds the xtables lock from the read to the commit (waiting at most ``lock_wait``
    seconds for it in total). Re-runs ``fn`` on a fresh read when the commit or the read
    hits EAGAIN, up to ``attempts`` times, then raises TryAgain. Returns what ``fn``
    returned in the attempt that committed.
    """
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; one of {', '.join(TABLES)}")
    deadline = time.monotonic() + lock_wait
    last_error: IptcError | None = None
    for attempt in range(attempts):
        if attempt:
            _backoff(attempt)
        with xtables_lock(wait=max(deadline - time.monotonic(), 0.0)):
            try:
                return _run_once(family, table, fn)
            except IptcError as error:
                if error.errno != EAGAIN:
                    raise
                last_error = error
    raise TryAgain(f"{'ip6tables' if family == 6 else 'iptables'} table {table} kept changing during "
                   f"{attempts} attempts: {last_error}")


def _run_once(family: int, table: str, fn: Callable[[Tx], T]) -> T:
    handle = Handle(family, table)
    try:
        tx = Tx(handle)
        before = _save_lines(tx) if log.debugging() else None
        result = fn(tx)
        if tx.changed:
            after = _save_lines(tx) if before is not None else None
            faults.point("chains.commit.before")
            handle.commit()
            faults.point("chains.commit.after")
            if before is not None and after is not None:
                _log_commit(family, table, before, after)
        return result
    finally:
        handle.free()


def _save_lines(tx: Tx) -> list[str]:
    """The table as ``tx`` sees it, in iptables-save lines, built-in chains' counters left out."""
    from chains.render import tx_table_text  # noqa: PLC0415 - it imports this module; debug logs only

    lines = tx_table_text(tx).splitlines()
    return [line.rsplit(" [", 1)[0] if line.startswith(":") else line for line in lines]


def _log_commit(family: int, table: str, before: list[str], after: list[str]) -> None:
    """What a commit changed, as the iptables-save lines it added and removed (logLevel debug)."""
    from collections import Counter  # noqa: PLC0415

    old, new = Counter(before), Counter(after)
    log.debug("rules committed", family=family, table=table,
              added=list((new - old).elements()), removed=list((old - new).elements()))


def _backoff(attempt: int) -> None:
    # exponential with jitter, so retrying writers do not collide in lockstep
    jitter = 0.5 + (time.perf_counter_ns() % 1009) / 1009
    time.sleep(_BACKOFF_SECONDS * (2 ** (attempt - 1)) * jitter)


def read(family: int, table: str, fn: Callable[[Tx], T]) -> T:
    """Run ``fn`` on a fresh read of ``table`` without the lock and without committing.

    For inspection only (iptables-save does not lock either); anything ``fn`` stages is
    discarded.
    """
    handle = Handle(family, table)
    try:
        return fn(Tx(handle))
    finally:
        handle.free()
