"""CHECK for the bridge plugin: the node and the container still look like prevResult says."""
from __future__ import annotations

import ipaddress

from cni.errors import INTERNAL, INVALID_CONFIG, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bridge.config import BridgeConf
    from cni.skel import Request
    from netlink.rtnl import Netlink


def _fail(msg: str) -> CNIError:
    return CNIError(INTERNAL, msg)


def verify(req: Request, conf: BridgeConf) -> None:
    from netlink.rtnl import Netlink  # noqa: PLC0415

    prev = req.prev_result or {}
    interfaces: list[dict[str, Any]] = prev.get("interfaces") or []
    bridge_entry = next((i for i in interfaces if i.get("name") == conf.bridge), None)
    ctr_index = next((n for n, i in enumerate(interfaces) if i.get("name") == req.ifname and i.get("sandbox")), None)
    if ctr_index is None:
        raise CNIError(INVALID_CONFIG, f"prevResult has no interface {req.ifname} in a sandbox")
    ctr_entry = interfaces[ctr_index]
    if ctr_entry.get("sandbox") != req.netns:
        raise _fail(f"Sandbox in prevResult {ctr_entry.get('sandbox')} doesn't match configured netns: {req.netns}")

    with Netlink.open(req.netns) as ctr_nl:
        link = ctr_nl.link_get(req.ifname)
        if link is None:
            raise _fail(f"Interface name {req.ifname} not found")
        if link.kind != "veth":
            raise _fail(f"Error: Container interface {req.ifname} not of type veth")
        if ctr_entry.get("mac") and link.mac != ctr_entry["mac"].lower():
            raise _fail(f"Interface MAC {link.mac} does not match prevResult MAC {ctr_entry['mac']}")
        present = {ipaddress.ip_interface(a.cidr) for a in ctr_nl.addrs(index=link.index)}
        for ip in prev.get("ips") or []:
            if ip.get("interface") not in (None, ctr_index):
                continue
            if ipaddress.ip_interface(ip["address"]) not in present:
                raise _fail(f"Failed to match addr {ip['address']} on interface {req.ifname}")
        _verify_routes(ctr_nl, prev.get("routes") or [])
    with Netlink.open() as nl:  # after the container: a deleted container end takes its peer along
        bridge = _verify_bridge(nl, conf, bridge_entry)
        host_names = [i["name"] for i in interfaces if not i.get("sandbox") and i.get("name") != conf.bridge]
        _verify_host_veth(nl, host_names, bridge.index)
    if conf.ipMasq:
        from bridge import ipmasq  # noqa: PLC0415 - the netfilter libraries, only when used

        problems = ipmasq.check(req.network, req.container_id, prev.get("ips") or [], _ipmasq_backend(req, conf))
        if problems:
            raise _fail("ipMasq: " + "; ".join(problems))


def _ipmasq_backend(req: Any, conf: Any) -> str | None:
    """Where ADD put the masquerade rules: the record says; else the config."""
    from bridge.plugin import OWNER  # noqa: PLC0415
    from cni.records import Attachment, RecordStore  # noqa: PLC0415

    try:
        record = RecordStore.of(req, OWNER).load(Attachment.of(req)) or {}
    except CNIError:
        record = {}
    return str(record.get("ipMasqBackend") or conf.ipMasqBackend or "") or None


def _verify_bridge(nl: Netlink, conf: BridgeConf, entry: dict[str, Any] | None) -> Any:
    bridge = nl.link_get(conf.bridge)
    if bridge is None:
        raise _fail(f"bridge {conf.bridge} not found")
    if bridge.kind != "bridge":
        raise _fail(f"{conf.bridge} is not a bridge")
    if entry and entry.get("mac") and bridge.mac != entry["mac"].lower():
        raise _fail(f"bridge {conf.bridge} has MAC {bridge.mac}, prevResult says {entry['mac']}")
    if bridge.promisc != conf.promiscMode:
        raise _fail(f"bridge {conf.bridge} promiscuous mode is {bridge.promisc}, config says {conf.promiscMode}")
    return bridge


def _verify_host_veth(nl: Netlink, names: list[str], bridge_index: int) -> None:
    for name in names:
        link = nl.link_get(name)
        if link is not None and link.kind == "veth" and link.master == bridge_index:
            return
    raise _fail(f"no host veth of {names} is attached to the bridge")


def _verify_routes(ctr_nl: Netlink, routes: list[dict[str, Any]]) -> None:
    from netlink.constants import AF_INET, AF_INET6  # noqa: PLC0415

    present = set()
    for family in (AF_INET, AF_INET6):
        for route in ctr_nl.routes(family):
            present.add(str(ipaddress.ip_network(route.dst, strict=False)))
    for route in routes:
        dst = str(ipaddress.ip_network(route["dst"], strict=False))
        if dst not in present:
            raise _fail(f"Failed to match route {route['dst']} in the container")
