"""ipMasq on nftables: the reference's ``inet cni_plugins_masquerade`` table, containers as set elements.

::

    table inet cni_plugins_masquerade {
        set masq_ipv4 { type ipv4_addr }                        containers with ipMasq
        set masq_ipv6 { type ipv6_addr }
        set local_ipv4_16 { type ipv4_addr . ipv4_addr }        (container . its subnet), per prefix length
        chain postrouting { type nat hook postrouting priority srcnat;
                            ip daddr 224.0.0.0/4 return; ip6 daddr ff00::/8 return
                            jump local_checks; goto masq_checks }
        chain local_checks { ip saddr . ip daddr & 255.255.0.0 @local_ipv4_16 accept }
        chain masq_checks { ip saddr @masq_ipv4 masquerade; ip6 saddr @masq_ipv6 masquerade }
    }

A container's traffic to its own subnet stays as it is (``accept`` ends this table's NAT for it);
everything else it sends is masqueraded. ADD, CHECK and DEL add, look up and remove the container's
elements by key: no chain per container (the kernel re-validates a table's jumps on every change that
adds one, at a cost that grows with them), no interval set (each change of one rebuilds it), nothing
listed. The table goes with its last container, in the same transaction: whether other containers
are left is read from the first answer of a dump of the sets, whatever their size. Addresses are
unique among live containers, so an element already there is kept as it is.
"""
from __future__ import annotations

import ipaddress

from chains.nft import expr as e
from chains.nft import wire as w
from chains.nft.prefixsets import PrefixPairSets
from chains.nft.tx import Chain, Map, Table, transaction

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from chains.nft.tx import Tx

    Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface

TABLE = Table(w.NFPROTO_INET, "cni_plugins_masquerade", "pycni ipMasq")
ADDRESS_TYPE = {4: w.TYPE_IPADDR, 6: w.TYPE_IP6ADDR}
MASQ = {f: Map(TABLE, f"masq_ipv{f}", (ADDRESS_TYPE[f],), verdicts=False) for f in (4, 6)}
LOCAL = {f: PrefixPairSets(TABLE, f, "local_checks", f"local_ipv{f}", masked="daddr", exact="saddr",
                           verdict=e.accept(), masked_first=False) for f in (4, 6)}
POSTROUTING = Chain(TABLE, "postrouting", (w.HOOK_POSTROUTING, w.PRIORITY_SRCNAT, "nat"))
LOCAL_CHECKS = Chain(TABLE, "local_checks")
MASQ_CHECKS = Chain(TABLE, "masq_checks")
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}


def _fixed_rules() -> list[e.NftRule]:
    rules = [e.NftRule("postrouting", [e.address(f, "daddr", MULTICAST[f], inet_table=True), e.return_()])
             for f in (4, 6)]
    rules += [e.NftRule("postrouting", [e.jump("local_checks")]), e.NftRule("postrouting", [e.goto("masq_checks")])]
    rules += [e.NftRule("masq_checks", [e.lookup((e.address_field(f, "saddr", True),), MASQ[f].name), e.masquerade()])
              for f in (4, 6)]
    return rules


def _create_table(tx: Tx) -> None:
    tx.add_table(TABLE)
    for map_ in MASQ.values():
        tx.add_map(map_)
    for chain in (LOCAL_CHECKS, MASQ_CHECKS, POSTROUTING):
        tx.add_chain(chain)
    for rule in _fixed_rules():
        tx.add_rule(TABLE, rule)


def _addresses(ips: list[Any]) -> list[Address]:
    return [ipaddress.ip_interface(ip["address"] if isinstance(ip, dict) else ip) for ip in ips]


def setup(network: str, container_id: str, ips: list[Any]) -> None:
    def stage(tx: Tx) -> None:
        fresh = not tx.ours(TABLE)
        if fresh:
            _create_table(tx)
        for address in _addresses(ips):
            family = address.version
            if fresh or tx.element(MASQ[family], address.ip.packed) is None:
                tx.add_element(MASQ[family], address.ip.packed, str(address.ip))
            LOCAL[family].add(tx, str(address.network), str(address.ip), fresh=fresh)

    transaction(stage)


def teardown(network: str, container_id: str, families: tuple[int, ...] = (4, 6),
             addresses: list[str] | None = None) -> None:
    """Remove the elements of the container's ``addresses`` (from its record); the table with the last."""

    def stage(tx: Tx) -> None:
        comment = tx.table_comment(TABLE)
        if comment != TABLE.comment:
            return
        found = False
        for address in _addresses(addresses or []):
            family = address.version
            if tx.element(MASQ[family], address.ip.packed) is not None:
                tx.delete_element(MASQ[family], address.ip.packed, str(address.ip))
                found = True
            found |= LOCAL[family].remove(tx, str(address.network), str(address.ip))
        if found and not any(tx.holds_more_than(MASQ[f], tx.elements_deleted.get(MASQ[f].name, 0)) for f in (4, 6)):
            tx.delete_table(TABLE)  # the last container with ipMasq: the table goes with it

    transaction(stage)


def check(network: str, container_id: str, ips: list[Any]) -> list[str]:
    def inspect(tx: Tx) -> list[str]:
        if not tx.ours(TABLE):
            return [f"{TABLE} not found"]
        problems = [f"chain {chain.name} not found in {TABLE}" for chain in (POSTROUTING, LOCAL_CHECKS, MASQ_CHECKS)
                    if not tx.has_chain(chain)]
        for address in _addresses(ips):
            family = address.version
            if tx.element(MASQ[family], address.ip.packed) is None:
                problems.append(f"element {{ {address.ip} }} missing from set {MASQ[family].name}")
            if not LOCAL[family].present(tx, str(address.network), str(address.ip)):
                problems.append(f"pair {{ {address.ip} . {address.network} }} missing from the local_ipv{family} sets")
        return problems

    return transaction(inspect, read_only=True)
