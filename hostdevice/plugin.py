"""The host-device plugin's commands: ADD, DEL, CHECK, STATUS and GC.

ADD moves an existing link of the node into the container, renamed ``CNI_IFNAME``, keeping its MAC
and MTU and (without IPAM) its addresses; with IPAM it gets the IPAM addresses and routes instead.
What the link was on the node is written to the ownership record before anything changes, so DEL
puts it back exactly (name, MTU, addresses, up/down) without relying on the link's alias as the
reference does, and finds it even after its namespace died (a physical device then returns to the
node by itself; a virtual one dies with the namespace, and DEL says so on stderr and succeeds).

A device another attachment's record holds is refused before anything changes, as is one that is
not in the node's namespace (another container has it).
"""
from __future__ import annotations

import sys

from cni import args as cni_args
from cni import faults, log, skel
from cni.errors import INTERNAL, INVALID_CONFIG, INVALID_ENV, UNKNOWN_CONTAINER, CNIError
from cni.records import Attachment, RecordStore, is_foreign

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.skel import Request
    from netlink.records import Link

KNOWN_ARGS = frozenset({"IP"}) | cni_args.KUBERNETES_KEYS
OWNER = "host-device"


def cmd_add(req: Request) -> dict[str, Any]:
    from hostdevice import config, devices  # noqa: PLC0415 - only ADD/DEL/CHECK pay for these
    from netlink import netns  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    conf = config.load(req.config)
    cni_args.check_known(req.cni_args, KNOWN_ARGS)
    if not netns.is_netns(req.netns):
        raise CNIError(UNKNOWN_CONTAINER, f"failed to open netns {req.netns!r}: not a network namespace")
    store, att = RecordStore.of(req, OWNER), Attachment.of(req)
    ipam = conf.ipam_type
    with Netlink.open() as nl, Netlink.open(req.netns) as ctr_nl:
        if ctr_nl.link_get(req.ifname) is not None:
            raise CNIError(INVALID_ENV, f"container interface name provided ({req.ifname}) already exists")
        link = devices.find(nl, conf)
        _refuse_if_held(store, att, link)
        device = devices.snapshot(nl, link)
        record: dict[str, Any] = {"device": device, "netns": req.netns, "ipam": ipam, "ips": []}
        previous = _previous_record(store, att)  # an earlier ADD's, kept for DEL should this one fail
        store.save(att, record)  # before anything changes, so a crash from here on is recoverable by DEL
        faults.point("hostdevice.add.after-record")
        moved = ipam_done = False
        try:
            devices.move_in(nl, link, req.netns, req.ifname)
            moved = True
            log.debug("device moved in", device=device["name"], mac=device["mac"], ifname=req.ifname,
                      addresses=device["addresses"])
            faults.point("hostdevice.add.after-move")
            if ipam:
                ipam_result = invoke_ipam_add(req, ipam)
                ipam_done = True
                faults.point("hostdevice.add.after-ipam")
                ips = [dict(ip, interface=0) for ip in ipam_result.get("ips") or []]
                if not ips:
                    raise CNIError(INTERNAL, "IPAM plugin returned missing IP config")
                routes = [dict(r) for r in ipam_result.get("routes") or []]
                record["ips"] = [ip["address"] for ip in ips]
                store.save(att, record)
                dns = conf.dns if conf.dns else ipam_result.get("dns")
            else:
                # The node's addresses come along (the move dropped them); the result reports them.
                ips = [{"address": cidr, "interface": 0} for cidr in device["addresses"]]
                routes, dns = [], conf.dns
            ctr_link = _configure_container(ctr_nl, req, ips, routes, keep_addresses=not ipam)
            result: dict[str, Any] = {"cniVersion": req.cni_version, "interfaces": [
                {"name": ctr_link.name, "mac": ctr_link.mac or "", "sandbox": req.netns}]}
            if ips:
                result["ips"] = ips
            if routes:
                result["routes"] = routes
            if dns:
                result["dns"] = dns
            return result
        except BaseException:
            _undo_add(req, ipam if ipam_done else "", moved, store, att, previous, device)
            raise


def invoke_ipam_add(req: Request, ipam: str) -> dict[str, Any]:
    from cni import invoke  # noqa: PLC0415

    # A failing IPAM ADD releases what it reserved itself; only a successful one needs a DEL.
    return invoke.delegate(req, ipam, "ADD") or {}


def _configure_container(ctr_nl: Any, req: Request, ips: list[dict[str, Any]], routes: list[dict[str, Any]],
                         keep_addresses: bool) -> Link:
    """Addresses (the IPAM's, or the node's kept ones), routes, link up."""
    from bridge import links as shared  # noqa: PLC0415 - the container side is the same as bridge's
    from hostdevice import devices  # noqa: PLC0415

    link = ctr_nl.link_get(req.ifname)
    if link is None:
        raise CNIError(INTERNAL, f"{req.ifname} not found in the container after the move")
    if not keep_addresses:
        return shared.configure_container(ctr_nl, req.netns, req.ifname, ips, routes, enabledad=False)
    has_v6 = any(":" in ip["address"] for ip in ips)
    shared.set_container_sysctls(req.netns, req.ifname, has_v6, enabledad=False)
    devices.add_addresses(ctr_nl, link.index, [ip["address"] for ip in ips])
    ctr_nl.link_set(link.index, up=True)
    return ctr_nl.link_get(req.ifname) or link


def _refuse_if_held(store: RecordStore, att: Attachment, link: Link) -> None:
    """Code 7 when another attachment's record holds this device (it is back on the node, e.g. after its
    container's namespace died, but that attachment's DEL has not run yet)."""
    for other in store.attachments():
        if other == att:
            continue
        try:
            record = store.load(other) or {}
        except CNIError:
            continue
        if is_foreign(record):
            continue  # another boot's or node namespace's: that attachment's device went with it
        held = record.get("device") or {}
        same = held.get("mac") == link.mac and held.get("kind") == link.kind if link.mac else \
            held.get("name") == link.name
        if same:
            raise CNIError(INVALID_CONFIG, f"device {link.name} is in use by container {other.container_id} "
                                           f"(network {other.network}, interface {other.ifname})")


def _previous_record(store: RecordStore, att: Attachment) -> dict[str, Any] | None:
    """An earlier ADD's record; None when there is none, it is corrupt, or it is foreign (another boot's
    or another network namespace's: the device it names is not in that state here)."""
    try:
        record = store.load(att)
    except CNIError:
        return None
    return None if record is not None and is_foreign(record) else record


def _undo_add(req: Request, ipam: str, moved: bool, store: RecordStore, att: Attachment,
              previous: dict[str, Any] | None, device: dict[str, Any]) -> None:
    """Best effort: put the device back, release the IPAM addresses, drop the record (or put back an
    earlier ADD's). The device is touched only if this ADD moved it."""
    from cni import invoke  # noqa: PLC0415
    from hostdevice import devices  # noqa: PLC0415

    try:
        if moved:
            devices.give_back(req.netns, req.ifname, device)
        if ipam:
            invoke.delegate(req, ipam, "DEL")
        if previous:
            store.save(att, previous)
        else:
            store.delete(att)
    except Exception as exc:  # the original error matters more; the record stays for a later DEL
        print(f"host-device: cleanup after failed ADD incomplete: {exc}", file=sys.stderr)
        log.warning("cleanup incomplete", msg=f"cleanup after failed ADD incomplete: {exc}")


def cmd_del(req: Request) -> None:
    from cni import invoke  # noqa: PLC0415
    from hostdevice import devices  # noqa: PLC0415
    from netlink import netns  # noqa: PLC0415

    store, att = RecordStore.of(req, OWNER), Attachment.of(req)
    try:
        record = store.load(att)
    except CNIError as err:  # DEL must not fail on it; without it the device's original state is unknown
        print(f"host-device: {err}; leaving {req.ifname} where it is", file=sys.stderr)
        log.warning("unreadable record", msg=f"{err}; leaving {req.ifname} where it is")
        record = None
    if record is not None and is_foreign(record):
        # Written in another boot or node namespace: the device's state then says nothing about it now.
        print(f"host-device: the record of {req.ifname} is another boot's or namespace's; leaving the device alone",
              file=sys.stderr)
        log.info("nothing to remove", reason="the record is another boot's or namespace's")
        record = None
    device = (record or {}).get("device")
    if record is None:
        log.info("nothing to remove", reason="no record of this attachment: no device of ours to give back")
    if isinstance(device, dict) and device.get("name"):
        if devices.give_back(req.netns, req.ifname, device):
            log.debug("device restored", device=device["name"], mac=device.get("mac"), mtu=device.get("mtu"),
                      addresses=device.get("addresses"))
        else:
            why = "its namespace is gone, and a virtual device dies with it" \
                if not (req.netns and netns.is_netns(req.netns)) else "it is neither in the container nor on the node"
            print(f"host-device: device {device['name']} ({device.get('mac')}) not found: {why}; nothing to restore",
                  file=sys.stderr)
            log.info("nothing to remove", reason=f"device {device['name']} ({device.get('mac')}) not found: {why}")
        faults.point("hostdevice.del.after-move")
    ipam = req.ipam_type
    if ipam:
        invoke.delegate(req, ipam, "DEL")
    store.delete(att)


def cmd_check(req: Request) -> None:
    from cni import invoke  # noqa: PLC0415
    from cni.prevcheck import container_entry, drifted, ips_of_interface, verify_addresses, verify_routes  # noqa: PLC0415
    from hostdevice import config  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    conf = config.load(req.config)
    cni_args.check_known(req.cni_args, KNOWN_ARGS)
    if conf.ipam_type:
        invoke.delegate(req, conf.ipam_type, "CHECK")
    prev = req.prev_result
    if prev is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing")
    ctr_index, entry = container_entry(req, prev.get("interfaces") or [])
    recorded = (_previous_record(RecordStore.of(req, OWNER), Attachment.of(req)) or {}).get("device") or {}
    with Netlink.open(req.netns) as ctr_nl:
        link = ctr_nl.link_get(req.ifname)
        if link is None:
            raise drifted(f"Interface name {req.ifname} not found")
        if entry.get("mac") and link.mac != entry["mac"].lower():
            raise drifted(f"Interface {req.ifname} Mac {entry['mac']} doesn't match container Mac: {link.mac}")
        if recorded.get("mac") and link.mac != recorded["mac"]:
            raise drifted(f"{req.ifname} is not the device {recorded.get('name')} ({recorded['mac']}) "
                          f"this attachment moved in")
        verify_addresses(ctr_nl, link.index, req.ifname, ips_of_interface(prev, ctr_index))
        verify_routes(ctr_nl, prev.get("routes") or [])


def cmd_status(req: Request) -> None:
    from cni import invoke  # noqa: PLC0415
    from hostdevice import config  # noqa: PLC0415

    conf = config.load(req.config)
    if conf.ipam_type:
        invoke.delegate(req, conf.ipam_type, "STATUS")


def cmd_gc(req: Request) -> None:
    """Give back the devices of attachments the runtime no longer knows (from the container's namespace
    the record names, or from the node where a dead namespace returned them) and drop their records;
    forward to IPAM."""
    from cni import invoke  # noqa: PLC0415
    from cni.gc import collectable, valid_attachments  # noqa: PLC0415
    from hostdevice import devices  # noqa: PLC0415

    valid = valid_attachments(req.config)
    store = RecordStore.of(req, OWNER)
    errors: list[str] = []
    for att, foreign in collectable(store, req.network, valid):
        try:
            record = {} if foreign else store.load(att) or {}  # another boot's: its device is not ours to move
            device = record.get("device")
            if isinstance(device, dict) and device.get("name"):
                devices.give_back(str(record.get("netns") or ""), att.ifname, device)
            store.delete(att)
        except Exception as exc:  # keep going: GC reports what it could not do
            errors.append(f"{att.container_id}/{att.ifname}: {exc}")
    ipam = req.ipam_type
    if ipam:
        try:
            invoke.delegate(req, ipam, "GC")
        except CNIError as err:
            errors.append(f"ipam: {err}")
    if errors:
        raise CNIError(INTERNAL, "host-device GC incomplete", "; ".join(errors))


PLUGIN = skel.Plugin(name="host-device", add=cmd_add, delete=cmd_del, check=cmd_check, status=cmd_status,
                     gc=cmd_gc)


def main() -> None:
    skel.run(PLUGIN)
