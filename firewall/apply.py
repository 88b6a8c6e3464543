"""The firewall's changes to one family's filter table, staged inside one chains transaction.

ADD, DEL and GC each make one :func:`chains.table.apply` call per family: one read and one commit
under the xtables lock, so a failure leaves no partial rules. Everything that decides whether a
shared piece is still needed is read from the table (or from the other attachments' records) inside
that transaction, under the lock:

- ``CNI-FORWARD``, its jump from ``FORWARD`` and the isolation chains go in the commit that leaves
  ``CNI-FORWARD`` holding nothing but jumps to admin chains (unless an administrator's own rule
  jumps into it);
- an admin chain belongs to the administrator: it is never flushed, and deleted only when it is empty
  and nothing jumps to it any more;
- a bridge's isolation rules go when no other attachment's record names that bridge and policy, and
  the isolation chains when they hold nothing but their RETURN rules;
- a container rule is per address and carries no owner, so an address another record claims (an
  address handed out again after a DEL that never finished) is left alone.
"""
from __future__ import annotations

from firewall import rules

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from chains.rule import Rule
    from chains.table import Tx
    from firewall.ownership import Holdings

# CNI-FORWARD is decoded to see whether only admin jumps are left in it; a chain longer than this
# holds container rules for sure (nobody configures this many admin chains).
MAX_ADMIN_JUMPS = 16


def build_rules(admin: str, want: Holdings) -> None:
    """Build every rule ``want`` needs once, before anything is written: a value the model rejects
    (an interface name iptables cannot take) raises ValueError here."""
    rules.forward_jump()
    rules.admin_jump(admin)
    for address in want.addresses:
        rules.container_rules(address)
    for bridge, policy in want.pairs:
        rules.isolation_rules(bridge, policy)


# --------------------------------------------------------------------------- one transaction

def stage(tx: Tx, drop: Holdings, keep: Callable[[], Holdings], want: Holdings | None = None,
          admin: str | None = None) -> None:
    """Remove ``drop``'s rules that ``keep()`` does not claim, then put ``want``'s in place, or, when
    nothing is wanted in this family, remove the shared chains nobody needs any more.

    ``keep`` is only called when there is something to drop (it may read every record).
    """
    if drop:
        _remove_owned(tx, drop, keep())
    if want is not None and want.addresses:
        _ensure_forward(tx, admin or rules.DEFAULT_ADMIN_CHAIN)
        for bridge, policy in want.pairs:
            _ensure_isolation(tx, bridge, policy)
        for address in want.addresses:
            for rule in rules.container_rules(address):
                _append_unique(tx, rule)
        if drop.pairs and not want.pairs:  # a re-ADD that stopped isolating may have emptied them
            _remove_isolation(tx, sweep=False)
    else:
        remove_unused_shared(tx)


def _remove_owned(tx: Tx, drop: Holdings, kept: Holdings) -> None:
    claimed = set(kept.addresses)
    for address in drop.addresses:
        if address not in claimed:
            for rule in rules.container_rules(address):
                _delete_all(tx, rule)
    if not kept.complete:
        return
    kept_bridges = {bridge for bridge, _ in kept.pairs}
    for bridge, policy in drop.pairs:
        if (bridge, policy) not in kept.pairs:
            for rule in rules.stage1_rules(bridge, policy):
                _delete_all(tx, rule)
        if bridge not in kept_bridges:
            _delete_all(tx, rules.stage2_drop(bridge))


def _delete_all(tx: Tx, rule: Rule) -> None:
    while tx.delete_rule(rule):  # duplicates too, should anything have made them
        pass


def _append_unique(tx: Tx, rule: Rule) -> None:
    if not tx.has_rule(rule):
        tx.append(rule)


def _insert_unique(tx: Tx, rule: Rule, position: int = 1) -> None:
    if not tx.has_rule(rule):
        tx.insert(rule, position)


def _ensure_forward(tx: Tx, admin: str) -> None:
    tx.ensure_chain(rules.FORWARD_CHAIN)
    tx.ensure_chain(admin)
    # First in FORWARD, but behind the isolation jump: CNI-FORWARD accepts, isolation has to drop first.
    stage1_jumps = tx.find_jumps(rules.FORWARD, rules.STAGE1)
    _insert_unique(tx, rules.forward_jump(), max(stage1_jumps) + 1 if stage1_jumps else 1)
    _insert_unique(tx, rules.admin_jump(admin))


def _ensure_isolation(tx: Tx, bridge: str, policy: str) -> None:
    tx.ensure_chain(rules.STAGE1)
    tx.ensure_chain(rules.STAGE2)
    _insert_unique(tx, rules.stage1_jump())
    for rule in reversed(rules.stage1_rules(bridge, policy)):  # each one inserted at the top
        _insert_unique(tx, rule)
    stage1_return, stage2_return = rules.stage_returns()
    _append_unique(tx, stage1_return)
    _insert_unique(tx, rules.stage2_drop(bridge))
    _append_unique(tx, stage2_return)


# --------------------------------------------------------------------------- shared chains

def remove_unused_shared(tx: Tx) -> None:
    """Remove what no container in this table needs any more, judged from the table itself."""
    admin_chains = _admin_chains_if_unused(tx)
    if admin_chains is None:  # containers left: only the isolation chains may have emptied
        _remove_isolation(tx, sweep=False)
        return
    _remove_isolation(tx, sweep=True)  # no container in this family: no bridge needs isolating
    if tx.has_chain(rules.FORWARD_CHAIN):
        _delete_all(tx, rules.forward_jump())
        if tx.references(rules.FORWARD_CHAIN):
            return  # an administrator's own jump into it: the chain and its admin jumps stay
        tx.delete_chain(rules.FORWARD_CHAIN)  # flushes the admin jumps with it
    for admin in admin_chains:  # the administrator's: only when nothing is left in or pointing at it
        if tx.has_chain(admin) and tx.rule_count(admin) == 0 and tx.references(admin) == 0:
            tx.delete_chain(admin)


def _admin_chains_if_unused(tx: Tx) -> list[str] | None:
    """The admin chains CNI-FORWARD jumps to when that is all it does; None while it holds anything else."""
    if not tx.has_chain(rules.FORWARD_CHAIN):
        return []
    if tx.rule_count(rules.FORWARD_CHAIN) > MAX_ADMIN_JUMPS:
        return None
    present = tx.chain_rules(rules.FORWARD_CHAIN)
    if not all(rules.is_admin_jump(rule) for rule in present):
        return None
    return [rule.target.name for rule in present]


def _remove_isolation(tx: Tx, sweep: bool) -> None:
    """Remove the isolation chains once they hold only their RETURN rules; with ``sweep``, first remove
    every bridge rule of ours from them (no container of this family is left to need one)."""
    chains = [chain for chain in (rules.STAGE1, rules.STAGE2) if tx.has_chain(chain)]
    if not chains:
        return
    if sweep:
        for chain in chains:
            own = [number for number, rule in enumerate(tx.chain_rules(chain), start=1)
                   if rules.is_own_isolation_rule(rule) and not rules.is_stage_return(rule)]
            for number in reversed(own):
                tx.delete_rule_at(chain, number)
    if not all(_holds_only_returns(tx, chain) for chain in chains):
        return
    _delete_all(tx, rules.stage1_jump())
    for chain in chains:  # stage 1 first: an administrator's jump elsewhere keeps a chain
        if tx.references(chain) == 0:
            tx.delete_chain(chain)


def _holds_only_returns(tx: Tx, chain: str) -> bool:
    if tx.rule_count(chain) > 2:
        return False
    return all(rules.is_stage_return(rule) for rule in tx.chain_rules(chain))


# --------------------------------------------------------------------------- CHECK

def problems(tx: Tx, admin: str, want: Holdings) -> list[str]:
    """What is missing for ``want`` in this table, in the reference's words; empty when all is there."""
    found = []
    forward_jump = rules.forward_jump()
    if not tx.has_rule(forward_jump):
        found.append(f"expected {rules.FORWARD} rule {rules.args_text(forward_jump)} not found")
    admin_jump = rules.admin_jump(admin)
    if not tx.has_rule(admin_jump):
        found.append(f"expected {rules.FORWARD_CHAIN} rule {rules.args_text(admin_jump)} not found")
    for address in want.addresses:
        found += [f"expected rule {rules.args_text(rule)} not found"
                  for rule in rules.container_rules(address) if not tx.has_rule(rule)]
    for bridge, policy in want.pairs:
        found += [f"expected {rule.chain} rule {rules.args_text(rule)} not found"
                  for rule in rules.isolation_rules(bridge, policy) if not tx.has_rule(rule)]
    if want.pairs:
        found += _isolation_order_problems(tx)
    return found


def _isolation_order_problems(tx: Tx) -> list[str]:
    stage1 = tx.find_jumps(rules.FORWARD, rules.STAGE1)
    forward = tx.find_jumps(rules.FORWARD, rules.FORWARD_CHAIN)
    if stage1 and forward and min(stage1) > min(forward):
        return [f"the jump to {rules.STAGE1} comes after the jump to {rules.FORWARD_CHAIN} in {rules.FORWARD}"]
    return []


# --------------------------------------------------------------------------- the backend's interface

def commit(family: int, drop: Holdings, keep_for: Callable[[int], Holdings], want: Holdings | None = None,
           admin: str | None = None) -> list[str]:
    """One transaction on the family's filter table (see :func:`stage`)."""
    from chains import table  # noqa: PLC0415

    def keep() -> Holdings:  # read under the table lock: see ownership.claims
        others = keep_for(family)
        return others | want if want is not None else others

    table.apply(family, "filter", lambda tx: stage(tx, drop, keep, want, admin))
    return []


def check(family: int, admin: str, want: Holdings) -> list[str]:
    from chains import table  # noqa: PLC0415

    return table.read(family, "filter", lambda tx: problems(tx, admin, want))


def status() -> None:
    import os  # noqa: PLC0415

    from chains import table  # noqa: PLC0415

    for family in (4, 6) if os.path.isdir("/proc/sys/net/ipv6") else (4,):
        table.read(family, "filter", lambda tx: tx.has_chain("FORWARD"))
