"""What ``cnictl show`` asks of the bridge plugin: how one attachment's record compares with the node.

Only what CHECK verifies, driven by the ownership record instead of prevResult (so it also works for
attachments whose runtime keeps its result cache elsewhere): the bridge, the host veth on it, the
container interface and its addresses (when the network namespace is known), the ipMasq chain.
"""
from __future__ import annotations

from cni.errors import CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import Attachment

BACKEND = "iptables"


def _backend(record: dict[str, Any]) -> str:
    """Where the record's ipMasq rules are (``ipMasqBackend``; records from before backends: iptables)."""
    return str(record.get("ipMasqBackend") or record.get("backend") or BACKEND)


def chains(att: Attachment, record: dict[str, Any]) -> list[str]:
    """The tables and chains the record says the attachment owns, as ``table/chain``."""
    if not (record.get("ipMasq") and record.get("ips")):
        return []
    if _backend(record) == "nftables":
        import ipaddress  # noqa: PLC0415

        return [f"inet cni_plugins_masquerade/masq_ipv{ipaddress.ip_interface(ip).version} "
                f"{ipaddress.ip_interface(ip).ip}" for ip in record["ips"]]
    from bridge import ipmasq_iptables  # noqa: PLC0415

    return [f"nat/{ipmasq_iptables.chain_name(att.network, att.container_id)}"]


def inspect(att: Attachment, record: dict[str, Any], config: dict[str, Any], netns: str | None) -> list[str]:
    """What drifted from the record on the live node; empty when everything is in place.

    ``config`` is the plugin's request config as CHECK would get it; ``netns`` the container's
    namespace path when the runtime's cache knows it.
    """
    from bridge import DEFAULT_BRIDGE, check  # noqa: PLC0415
    from bridge import config as bridge_config  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    problems: list[str] = []
    name = str(record.get("bridge") or config.get("bridge") or DEFAULT_BRIDGE)
    try:
        conf = bridge_config.load(dict(config, bridge=name))
    except CNIError as err:
        return [f"config: {err.msg}"]
    host_veth = record.get("hostVeth")
    with Netlink.open() as nl:
        try:
            bridge = check._verify_bridge(nl, conf, None)
            if isinstance(host_veth, str) and host_veth:
                if nl.link_get(host_veth) is None:
                    raise CNIError(0, f"host veth {host_veth} not found")
                check._verify_host_veth(nl, [host_veth], bridge.index)
        except CNIError as err:
            problems.append(err.msg)
    if netns:
        problems += _container_problems(netns, att.ifname, [str(ip) for ip in record.get("ips") or []])
    if record.get("ipMasq") and record.get("ips"):
        from bridge import ipmasq  # noqa: PLC0415

        problems += [f"ipMasq: {text}" for text in
                     ipmasq.check(att.network, att.container_id, record["ips"], _backend(record))]
    return problems


def _container_problems(netns: str, ifname: str, ips: list[str]) -> list[str]:
    import ipaddress  # noqa: PLC0415

    from netlink import netns as namespaces  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    if not namespaces.is_netns(netns):
        return [f"network namespace {netns} not found"]
    with Netlink.open(netns) as ctr_nl:
        link = ctr_nl.link_get(ifname)
        if link is None:
            return [f"interface {ifname} not found in {netns}"]
        present = {ipaddress.ip_interface(a.cidr) for a in ctr_nl.addrs(index=link.index)}
    return [f"address {ip} missing on {ifname} in {netns}" for ip in ips if ipaddress.ip_interface(ip) not in present]
