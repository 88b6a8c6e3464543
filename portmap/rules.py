"""Rule generation for portmap: pure functions from config to iptables argument lists.

The output mirrors the reference's layout rule for rule (``../shared/reference.md`` §2.2/§2.4), so
an operator's muscle memory and scripts keep working. Nothing here touches the kernel; ``apply``
turns these lists into a transaction.
"""
from __future__ import annotations

import ipaddress

from portmap import names

TYPE_CHECKING = False
if TYPE_CHECKING:
    from portmap.config import PortMapConf, PortMapping

    Args = list[str]
    Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface

MULTIPORT_LIMIT = 15  # the multiport match takes at most 15 ports


def mark_hex(mark: int) -> str:
    return f"{mark:#x}/{mark:#x}"


def toplevel_jump() -> Args:
    """PREROUTING and OUTPUT: local destinations go through the hostport DNAT chain."""
    return ["-m", "addrtype", "--dst-type", "LOCAL", "-j", names.TOPLEVEL_DNAT]


def setmark_body(mark: int) -> list[Args]:
    return [["-m", "comment", "--comment", names.SETMARK_COMMENT, "-j", "MARK", "--set-xmark", mark_hex(mark)]]


def masq_body(mark: int) -> list[Args]:
    return [["-m", "mark", "--mark", mark_hex(mark), "-j", "MASQUERADE"]]


def masq_jump() -> Args:
    """POSTROUTING -> CNI-HOSTPORT-MASQ, inserted first so it precedes per-container masquerade jumps."""
    return ["-m", "comment", "--comment", names.MASQ_JUMP_COMMENT, "-j", names.MASQ]


def _mappings_for(mappings: list[PortMapping], family: int) -> list[tuple[PortMapping, str]]:
    """(mapping, destination to match) for each mapping that applies to ``family``."""
    out = []
    for m in mappings:
        host_ip = m.host_ip_for(family)
        if host_ip is not None:
            out.append((m, host_ip))
    return out


def entry_rules(conf: PortMapConf, network: str, container_id: str, family: int) -> list[Args]:
    """The jumps from CNI-HOSTPORT-DNAT into the container's chain.

    One per protocol (sorted) per block of at most 15 host ports, in mapping order. Like the
    reference, the port list holds every mapping of the protocol, including those restricted to a
    hostIP of the other family (the container's chain then simply has no rule for them).
    """
    chain = names.dnat_chain(network, container_id)
    comment = names.dnat_comment(network, container_id)
    by_protocol: dict[str, list[int]] = {}
    for m in conf.mappings:
        ports = by_protocol.setdefault(m.protocol, [])
        if m.hostPort not in ports:
            ports.append(m.hostPort)
    rules = []
    for protocol in sorted(by_protocol):
        ports = by_protocol[protocol]
        for start in range(0, len(ports), MULTIPORT_LIMIT):
            block = ",".join(str(p) for p in ports[start:start + MULTIPORT_LIMIT])
            rules.append(["-m", "comment", "--comment", comment, "-m", "multiport", "-p", protocol,
                          "--destination-ports", block, *conf.conditions(family), "-j", chain])
    return rules


def dnat_body(conf: PortMapConf, family: int, address: Address) -> list[Args]:
    """The container's own chain: per mapping the hairpin mark, the localhost mark (IPv4), the DNAT."""
    setmark_target = conf.externalSetMarkChain or names.SETMARK
    hairpin_source = (("0.0.0.0/0" if family == 4 else "::/0") if conf.masqAll else str(address.network))
    rules: list[Args] = []
    for m, host_ip in _mappings_for(conf.mappings, family):
        match = ["-p", m.protocol, "--dport", str(m.hostPort)]
        if host_ip:
            match += ["-d", host_ip]
        if conf.snat:
            rules.append(match + ["-s", hairpin_source, "-j", setmark_target])
            if family == 4 and not conf.masqAll:
                rules.append(match + ["-s", "127.0.0.1", "-j", setmark_target])
        rules.append(match + ["-j", "DNAT", "--to-destination", _ip_port(address.ip, m.containerPort)])
    return rules


def _ip_port(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def udp_host_ports(conf: PortMapConf, family: int) -> list[int]:
    return sorted({m.hostPort for m, _ in _mappings_for(conf.mappings, family) if m.protocol == "udp"})
