"""The bridge plugin's commands: ADD, DEL, CHECK, STATUS and GC.

What an attachment owns (its host veth, its addresses, whether it has masquerade rules) is kept in
an ownership record written before anything is created, so DEL cleans up exactly, even when the
runtime passes an empty or already-deleted ``CNI_NETNS`` (the reference leaks its ipMasq rules
then), and a failed ADD undoes everything it did (the reference leaves the veth behind).
"""
from __future__ import annotations

import sys

from cni import args as cni_args
from bridge import DEFAULT_BRIDGE
from cni import faults, log, skel
from cni.errors import INTERNAL, UNKNOWN_CONTAINER, CNIError
from cni.records import Attachment, RecordStore, is_foreign

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from bridge.config import BridgeConf
    from cni.skel import Request

KNOWN_ARGS = frozenset({"IP", "MAC"}) | cni_args.KUBERNETES_KEYS
OWNER = "bridge"


def _bridge_name(config: dict[str, Any]) -> str:
    """The bridge name, read tolerantly: DEL must clean up even when the config would not validate
    (and it must not pay for pydantic, which costs more than the whole DEL)."""
    name = config.get("bridge")
    return name if isinstance(name, str) and name else DEFAULT_BRIDGE


def cmd_add(req: Request) -> dict[str, Any]:
    import ipaddress  # noqa: PLC0415 - ~5 ms to import; VERSION must not pay for it

    from bridge import config, links  # noqa: PLC0415 - only ADD/DEL/CHECK pay for these
    from cni import invoke  # noqa: PLC0415
    from netlink import netns  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    conf = config.load(req.config)
    cni_args.check_known(req.cni_args, KNOWN_ARGS)
    mac = config.container_mac(conf, req.cni_args)
    if not netns.is_netns(req.netns):
        raise CNIError(UNKNOWN_CONTAINER, f"failed to open netns {req.netns!r}: not a network namespace")
    ipam = req.ipam_type
    store, att = RecordStore.of(req, OWNER), Attachment.of(req)
    host_veth = links.new_host_veth_name()
    record: dict[str, Any] = {"bridge": conf.bridge, "hostVeth": host_veth, "ips": [], "ipMasq": conf.ipMasq,
                              "ipam": ipam, "spoofcheck": conf.macspoofchk}
    if conf.ipMasq:
        from chains.backends import resolve  # noqa: PLC0415

        record["ipMasqBackend"] = resolve(conf.ipMasqBackend)
    previous = _previous_record(store, att)  # an earlier ADD's, kept for DEL should this one fail
    store.save(att, record)  # before anything exists, so a crash from here on is recoverable by DEL
    faults.point("bridge.add.after-record")
    ipam_done = created_link = False
    try:
        with Netlink.open() as nl, Netlink.open(req.netns) as ctr_nl:
            bridge = links.ensure_bridge(nl, conf)
            links.create_veth(ctr_nl, req.ifname, host_veth, conf.mtu, mac)
            created_link = True
            host_link = links.attach_host_veth(nl, host_veth, bridge, conf)
            log.debug("links created", bridge=bridge.name, hostVeth=host_veth, container_ifname=req.ifname,
                      netns=req.netns, mtu=conf.mtu or None, hairpin=conf.hairpinMode)
            faults.point("bridge.add.after-veth")
            result: dict[str, Any] = {"cniVersion": req.cni_version, "interfaces": [
                {"name": bridge.name, "mac": bridge.mac or ""},
                {"name": host_veth, "mac": host_link.mac or ""},
                {"name": req.ifname, "mac": "", "sandbox": req.netns},
            ]}
            if ipam:
                # A failing IPAM ADD releases what it reserved itself; only a successful one needs a DEL.
                ipam_result = invoke.delegate(req, ipam, "ADD") or {}
                ipam_done = True
                faults.point("bridge.add.after-ipam")
                ips = [dict(ip) for ip in ipam_result.get("ips") or []]
                if not ips:
                    raise CNIError(INTERNAL, "IPAM plugin returned missing IP config")
                _complete_ips(ips, conf)
                routes = _routes_with_defaults(ipam_result.get("routes") or [], ips, conf)
                record["ips"] = [ip["address"] for ip in ips]
                store.save(att, record)
                ctr_link = links.configure_container(ctr_nl, req.netns, req.ifname, ips, routes, conf.enabledad)
                log.debug("addresses set", ifname=req.ifname, addresses=[ip["address"] for ip in ips], routes=routes)
                faults.point("bridge.add.after-addresses")
                families = {ipaddress.ip_interface(ip["address"]).version for ip in ips}
                if conf.isGateway:
                    for ip in ips:
                        if ip.get("gateway"):
                            prefix = ipaddress.ip_interface(ip["address"]).network.prefixlen
                            links.ensure_gateway_address(nl, bridge, f"{ip['gateway']}/{prefix}", conf.forceAddress)
                            log.debug("gateway address", bridge=bridge.name, address=f"{ip['gateway']}/{prefix}")
                    links.enable_forwarding(families)
                if conf.ipMasq:
                    from bridge import ipmasq  # noqa: PLC0415 - the netfilter libraries, only when used

                    ipmasq.setup(req.network, req.container_id, ips, record["ipMasqBackend"])
                    faults.point("bridge.add.after-ipmasq")
                result["ips"] = ips
                result["routes"] = routes
                dns = conf.dns if conf.dns else ipam_result.get("dns")
                if dns:
                    result["dns"] = dns
            else:
                ctr_link = ctr_nl.link_get(req.ifname)
                if ctr_link is not None:
                    ctr_nl.link_set(ctr_link.index, up=True)
            result["interfaces"][2]["mac"] = ctr_link.mac if ctr_link is not None else ""
            if conf.macspoofchk and ctr_link is not None and ctr_link.mac:
                from bridge import spoofcheck  # noqa: PLC0415

                spoofcheck.setup(req.network, req.container_id, req.ifname, host_veth, ctr_link.mac)
            bridge_now = nl.link_get(conf.bridge)
            if bridge_now is not None:
                result["interfaces"][0]["mac"] = bridge_now.mac or ""
            return result
    except BaseException:
        _undo_add(req, ipam if ipam_done else "", store, att, previous, created_link)
        raise


def _complete_ips(ips: list[dict[str, Any]], conf: BridgeConf) -> None:
    """Point every IP at the container interface (index 2); default gateways to the subnet's first host."""
    import ipaddress  # noqa: PLC0415 - ~5 ms to import; VERSION must not pay for it

    for ip in ips:
        ip["interface"] = 2
        if conf.isGateway and not ip.get("gateway"):
            iface = ipaddress.ip_interface(ip["address"])
            ip["gateway"] = str(iface.network.network_address + 1)


def _routes_with_defaults(routes: list[dict[str, Any]], ips: list[dict[str, Any]], conf: BridgeConf) -> list[dict[str, Any]]:
    import ipaddress  # noqa: PLC0415 - ~5 ms to import; VERSION must not pay for it

    routes = [dict(r) for r in routes]
    if not conf.isDefaultGateway:
        return routes
    for ip in ips:
        family = ipaddress.ip_interface(ip["address"]).version
        default = "0.0.0.0/0" if family == 4 else "::/0"
        has_default = any(r.get("dst") == default and r.get("gw") for r in routes)
        if not has_default and ip.get("gateway"):
            routes = [r for r in routes if r.get("dst") != default]
            routes.append({"dst": default, "gw": ip["gateway"]})
    return routes


def _previous_record(store: RecordStore, att: Attachment) -> dict[str, Any] | None:
    """An earlier ADD's record; None when there is none, it is corrupt, or it is foreign (another boot's
    or another network namespace's: nothing it names exists here)."""
    try:
        record = store.load(att)
    except CNIError:
        return None
    return None if record is not None and is_foreign(record) else record


def _undo_add(req: Request, ipam: str, store: RecordStore, att: Attachment, previous: dict[str, Any] | None,
              created_link: bool) -> None:
    """Best effort: remove everything a failed ADD created, then its record (putting back an earlier ADD's).

    The container interface goes only if this ADD created it: an ``ifname`` that already existed
    (someone else's, or left by an earlier ADD that died) is not this ADD's to delete.
    """
    try:
        _teardown(req, store.load(att) or {}, ipam, container_link=created_link)
        if previous:
            store.save(att, previous)
        else:
            store.delete(att)
    except Exception as exc:  # the original error matters more; the record stays for a later DEL
        print(f"bridge: cleanup after failed ADD incomplete: {exc}", file=sys.stderr)
        log.warning("cleanup incomplete", msg=f"cleanup after failed ADD incomplete: {exc}")


def _teardown(req: Request, record: dict[str, Any] | None, ipam: str, container_link: bool = True) -> None:
    """Remove what the attachment owns. ``record`` None means "known to own nothing in the tables"
    (no record while the store keeps records); ``{}`` means "unknown" (a lost or corrupt record).

    The container's interface is deleted on a thread of its own: the kernel unregisters a veth
    synchronously in the RTM_DELLINK call (tens of milliseconds waiting for RCU grace periods,
    without the GIL), which needs nothing the rest of the teardown touches.
    """
    import ipaddress  # noqa: PLC0415 - ~5 ms to import; VERSION must not pay for it

    from bridge import links  # noqa: PLC0415
    from cni import invoke  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    known = record or {}
    # Without a record that can be trusted, the masquerade elements of the nftables backend are found by
    # address: the runtime's prevResult names them, else the container interface still has them.
    addresses = list(known.get("ips") or []) or (_addresses_without_record(req) if record == {} else [])
    link_deletion = _in_background(links.delete_container_link, req.netns, req.ifname) if container_link else None
    try:
        if ipam:
            invoke.delegate(req, ipam, "DEL")
            faults.point("bridge.del.after-ipam")
        if known.get("spoofcheck"):
            from bridge import spoofcheck  # noqa: PLC0415

            spoofcheck.teardown(req.network, req.container_id, req.ifname)
        # By chain name alone: needs neither the netns nor the container's addresses. With a record,
        # only the families it says were set up; without one that can be trusted, both are swept.
        if record is not None and known.get("ipMasq", True):
            from bridge import ipmasq  # noqa: PLC0415 - the netfilter libraries, only when used

            recorded = [ipaddress.ip_interface(ip).version for ip in known.get("ips") or []]
            # Records from before backends existed hold iptables rules; without a record, both are swept.
            backend = str(known.get("ipMasqBackend") or "iptables") if known else None
            ipmasq.teardown(req.network, req.container_id, tuple(sorted(set(recorded))) if known else (4, 6),
                            backend, addresses)
    finally:
        if link_deletion is not None:
            link_deletion()  # waits; raises what the deletion raised
    faults.point("bridge.del.after-link")
    host_veth = known.get("hostVeth")
    if isinstance(host_veth, str) and host_veth:
        with Netlink.open() as nl:
            links.delete_host_veth(nl, host_veth, str(known.get("bridge") or _bridge_name(req.config)))


def _addresses_without_record(req: Request) -> list[str]:
    """The container's addresses (with prefix) from prevResult, else from its interface."""
    found = [str(ip["address"]) for ip in (req.prev_result or {}).get("ips") or []
             if isinstance(ip, dict) and isinstance(ip.get("address"), str)]
    if found or not req.netns:
        return found
    from netlink import netns  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    try:
        if not netns.is_netns(req.netns):
            return []
        with Netlink.open(req.netns) as ctr_nl:
            link = ctr_nl.link_get(req.ifname)
            return [a.cidr for a in ctr_nl.addrs(index=link.index)] if link is not None else []
    except OSError:
        return []


def _in_background(fn: Callable[..., object], *args: object) -> Callable[[], None]:
    """Start ``fn(*args)`` on a thread; the returned function waits for it and re-raises its error."""
    import _thread  # noqa: PLC0415 - the builtin: threading costs an import for nothing here

    done = _thread.allocate_lock()
    done.acquire()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            failure.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(run, ())

    def wait() -> None:
        done.acquire()
        if failure:
            raise failure[0]

    return wait


def cmd_del(req: Request) -> None:
    store, att = RecordStore.of(req, OWNER), Attachment.of(req)
    record = store.load_for_delete(att)  # None: nothing of ours; {}: unknown, tear down by name (IPAM is told)
    if record is None:
        log.info("nothing to remove", reason="no record of this attachment: no host veth or rules of ours; "
                                             "only the container interface and the IPAM reservation are looked for")
    _teardown(req, record, req.ipam_type)
    store.delete(att)


def cmd_check(req: Request) -> None:
    from bridge import check, config  # noqa: PLC0415
    from cni import invoke  # noqa: PLC0415

    conf = config.load(req.config)
    cni_args.check_known(req.cni_args, KNOWN_ARGS)
    ipam = req.ipam_type
    if ipam:
        invoke.delegate(req, ipam, "CHECK")
    if req.prev_result is None:
        raise CNIError(7, "Required prevResult missing")
    check.verify(req, conf)


def cmd_status(req: Request) -> None:
    from bridge import config  # noqa: PLC0415
    from cni import invoke  # noqa: PLC0415

    config.load(req.config)
    ipam = req.ipam_type
    if ipam:
        invoke.delegate(req, ipam, "STATUS")


def cmd_gc(req: Request) -> None:
    """Remove masquerade rules and records of attachments the runtime no longer knows; forward to IPAM."""
    from bridge import config, ipmasq, links  # noqa: PLC0415
    from cni import invoke  # noqa: PLC0415
    from cni.gc import collectable, valid_attachments  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    conf = config.load(req.config)
    valid = valid_attachments(req.config)
    store = RecordStore.of(req, OWNER)
    errors: list[str] = []
    for att, foreign in collectable(store, req.network, valid):
        try:
            if foreign:  # another boot's or namespace's: its veth and chain are not in this node's tables
                store.delete(att)
                continue
            record = store.load(att) or {}
            if record.get("hostVeth"):
                with Netlink.open() as nl:
                    links.delete_host_veth(nl, str(record["hostVeth"]), str(record.get("bridge") or conf.bridge))
            if record.get("ipMasq", True):
                ipmasq.teardown(att.network, att.container_id, backend=record.get("ipMasqBackend") or "iptables",
                                addresses=list(record.get("ips") or []))
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
        raise CNIError(INTERNAL, "bridge GC incomplete", "; ".join(errors))


PLUGIN = skel.Plugin(name="bridge", add=cmd_add, delete=cmd_del, check=cmd_check, status=cmd_status, gc=cmd_gc)


def main() -> None:
    skel.run(PLUGIN)
