"""ipMasq on nftables: the reference's ``inet cni_plugins_masquerade`` table, one chain per container.

::

    table inet cni_plugins_masquerade {
        map masq_ipv4 { type ipv4_addr : verdict }        container address -> its chain
        map masq_ipv6 { type ipv6_addr : verdict }
        chain postrouting { type nat hook postrouting priority srcnat;
                            ip daddr 224.0.0.0/4 return; ip6 daddr ff00::/8 return; goto masq_checks }
        chain masq_checks { ip saddr vmap @masq_ipv4; ip6 saddr vmap @masq_ipv6 }
        chain masq-<hash> { ip daddr 10.88.0.0/16 return; masquerade }      per container
    }

ADD, CHECK and DEL address the container's chain by name and its addresses by key; the table goes
with its last container, in the same transaction. An address found mapped to another container's
chain belonged to a container that is gone (addresses are unique among live ones): the new owner
takes it.
"""
from __future__ import annotations

import ipaddress

from chains.nft import expr as e
from chains.nft import wire as w
from chains.nft.tx import Chain, Map, Table, transaction

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from chains.nft.tx import Tx

TABLE = Table(w.NFPROTO_INET, "cni_plugins_masquerade", "pycni ipMasq")
MAPS = {4: Map(TABLE, "masq_ipv4", (w.TYPE_IPADDR,)), 6: Map(TABLE, "masq_ipv6", (w.TYPE_IP6ADDR,))}
POSTROUTING = Chain(TABLE, "postrouting", (w.HOOK_POSTROUTING, w.PRIORITY_SRCNAT, "nat"))
MASQ_CHECKS = Chain(TABLE, "masq_checks")
FIXED_OBJECTS = len(MAPS) + 2
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}


def chain_of(network: str, container_id: str) -> Chain:
    from bridge.ipmasq_iptables import chain_name  # noqa: PLC0415 - the same hash as the iptables chain

    return Chain(TABLE, "masq-" + chain_name(network, container_id)[len("CNI-"):])


def _fixed_rules() -> list[e.NftRule]:
    return [
        e.NftRule("postrouting", [e.address(4, "daddr", MULTICAST[4], inet_table=True), e.return_()]),
        e.NftRule("postrouting", [e.address(6, "daddr", MULTICAST[6], inet_table=True), e.return_()]),
        e.NftRule("postrouting", [e.goto("masq_checks")]),
        e.NftRule("masq_checks", [e.lookup((e.address_field(4, "saddr", True),), "masq_ipv4", True)]),
        e.NftRule("masq_checks", [e.lookup((e.address_field(6, "saddr", True),), "masq_ipv6", True)]),
    ]


def _create_table(tx: Tx) -> None:
    tx.add_table(TABLE)
    for map_ in MAPS.values():
        tx.add_map(map_)
    tx.add_chain(MASQ_CHECKS)
    tx.add_chain(POSTROUTING)
    for rule in _fixed_rules():
        tx.add_rule(TABLE, rule)


def _addresses(ips: list[Any]) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    return [ipaddress.ip_interface(ip["address"] if isinstance(ip, dict) else ip) for ip in ips]


def container_rules(chain: Chain, ips: list[Any]) -> list[e.NftRule]:
    """Traffic to the container's own subnets stays as it is; everything else is masqueraded."""
    rules = [e.NftRule(chain.name, [e.address(a.version, "daddr", str(a.network), inet_table=True), e.return_()])
             for a in _addresses(ips)]
    return rules + [e.NftRule(chain.name, [e.masquerade()])]


def setup(network: str, container_id: str, ips: list[Any]) -> None:
    chain = chain_of(network, container_id)

    def stage(tx: Tx) -> None:
        fresh = not tx.ours(TABLE)
        if fresh:
            _create_table(tx)
        if not fresh and tx.has_chain(chain):
            tx.flush_chain(chain)
        else:
            tx.add_chain(chain)
        for rule in container_rules(chain, ips):
            tx.add_rule(TABLE, rule)
        for addr in _addresses(ips):
            map_, key = MAPS[addr.version], addr.ip.packed
            current = None if fresh else tx.element(map_, key)
            if current == (w.NFT_GOTO, chain.name):
                continue
            if current is not None:
                tx.delete_element(map_, key, str(addr.ip))
            tx.add_element(map_, key, str(addr.ip), (w.NFT_GOTO, chain.name))

    transaction(stage)


def teardown(network: str, container_id: str, families: tuple[int, ...] = (4, 6),
             addresses: list[str] | None = None) -> None:
    """Remove the container's chain and its addresses' elements (``addresses`` from the record; without
    them, elements still leading to the chain are found by listing the maps: recovery only)."""
    chain = chain_of(network, container_id)

    def stage(tx: Tx) -> None:
        info = tx.table_info(TABLE)
        if info is None or info.comment != TABLE.comment:
            return
        references = tx.references(chain)
        if references is None:
            return
        released = 0
        for addr in _addresses(addresses or []):
            map_, key = MAPS[addr.version], addr.ip.packed
            if tx.element(map_, key) == (w.NFT_GOTO, chain.name):
                tx.delete_element(map_, key, str(addr.ip))
                released += 1
        if references > released:
            for map_ in MAPS.values():
                for key, target in tx.map_elements(map_):
                    if target == (w.NFT_GOTO, chain.name) and not (addresses and _is_released(key, addresses)):
                        tx.delete_element(map_, key, chain.name)
        tx.delete_chain(chain)
        if info.use - tx.chains_deleted <= FIXED_OBJECTS:
            tx.delete_table(TABLE)

    transaction(stage)


def _is_released(key: bytes, addresses: list[str]) -> bool:
    return any(ipaddress.ip_interface(a).ip.packed == key for a in addresses)


def check(network: str, container_id: str, ips: list[Any]) -> list[str]:
    chain = chain_of(network, container_id)

    def inspect(tx: Tx) -> list[str]:
        if not tx.ours(TABLE):
            return [f"{TABLE} not found"]
        if not tx.has_chain(chain):
            return [f"chain {chain.name} not found in {TABLE}"]
        problems = []
        present = tx.rules(chain)
        wanted = container_rules(chain, ips)
        if len(present) != len(wanted) or not all(k.is_(r) for k, r in zip(present, wanted)):
            problems.append(f"rules of chain {chain.name} differ from [{'; '.join(r.text for r in wanted)}]")
        for addr in _addresses(ips):
            if tx.element(MAPS[addr.version], addr.ip.packed) != (w.NFT_GOTO, chain.name):
                problems.append(f"element {{ {addr.ip} : goto {chain.name} }} missing from map {MAPS[addr.version].name}")
        return problems

    return transaction(inspect, read_only=True)
