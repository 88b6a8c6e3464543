"""Chains managed as a whole: a body of rules plus the jump rules that lead into it.

:class:`OwnedChain` belongs to one owner (a container's ``CNI-DN-*`` chain, the bridge's
per-container masquerade chain): :meth:`~OwnedChain.ensure` makes the body exactly the
given rules (stale rules are replaced, not appended behind), makes its entry chains hold
exactly the wanted jumps to it, and is idempotent; :meth:`~OwnedChain.remove` deletes
every jump to it (the known ones first, then any stray one anywhere in the table), then
the chain, and tolerates any part already being gone; :meth:`~OwnedChain.check` lists
precise problems.

:class:`SharedChain` is a chain several owners rely on (``CNI-HOSTPORT-DNAT``,
``CNI-HOSTPORT-SETMARK``, ``CNI-FORWARD``): ensure only adds what is missing and leaves
other rules and jumps alone; whether it is still needed is the caller's decision, helped
by :meth:`~SharedChain.in_use`.

All methods work on a :class:`chains.table.Tx`, inside :func:`chains.table.apply`.
"""
from __future__ import annotations

from collections.abc import Iterable

from chains.errors import ChainsError
from chains.record import Record
from chains.rule import Conditions, Rule, Target, render
from chains.values import validate_chain_name
from chains.table import Tx


class OwnedChain(Record):
    """Chain ``name`` in ``table`` with rules ``body``, entered from each of
    ``entry_chains`` by one jump per entry in ``entry_rules`` (the conditions of the jump;
    ``Conditions()`` jumps unconditionally). Jumps are appended, or inserted at the top
    when ``prepend``.
    """

    __slots__ = _fields = ("table", "name", "entry_chains", "entry_rules", "body", "prepend")
    table: str
    name: str
    entry_chains: tuple[str, ...]
    entry_rules: tuple[Conditions, ...]
    body: tuple[Rule, ...]
    prepend: bool

    def __init__(self, table: str, name: str, entry_chains: Iterable[str] = (),
                 entry_rules: Iterable[Conditions] = (), body: Iterable[Rule] = (), prepend: bool = False) -> None:
        validate_chain_name(name)
        entry_chains, entry_rules, body = tuple(entry_chains), tuple(entry_rules), tuple(body)
        for chain in entry_chains:
            validate_chain_name(chain)
        for conditions in entry_rules:
            if not isinstance(conditions, Conditions):
                raise ValueError(f"entry_rules must be Conditions, got {conditions!r}")
        for rule in body:
            if not isinstance(rule, Rule) or rule.chain != name:
                raise ValueError(f"body rules must be Rules of chain {name}, got {rule!r}")
        self._set(table=table, name=name, entry_chains=entry_chains, entry_rules=entry_rules, body=body,
                  prepend=bool(prepend))

    @property
    def exclusive(self) -> bool:
        """Whether this owner decides the whole content (rules and jumps) of the chain."""
        return True

    def jump_rules(self, entry_chain: str | None = None) -> list[Rule]:
        """The jump rules this chain wants, all or those of one entry chain."""
        chains = self.entry_chains if entry_chain is None else (entry_chain,)
        return [conditions.to_rule(chain, Target(self.name)) for chain in chains for conditions in self.entry_rules]

    # ------------------------------------------------------------------ ensure

    def ensure(self, tx: Tx) -> bool:
        """Bring the chain, its body and its jumps to the wanted state; True if anything changed."""
        self._check_table(tx)
        changed = tx.ensure_chain(self.name)
        changed |= self._ensure_body(tx)
        if self._jumps_already_right(tx):
            return changed
        for chain in self.entry_chains:
            changed |= self._ensure_jumps(tx, chain)
        return changed

    def _jumps_already_right(self, tx: Tx) -> bool:
        """Whether the wanted jumps are all there (and, for an exclusive chain, nothing else jumps to
        it), decided by libiptc in C: the entry chains can hold a jump for every container on the
        node, and walking them in Python is what a busy node cannot afford on every ADD."""
        wanted = self.jump_rules()
        if len(set(wanted)) != len(wanted) or not all(tx.has_chain(chain) for chain in self.entry_chains):
            return False  # the careful path handles duplicates and reports a missing entry chain
        if self.exclusive and tx.references(self.name) != len(wanted):
            return False
        return all(tx.has_rule(rule) for rule in wanted)

    def _ensure_body(self, tx: Tx) -> bool:
        current = tx.chain_rules(self.name)
        wanted = list(self.body)
        if current == wanted:
            return False
        tx.flush(self.name)
        for rule in wanted:
            tx.append(rule)
        return True

    def _ensure_jumps(self, tx: Tx, chain: str) -> bool:
        if not tx.has_chain(chain):
            raise ChainsError(f"entry chain {chain} of {self.name} not found in table {self.table}")
        # Nothing jumps to a chain nobody references (a new one): no need to walk the entry chain.
        present = tx.rules_numbered(chain, tx.find_jumps(chain, self.name)) if tx.references(self.name) else {}
        wanted = self.jump_rules(chain)
        unmatched = list(wanted)
        stale = []
        for number, rule in sorted(present.items()):
            if rule in unmatched:
                unmatched.remove(rule)
            elif self.exclusive:
                stale.append(number)  # an old or duplicate jump to a chain only we own
        for number in reversed(stale):
            tx.delete_rule_at(chain, number)
        if self.prepend:
            for rule in reversed(unmatched):
                tx.insert(rule, 1)
        else:
            for rule in unmatched:
                tx.append(rule)
        return bool(stale or unmatched)

    # ------------------------------------------------------------------ remove

    def remove(self, tx: Tx) -> bool:
        """Delete all jumps to the chain, then the chain; True if it existed."""
        self._check_table(tx)
        if not tx.has_chain(self.name):
            return False
        for chain in self.entry_chains:
            _delete_jumps(tx, chain, self.name)
        if tx.references(self.name):
            for chain in tx.chains():
                _delete_jumps(tx, chain, self.name)
        tx.delete_chain(self.name)
        return True

    # ------------------------------------------------------------------ check

    def check(self, tx: Tx) -> list[str]:
        """Problems with the chain, its body and its jumps; empty when all is as wanted."""
        self._check_table(tx)
        if not tx.has_chain(self.name):
            return [f"chain {self.name} not found in table {self.table}"]
        problems = self._body_problems(tx)
        for chain in self.entry_chains:
            problems += self._jump_problems(tx, chain)
        return problems

    def _body_problems(self, tx: Tx) -> list[str]:
        current = tx.chain_rules(self.name)
        texts = tx.rules_text(self.name)
        unexpected = list(zip(current, texts))
        problems = []
        for rule in self.body:
            found = next((pair for pair in unexpected if pair[0] == rule), None)
            if found is None:
                problems.append(f"rule [{render(rule)}] missing from chain {self.name}")
            else:
                unexpected.remove(found)
        if self.exclusive:
            problems += [f"unexpected rule [{text}] in chain {self.name}" for _, text in unexpected]
            if not problems and current != list(self.body):
                problems.append(f"rules of chain {self.name} are out of order")
        return problems

    def _jump_problems(self, tx: Tx, chain: str) -> list[str]:
        if not tx.has_chain(chain):
            return [f"chain {chain} not found in table {self.table}"]
        wanted = self.jump_rules(chain)
        if len(set(wanted)) == len(wanted) and all(tx.has_rule(rule) for rule in wanted):
            # libiptc compares in C: no walk of the entry chain (which may hold a jump for
            # every container on the node) and nothing decoded when all is well.
            return []
        present = list(tx.rules_numbered(chain, tx.find_jumps(chain, self.name)).values())
        problems = []
        for rule in self.jump_rules(chain):
            if rule in present:
                present.remove(rule)
            else:
                problems.append(f"jump [{render(rule)}] missing from chain {chain}")
        return problems

    def _check_table(self, tx: Tx) -> None:
        if tx.table != self.table:
            raise ChainsError(f"chain {self.name} lives in table {self.table}, not {tx.table}")


class SharedChain(OwnedChain):
    """A chain several owners use: ensure adds missing rules and jumps, removes nothing.

    ``body`` are the rules this user needs in it (appended if missing); rules others put
    there stay. Removal is explicit: :meth:`remove` when the caller knows nobody needs it,
    or :meth:`remove_if_unused`.
    """

    __slots__ = ()

    @property
    def exclusive(self) -> bool:
        return False

    # A shared chain can be long (CNI-HOSTPORT-DNAT holds every container's entry rules),
    # so its rules are looked up with libiptc's own comparison (iptables -C) instead of
    # being decoded.

    def _ensure_body(self, tx: Tx) -> bool:
        missing = [rule for rule in self.body if not tx.has_rule(rule)]
        for rule in missing:
            tx.append(rule)
        return bool(missing)

    def _body_problems(self, tx: Tx) -> list[str]:
        return [f"rule [{render(rule)}] missing from chain {self.name}"
                for rule in self.body if not tx.has_rule(rule)]

    def in_use(self, tx: Tx) -> bool:
        """Whether the chain holds rules other than ``body`` or is jumped to from anywhere
        other than this chain's own entry jumps."""
        if not tx.has_chain(self.name):
            return False
        own_rules = sum(1 for rule in set(self.body) if tx.has_rule(rule))
        if tx.rule_count(self.name) > own_rules:
            return True
        own_jumps = sum(len(tx.find_jumps(chain, self.name)) for chain in self.entry_chains)
        return tx.references(self.name) > own_jumps

    def remove_if_unused(self, tx: Tx) -> bool:
        """Remove the chain (and its jumps) unless :meth:`in_use`; True if removed."""
        if self.in_use(tx):
            return False
        return self.remove(tx)


def _delete_jumps(tx: Tx, chain: str, target: str) -> None:
    for number in reversed(tx.find_jumps(chain, target)):
        tx.delete_rule_at(chain, number)


def ensure_all(tx: Tx, chains: Iterable[OwnedChain]) -> bool:
    """Ensure several chains in order (e.g. shared ones before the owned ones that jump
    from them); True if anything changed."""
    changed = False
    for chain in chains:
        changed |= chain.ensure(tx)
    return changed
