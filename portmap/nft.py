"""portmap on nftables: the reference's tables and chain names, with every rule found by name or key.

One table per family, ``ip cni_hostport`` / ``ip6 cni_hostport`` (ours: marked by its comment; a
table of that name made by another program is never changed)::

    map hostip_hostports { type ipv4_addr . inet_proto . inet_service : verdict }   hostIP mappings
    map hostports        { type inet_proto . inet_service : verdict }               all other mappings
    set hairpins_16      { type ipv4_addr . ipv4_addr }  (source network . container), one set per prefix length
    chain prerouting     { type nat hook prerouting priority dstnat; fib daddr type local jump hostports_all }
    chain output         { type nat hook output priority -100;       fib daddr type local jump hostports_all }
    chain hostports_all  { jump hostip_hostports; jump hostports }
    chain hostip_hostports { ip daddr . meta l4proto . th dport vmap @hostip_hostports }
    chain hostports      { meta l4proto . th dport vmap @hostports }
    chain masquerading   { type nat hook postrouting priority srcnat;
                           ct status dnat ip saddr & 255.255.0.0 . ip daddr @hairpins_16 masquerade
                           ct status dnat ip saddr . ip daddr @hairpins_32 masquerade }

and per host port and per container::

    chain hostport-tcp-8080 { jump dn-<hash of network+ID>; jump dn-<another claimant> }   claim order
    chain dn-<hash>         { tcp dport 8080 dnat ip to 10.88.0.5:80 }                     the container's DNATs

and per container the hairpin pairs ``10.88.0.0 . 10.88.0.5`` (in ``hairpins_16``) and ``127.0.0.1 .
10.88.0.5`` (in ``hairpins_32``): what reaches the container through a host port from its own subnet
or the node's 127.0.0.1 is masqueraded, so the replies come back the same way
(:mod:`chains.nft.prefixsets`).

A host port's element leads to its own chain, which jumps to its claimants in the order they came:
the first claimant keeps the traffic (as with iptables), and when it leaves, the next one's jump is
first by itself. ADD, CHECK and DEL touch only the container's own chain, its elements, and the
(short) chains of its ports; nothing lists the table. The hairpin sets hold no verdicts: the kernel
validates a table's graph of jumps on every change that adds one, so what can be data is data. The
table goes in the same transaction as its last container's chains: whether any host port is left is
read from the first answer of a dump of the two maps, whatever their size.
"""
from __future__ import annotations

from chains.nft import expr as e
from chains.nft import wire as w
from chains.nft.prefixsets import PrefixPairSets
from chains.nft.tx import Chain, Map, Table, transaction
from cni.errors import INVALID_CONFIG, CNIError
from portmap import names

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from chains.nft.tx import Tx
    from portmap.config import PortMapConf
    from portmap.rules import Address

TABLE_NAME = "cni_hostport"
TABLE_COMMENT = "pycni portmap plugin"
NFPROTO = {4: w.NFPROTO_IPV4, 6: w.NFPROTO_IPV6}
ADDRESS_TYPE = {4: w.TYPE_IPADDR, 6: w.TYPE_IP6ADDR}
LOCALHOST = {4: "127.0.0.1"}
ANY = {4: "0.0.0.0/0", 6: "::/0"}


class Layout:
    """The fixed objects of one family's table."""

    def __init__(self, family: int) -> None:
        self.family = family
        t = self.table = Table(NFPROTO[family], TABLE_NAME, TABLE_COMMENT)
        addr = ADDRESS_TYPE[family]
        self.hostip_map = Map(t, "hostip_hostports", (addr, w.TYPE_INET_PROTOCOL, w.TYPE_INET_SERVICE))
        self.port_map = Map(t, "hostports", (w.TYPE_INET_PROTOCOL, w.TYPE_INET_SERVICE))
        self.hairpins = PrefixPairSets(t, family, "masquerading", "hairpins", masked="saddr", exact="daddr",
                                       verdict=e.masquerade(), leading=(e.ct_status_dnat(),))
        self.prerouting = Chain(t, "prerouting", (w.HOOK_PREROUTING, w.PRIORITY_DSTNAT, "nat"))
        self.output = Chain(t, "output", (w.HOOK_OUTPUT, w.PRIORITY_DSTNAT, "nat"))
        self.hostports_all = Chain(t, "hostports_all")
        self.hostip_hostports = Chain(t, "hostip_hostports")
        self.hostports = Chain(t, "hostports")
        self.masquerading = Chain(t, "masquerading", (w.HOOK_POSTROUTING, w.PRIORITY_SRCNAT, "nat"))

    @property
    def maps(self) -> tuple[Map, ...]:
        return (self.hostip_map, self.port_map)

    @property
    def chains(self) -> tuple[Chain, ...]:
        return (self.hostports_all, self.hostip_hostports, self.hostports, self.prerouting, self.output,
                self.masquerading)

    def fixed_rules(self) -> list[e.NftRule]:
        daddr = e.address_field(self.family, "daddr")
        return [
            e.NftRule("hostports_all", [e.jump("hostip_hostports")]),
            e.NftRule("hostports_all", [e.jump("hostports")]),
            e.NftRule("hostip_hostports", [e.lookup((daddr, e.L4PROTO, e.TH_DPORT), "hostip_hostports", True)]),
            e.NftRule("hostports", [e.lookup((e.L4PROTO, e.TH_DPORT), "hostports", True)]),
            e.NftRule("prerouting", [e.fib_daddr_local(), e.jump("hostports_all")]),
            e.NftRule("output", [e.fib_daddr_local(), e.jump("hostports_all")]),
        ]

    def create(self, tx: Tx) -> None:
        tx.add_table(self.table)
        for map_ in self.maps:
            tx.add_map(map_)
        for chain in self.chains:
            tx.add_chain(chain)
        for rule in self.fixed_rules():
            tx.add_rule(self.table, rule)


# ---------------------------------------------------------------------- names and keys

def _hash(network: str, container_id: str) -> str:
    return names.container_hash(network, container_id)[:21]


def dnat_chain_name(network: str, container_id: str) -> str:
    return "dn-" + _hash(network, container_id)


class PortKey:
    """A host port as the maps key it: protocol, port and, for a hostIP mapping, the address."""

    __slots__ = ("host_ip", "protocol", "port")

    def __init__(self, host_ip: str, protocol: str, port: int) -> None:
        self.host_ip, self.protocol, self.port = host_ip, protocol, port

    @classmethod
    def parse(cls, text: str) -> PortKey:
        """From the record's ``[hostIP/]protocol/port``."""
        parts = text.split("/")
        host_ip = parts[0] if len(parts) == 3 else ""
        return cls(host_ip, parts[-2], int(parts[-1]))

    def __str__(self) -> str:
        return "/".join(([self.host_ip] if self.host_ip else []) + [self.protocol, str(self.port)])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortKey) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def chain_name(self) -> str:
        host = self.host_ip.replace(":", "-") + "-" if self.host_ip else ""
        return f"hostport-{host}{self.protocol}-{self.port}"

    def map_of(self, layout: Layout) -> Map:
        return layout.hostip_map if self.host_ip else layout.port_map

    def key(self) -> bytes:
        values = [bytes((e.protocol_number(self.protocol),)), e.port_bytes(self.port)]
        if self.host_ip:
            values.insert(0, e.address_bytes(self.host_ip))
        return e.key_bytes(values)

    def shown(self) -> str:
        return " . ".join(([self.host_ip] if self.host_ip else []) + [self.protocol, str(self.port)])


def port_keys(conf: PortMapConf, family: int) -> list[PortKey]:
    """The host ports the container's mappings claim in this family, in mapping order."""
    keys: list[PortKey] = []
    for mapping in conf.mappings:
        host_ip = mapping.host_ip_for(family)
        if host_ip is None:
            continue
        key = PortKey(host_ip, mapping.protocol, mapping.hostPort)
        if key not in keys:
            keys.append(key)
    return keys


# ---------------------------------------------------------------------- the container's rules

def dnat_rules(conf: PortMapConf, family: int, address: Address, chain: str) -> list[e.NftRule]:
    conditions = conditions_of(conf, family)
    rules = []
    for mapping in conf.mappings:
        host_ip = mapping.host_ip_for(family)
        if host_ip is None:
            continue
        stmts = [*conditions, e.dport(mapping.protocol, mapping.hostPort)]
        if host_ip:
            stmts.append(e.address(family, "daddr", host_ip))
        stmts.append(e.dnat(family, str(address.ip), mapping.containerPort))
        rules.append(e.NftRule(chain, stmts))
    return rules


def hairpins(conf: PortMapConf, family: int, address: Address) -> list[tuple[str, str]]:
    """Masquerade what reaches the container through a host port from its own subnet (itself, a
    neighbour on the bridge) or from the node's 127.0.0.1, so replies come back the same way."""
    if not conf.snat:
        return []
    if conf.masqAll:
        return [(ANY[family], str(address.ip))]
    sources = [str(address.network)] + ([LOCALHOST[family]] if family in LOCALHOST else [])
    return [(source, str(address.ip)) for source in sources]


def conditions_of(conf: PortMapConf, family: int) -> list[e.Stmt]:
    from chains.nft.conditions import parse  # noqa: PLC0415

    return parse(conf.conditions(family), family)


class Container:
    """Everything one container has in one family's table."""

    def __init__(self, network: str, container_id: str, family: int) -> None:
        self.layout = Layout(family)
        self.family = family
        self.dnat = Chain(self.layout.table, dnat_chain_name(network, container_id))
        self.comment = f"dnat name: {network} id: {container_id}"  # names and IDs never hold quotes

    def port_chain(self, key: PortKey) -> Chain:
        return Chain(self.layout.table, key.chain_name)


def validate(conf: PortMapConf, network: str, container_id: str, addresses: dict[int, Address]) -> None:
    """Build every rule once before anything is written: a value nftables cannot take fails here."""
    try:
        for family, address in addresses.items():
            chain = dnat_chain_name(network, container_id)
            dnat_rules(conf, family, address, chain)
            for key in port_keys(conf, family):
                key.key()
    except ValueError as exc:
        raise CNIError(INVALID_CONFIG, f"invalid portmap config: {exc}") from None


def record_fields(conf: PortMapConf, addresses: dict[int, Address]) -> dict[str, Any]:
    """What DEL needs to find the container's objects again: its port keys and hairpin addresses."""
    return {"keys": {str(f): [str(k) for k in port_keys(conf, f)] for f in addresses},
            "hairpins": {str(f): [" ".join(pair) for pair in hairpins(conf, f, a)] for f, a in addresses.items()}}


def forward(conf: PortMapConf, network: str, container_id: str, family: int, address: Address,
            previous: dict[str, Any]) -> list[str]:
    """Install (or replace) the container's chains, port claims and hairpin; one transaction.

    Returns the changes in nft syntax (for the debug log)."""
    ctr = Container(network, container_id, family)
    keys = port_keys(conf, family)
    stale = [k for k in _recorded_keys(previous, family) if k not in keys]

    def stage(tx: Tx) -> list[str]:
        layout = ctr.layout
        if not tx.ours(layout.table):
            layout.create(tx)
            fresh = True
        else:
            fresh = False
        for key in stale:
            _release_port(tx, ctr, key, fresh)
        if not fresh and tx.has_chain(ctr.dnat):
            tx.flush_chain(ctr.dnat)  # a re-ADD replaces, never appends behind stale rules
        else:
            tx.add_chain(ctr.dnat)
        for rule in dnat_rules(conf, family, address, ctr.dnat.name):
            tx.add_rule(layout.table, rule)
        for key in keys:
            _claim_port(tx, ctr, key, fresh)
        wanted = hairpins(conf, family, address)
        if not fresh:
            for pair in _recorded_hairpins(previous, family):
                if pair not in wanted:
                    layout.hairpins.remove(tx, *pair)
        for pair in wanted:
            layout.hairpins.add(tx, *pair, fresh=fresh)
        return tx.log

    return transaction(stage)


def _claim_port(tx: Tx, ctr: Container, key: PortKey, fresh: bool) -> None:
    """Put the container's jump into the port's chain (behind earlier claimants), creating the chain
    and its map element for the port's first claimant."""
    chain = ctr.port_chain(key)
    if not fresh and tx.has_chain(chain):
        if any(rule.verdict_chain() == ctr.dnat.name for rule in tx.rules(chain)):
            return
    else:
        tx.add_chain(chain)
        tx.add_element(key.map_of(ctr.layout), key.key(), key.shown(), (w.NFT_GOTO, chain.name))
    tx.add_rule(ctr.layout.table, e.NftRule(chain.name, [e.jump(ctr.dnat.name)], comment=ctr.comment))


def _release_port(tx: Tx, ctr: Container, key: PortKey, fresh: bool = False) -> int:
    """Take the container's jump out of the port's chain; the chain and element go with the last
    claimant. Returns how many references to the container's chain were removed."""
    chain = ctr.port_chain(key)
    if fresh or not tx.has_chain(chain):
        return 0
    rules = tx.rules(chain)
    ours = [rule for rule in rules if rule.verdict_chain() == ctr.dnat.name]
    if len(ours) == len(rules):
        if tx.element(key.map_of(ctr.layout), key.key()) is not None:
            tx.delete_element(key.map_of(ctr.layout), key.key(), key.shown())
        tx.delete_chain(chain)
    else:
        for rule in ours:
            tx.delete_rule(chain, rule.handle)
    return len(ours)


def _recorded_keys(record: dict[str, Any] | None, family: int) -> list[PortKey]:
    return [PortKey.parse(text) for text in ((record or {}).get("keys") or {}).get(str(family), [])]


def _recorded_hairpins(record: dict[str, Any] | None, family: int) -> list[tuple[str, str]]:
    found = []
    for text in ((record or {}).get("hairpins") or {}).get(str(family)) or []:
        source, _, ip = str(text).partition(" ")
        if ip:
            found.append((source, ip))
    return found


def unforward(network: str, container_id: str, family: int, record: dict[str, Any] | None = None,
              mappings: list[Any] | None = None) -> list[str]:
    """Remove the container's chains, claims and hairpin; the table too when it was the last.

    ``record`` names the ports and addresses; without one (a lost state directory) the runtime's
    ``mappings`` do, and a chain still referred to after that is found by scanning the table (the one
    path that lists it)."""
    ctr = Container(network, container_id, family)
    keys = _recorded_keys(record, family)
    if not keys and mappings:
        keys = _keys_of_runtime_mappings(mappings, family)
    recorded_hairpins = _recorded_hairpins(record, family)

    def stage(tx: Tx) -> list[str]:
        layout = ctr.layout
        comment = tx.table_comment(layout.table)
        if comment != layout.table.comment:
            return []  # no table of ours: nothing of ours to remove
        released = sum(_release_port(tx, ctr, key) for key in keys)
        dnat_references = tx.references(ctr.dnat)
        pairs = recorded_hairpins
        if dnat_references is not None and not pairs:  # no record: the chain names the address
            pairs = _addresses_of(tx, ctr)
        if dnat_references is not None:
            if dnat_references > released:
                _sweep_references(tx, ctr)
            tx.delete_chain(ctr.dnat)
        for pair in pairs:
            layout.hairpins.remove(tx, *pair)
        if not any(tx.holds_more_than(map_, tx.elements_deleted.get(map_.name, 0)) for map_ in layout.maps):
            tx.delete_table(layout.table)  # the last container of the node: the table goes with it
        return tx.log

    return transaction(stage)


def _keys_of_runtime_mappings(mappings: list[Any], family: int) -> list[PortKey]:
    """The port keys named by a DEL's raw ``portMappings`` (entries that make no sense are skipped)."""
    from portmap.config import host_ip_for  # noqa: PLC0415

    keys = []
    for entry in mappings:
        try:
            host_ip = host_ip_for(str(entry.get("hostIP") or ""), family)
            if host_ip is not None:
                keys.append(PortKey(host_ip, str(entry.get("protocol") or "tcp").lower(), int(entry["hostPort"])))
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return keys


def _sweep_references(tx: Tx, ctr: Container) -> None:
    """Without a record: find the port chains that still jump to the container's chain."""
    for chain in _port_chains(tx, ctr):
        rules = tx.rules(chain)
        if tx.deleting(chain):
            continue
        ours = [rule for rule in rules if rule.verdict_chain() == ctr.dnat.name and not tx.deleting(chain, rule.handle)]
        if not ours:
            continue
        if len(ours) == len(rules):
            for key_map, key in _elements_to(tx, ctr, chain.name):
                tx.delete_element(key_map, key, chain.name)
            tx.delete_chain(chain)
        else:
            for rule in ours:
                tx.delete_rule(chain, rule.handle)


def _port_chains(tx: Tx, ctr: Container) -> list[Chain]:
    return [Chain(ctr.layout.table, name) for name in tx.chain_names(ctr.layout.table) if name.startswith("hostport-")]


def _elements_to(tx: Tx, ctr: Container, chain_name: str) -> list[tuple[Map, bytes]]:
    found = []
    for map_ in (ctr.layout.hostip_map, ctr.layout.port_map):
        found += [(map_, key) for key, target in tx.map_elements(map_) if target == (w.NFT_GOTO, chain_name)]
    return found


def _addresses_of(tx: Tx, ctr: Container) -> list[tuple[str, str]]:
    """Without a record: the hairpin pairs of the address the container's chain DNATs to, for every
    source the plugin may have used (a subnet of any prefix length that is in use, 127.0.0.1, any)."""
    import ipaddress  # noqa: PLC0415

    addresses = {ipaddress.ip_address(value) for rule in tx.rules(ctr.dnat)
                 if (value := rule.immediate_value()) is not None}
    bits = 32 if ctr.family == 4 else 128
    pairs = []
    for ip in addresses:
        for length in range(bits + 1):
            if tx.has_map(ctr.layout.hairpins.set_for(length)):
                source = ipaddress.ip_network(f"{ip}/{length}", strict=False)
                pairs.append((str(source), str(ip)))
        pairs += [(LOCALHOST[ctr.family], str(ip))] if ctr.family in LOCALHOST else []
    return pairs


def check(conf: PortMapConf, network: str, container_id: str, family: int, address: Address) -> list[str]:
    """What is missing or different from what ADD would have made; empty when all is in place."""
    ctr = Container(network, container_id, family)

    def inspect(tx: Tx) -> list[str]:
        layout = ctr.layout
        if not tx.ours(layout.table):
            return [f"{layout.table} not found"]
        problems: list[str] = []
        for chain in (layout.prerouting, layout.output, layout.masquerading):
            if not tx.has_chain(chain):
                problems.append(f"chain {chain.name} not found in {layout.table}")
        problems += _chain_problems(tx, ctr.dnat, dnat_rules(conf, family, address, ctr.dnat.name))
        for key in port_keys(conf, family):
            chain = ctr.port_chain(key)
            if tx.element(key.map_of(layout), key.key()) != (w.NFT_GOTO, chain.name):
                problems.append(f"element {{ {key.shown()} : goto {chain.name} }} missing from map "
                                f"{key.map_of(layout).name}")
            if not any(rule.verdict_chain() == ctr.dnat.name for rule in tx.rules(chain)):
                problems.append(f"rule [jump {ctr.dnat.name}] missing from chain {chain.name}")
        if conf.snat:
            problems += [f"hairpin pair {{ {source} . {ip} }} missing from the hairpins sets"
                         for source, ip in hairpins(conf, family, address)
                         if not layout.hairpins.present(tx, source, ip)]
        return problems

    return transaction(inspect, read_only=True)


def _chain_problems(tx: Tx, chain: Chain, wanted: list[e.NftRule]) -> list[str]:
    """The chain must hold exactly ``wanted``, in order."""
    if not tx.has_chain(chain):
        return [f"chain {chain.name} not found in {chain.table}"]
    present = tx.rules(chain)
    problems = []
    unmatched = list(present)
    order = []
    for rule in wanted:
        found = next((k for k in unmatched if k.is_(rule)), None)
        if found is None:
            problems.append(f"rule [{rule.text}] missing from chain {chain.name}")
        else:
            unmatched.remove(found)
            order.append(found.handle)
    problems += [f"unexpected rule (handle {k.handle}) in chain {chain.name}" for k in unmatched]
    if not problems and order != sorted(order):
        problems.append(f"rules of chain {chain.name} are out of order")
    return problems


def presence(network: str, container_id: str, family: int) -> list[str]:
    """Without the runtime's mappings: only whether the container's chain exists."""
    ctr = Container(network, container_id, family)
    if transaction(lambda tx: tx.ours(ctr.layout.table) and tx.has_chain(ctr.dnat), read_only=True):
        return []
    return [f"chain {ctr.dnat.name} not found in {ctr.layout.table}"]


def status() -> None:
    """Whether nftables answers in this namespace (raises when it does not)."""
    transaction(lambda tx: tx.table_comment(Layout(4).table), read_only=True)
