"""The firewall on nftables: one ``inet`` table of ours, containers as set elements.

::

    table inet cni_firewall {
        set containers_ipv4 { type ipv4_addr }            every container address the plugin lets through
        set containers_ipv6 { type ipv6_addr }
        set isolating_bridges { type ifname }              bridges with ingressPolicy same-bridge or isolated
        map isolation { type ifname : verdict }            such a bridge -> its isolation chain
        chain forward { type filter hook forward priority filter; policy accept;
            iifname vmap @isolation
            jump CNI-ADMIN                                 the administrator's chain (never flushed)
            ip daddr @containers_ipv4 ct state established,related accept
            ip saddr @containers_ipv4 accept
            ip6 daddr @containers_ipv6 ct state established,related accept
            ip6 saddr @containers_ipv6 accept }
        chain isolation-cni0 { oifname "cni0" return; oifname @isolating_bridges drop }   same-bridge
        chain isolation-br1  { oifname "br1" drop; oifname @isolating_bridges drop }      isolated
    }

An ``accept`` ends the packet's walk through *this* table only: nftables runs every table's forward
chain, so a drop policy of another table (iptables-nft's ``filter``, firewalld's) still applies, as
it does to any nftables program. The isolation drops hold whatever other tables do.

Which addresses and bridges stay is decided as on iptables, from the other attachments' records
(``keep``): an address or bridge another record holds is never removed. The table goes with the last
holder, unless the administrator's chain holds rules.
"""
from __future__ import annotations

from chains.nft import expr as e
from chains.nft import wire as w
from chains.nft.tx import Chain, Map, Table, transaction
from firewall.rules import DEFAULT_ADMIN_CHAIN, ISOLATED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from chains.nft.tx import Tx
    from firewall.ownership import Holdings

TABLE = Table(w.NFPROTO_INET, "cni_firewall", "pycni firewall plugin")
FORWARD = Chain(TABLE, "forward", (w.HOOK_FORWARD, w.PRIORITY_FILTER, "filter"))
CONTAINERS = {4: Map(TABLE, "containers_ipv4", (w.TYPE_IPADDR,), verdicts=False),
              6: Map(TABLE, "containers_ipv6", (w.TYPE_IP6ADDR,), verdicts=False)}
ISOLATING = Map(TABLE, "isolating_bridges", (w.TYPE_IFNAME,), verdicts=False)
ISOLATION = Map(TABLE, "isolation", (w.TYPE_IFNAME,))
FIXED_MAPS = (CONTAINERS[4], CONTAINERS[6], ISOLATING, ISOLATION)


def _address_key(address: str) -> bytes:
    return e.address_bytes(address.split("/")[0])


def isolation_chain(bridge: str) -> Chain:
    return Chain(TABLE, f"isolation-{bridge}")


def isolation_rules(bridge: str, policies: set[str]) -> list[e.NftRule]:
    """Within the bridge: through (same-bridge) or dropped (isolated); to any other isolating bridge: dropped."""
    own = e.drop() if ISOLATED in policies else e.return_()
    chain = isolation_chain(bridge).name
    return [e.NftRule(chain, [e.interface("oif", bridge), own]),
            e.NftRule(chain, [e.lookup((e.interface_field("oif"),), ISOLATING.name), e.drop()])]


def forward_rules(admin: str) -> list[e.NftRule]:
    rules = [e.NftRule("forward", [e.lookup((e.interface_field("iif"),), ISOLATION.name, verdict_map=True)]),
             e.NftRule("forward", [e.jump(admin)])]
    for family in (4, 6):
        set_name = CONTAINERS[family].name
        rules.append(e.NftRule("forward", [e.lookup((e.address_field(family, "daddr", True),), set_name),
                                           e.ct_state("established", "related"), e.accept()]))
        rules.append(e.NftRule("forward", [e.lookup((e.address_field(family, "saddr", True),), set_name),
                                           e.accept()]))
    return rules


def build_rules(admin: str, want: Holdings) -> None:
    """Build what ``want`` needs once, before anything is written (ValueError on a value nft cannot take)."""
    for address in want.addresses:
        _address_key(address)
    for bridge, policy in want.pairs:
        e.ifname_bytes(bridge)
        isolation_rules(bridge, {policy})


def _create(tx: Tx, admin: str) -> None:
    tx.add_table(TABLE)
    for map_ in FIXED_MAPS:
        tx.add_map(map_)
    tx.add_chain(Chain(TABLE, admin))
    tx.add_chain(FORWARD)
    for rule in forward_rules(admin):
        tx.add_rule(TABLE, rule)


def commit(family: int, drop: Holdings, keep_for: Callable[[int], Holdings], want: Holdings | None = None,
           admin: str | None = None) -> list[str]:
    """One transaction: remove ``drop``'s addresses and bridges that no one else holds, add ``want``'s,
    and remove the table when nobody holds anything any more."""

    def stage(tx: Tx) -> list[str]:
        comment = tx.table_comment(TABLE)
        if comment is not None and comment != TABLE.comment:
            if want is None or not want:
                return []  # nothing of ours can be in a table that is not ours
            tx.ours(TABLE)  # raises: a table of that name that is not ours
        if comment is None:
            if want is None or not want:
                return []
            _create(tx, admin or DEFAULT_ADMIN_CHAIN)
        elif want is not None and want and admin and not tx.has_chain(Chain(TABLE, admin)):
            tx.add_chain(Chain(TABLE, admin))
            tx.add_rule(TABLE, e.NftRule("forward", [e.jump(admin)]))
        fresh = comment is None
        kept = keep_for(family)
        held = kept | want if want is not None else kept
        removed = 0
        for address in drop.addresses:
            if address not in held.addresses and not fresh and tx.element(CONTAINERS[family], _address_key(address)):
                tx.delete_element(CONTAINERS[family], _address_key(address), address)
                removed += 1
        for address in (want.addresses if want is not None else []):
            if fresh or not tx.element(CONTAINERS[family], _address_key(address)):
                tx.add_element(CONTAINERS[family], _address_key(address), address)
        _isolation(tx, drop, held, fresh)
        if want is None or not want:
            _remove_if_unused(tx, family, removed)
        return tx.log

    return transaction(stage)


def _isolation(tx: Tx, drop: Holdings, held: Holdings, fresh: bool) -> None:
    """Each bridge that anyone holds gets its chain rewritten for the policies held; a bridge nobody
    holds any more loses its chain and elements (only when every record could be read)."""
    bridges = dict.fromkeys([b for b, _ in drop.pairs] + [b for b, _ in held.pairs])
    for bridge in bridges:
        policies = {p for b, p in held.pairs if b == bridge}
        chain, key = isolation_chain(bridge), e.ifname_bytes(bridge)
        exists = not fresh and tx.has_chain(chain)
        if not policies:
            if exists and held.complete:
                tx.delete_element(ISOLATION, key, bridge)
                tx.delete_element(ISOLATING, key, bridge)
                tx.delete_chain(chain)
            continue
        wanted = isolation_rules(bridge, policies)
        if exists:
            present = tx.rules(chain)
            if len(present) == len(wanted) and all(k.is_(r) for k, r in zip(present, wanted)):
                continue
            tx.flush_chain(chain)
        else:
            tx.add_chain(chain)
            tx.add_element(ISOLATING, key, bridge)
            tx.add_element(ISOLATION, key, bridge, (w.NFT_GOTO, chain.name))
        for rule in wanted:
            tx.add_rule(TABLE, rule)


def _remove_if_unused(tx: Tx, family: int, removed: int) -> None:
    """When no container address is left in either set (but those this transaction takes out), no
    bridge needs isolating any more either: the table goes, or, when the administrator's chain holds
    rules, its isolation chains and elements.

    Decided from the table, as on iptables (where CNI-FORWARD and the isolation chains go when no
    container rule is left in them), not from the other attachments' records: a DEL's record outlives
    its elements, so the last two DELs running at once would each see the other's record and both
    keep what neither needs. An ADD whose record is written but whose elements are not in yet makes
    the table again in its own transaction.
    """
    if tx.table_comment(TABLE) is None:
        return
    other = 6 if family == 4 else 4
    if tx.holds_more_than(CONTAINERS[family], removed) or tx.holds_more_than(CONTAINERS[other], 0):
        return
    # Whatever is left besides the fixed objects: the admin chain(s), chains of bridges being removed.
    for name in _admin_chains(tx):
        if tx.rules(Chain(TABLE, name)):
            _sweep_isolation(tx)  # the administrator's rules keep the table
            return
    tx.delete_table(TABLE)


def _sweep_isolation(tx: Tx) -> None:
    for key, target in tx.map_elements(ISOLATION):
        chain = Chain(TABLE, target[1] if isinstance(target, tuple) and target[1] else "")
        if not chain.name or tx.deleting(chain):
            continue  # already going in this transaction
        shown = key.rstrip(b"\0").decode(errors="replace")
        tx.delete_element(ISOLATION, key, shown)
        tx.delete_element(ISOLATING, key, shown)
        tx.delete_chain(chain)


def _admin_chains(tx: Tx) -> list[str]:
    return [rule.verdict_chain() or "" for rule in tx.rules(FORWARD)
            if rule.verdict_chain() and not (rule.verdict_chain() or "").startswith("isolation-")]


def check(family: int, admin: str, want: Holdings) -> list[str]:
    def inspect(tx: Tx) -> list[str]:
        if not tx.ours(TABLE):
            return [f"{TABLE} not found"]
        problems = []
        present = tx.rules(FORWARD) if tx.has_chain(FORWARD) else []
        for rule in forward_rules(admin):
            if not any(k.is_(rule) for k in present):
                problems.append(f"expected rule [{rule.text}] not found in chain forward")
        for address in want.addresses:
            if not tx.element(CONTAINERS[family], _address_key(address)):
                problems.append(f"expected element {address} not found in set {CONTAINERS[family].name}")
        for bridge, policy in want.pairs:
            chain = isolation_chain(bridge)
            if tx.element(ISOLATION, e.ifname_bytes(bridge)) != (w.NFT_GOTO, chain.name):
                problems.append(f"expected element {bridge} not found in map {ISOLATION.name}")
            # Another attachment isolating the same bridge makes its chain stricter; that is right too.
            acceptable = [isolation_rules(bridge, {policy}), isolation_rules(bridge, {policy, ISOLATED})]
            rules = tx.rules(chain)
            if not any(len(rules) == len(wanted) and all(k.is_(r) for k, r in zip(rules, wanted))
                       for wanted in acceptable):
                texts = "; ".join(r.text for r in acceptable[0])
                problems.append(f"expected rules [{texts}] not found in chain {chain.name}")
        return problems

    return transaction(inspect, read_only=True)


def status() -> None:
    transaction(lambda tx: tx.table_comment(TABLE), read_only=True)
