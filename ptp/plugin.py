"""The ptp plugin's commands: ADD, DEL, CHECK, STATUS and GC.

A veth pair per container, its node end in the node's namespace: the container reaches its gateway
(an address the node end holds) over the pair and everything else through the node's routing.

Like bridge, an attachment's ownership record (host veth, addresses, whether it has masquerade rules)
is written before anything is created, so DEL is exact without prevResult and with the container's
namespace gone (the reference then skips its ipMasq teardown and leaks the chain), and a failed ADD
undoes what it did.
"""
from __future__ import annotations

import sys

from cni import args as cni_args
from cni import faults, log, skel
from cni.errors import INTERNAL, INVALID_CONFIG, UNKNOWN_CONTAINER, CNIError
from cni.records import Attachment, RecordStore, is_foreign

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.skel import Request

KNOWN_ARGS = frozenset({"IP"}) | cni_args.KUBERNETES_KEYS
OWNER = "ptp"


def cmd_add(req: Request) -> dict[str, Any]:
    import ipaddress  # noqa: PLC0415 - ~5 ms to import; VERSION must not pay for it

    from bridge import ipmasq  # noqa: PLC0415 - only ADD/DEL/CHECK pay for these
    from bridge import links as veths  # noqa: PLC0415
    from cni import invoke  # noqa: PLC0415
    from netlink import netns  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415
    from ptp import config, links  # noqa: PLC0415

    conf = config.load(req.config)
    cni_args.check_known(req.cni_args, KNOWN_ARGS)
    if not netns.is_netns(req.netns):
        raise CNIError(UNKNOWN_CONTAINER, f"failed to open netns {req.netns!r}: not a network namespace")
    ipam = conf.ipam["type"]
    store, att = RecordStore.of(req, OWNER), Attachment.of(req)
    host_veth = veths.new_host_veth_name()
    record: dict[str, Any] = {"hostVeth": host_veth, "ips": [], "ipMasq": conf.ipMasq, "ipam": ipam}
    if conf.ipMasq:
        from chains.backends import resolve  # noqa: PLC0415

        record["ipMasqBackend"] = resolve(conf.ipMasqBackend)  # where DEL will find the rules
    previous = _previous_record(store, att)  # an earlier ADD's, kept for DEL should this one fail
    store.save(att, record)  # before anything exists, so a crash from here on is recoverable by DEL
    faults.point("ptp.add.after-record")
    ipam_done = created_link = False
    try:
        with Netlink.open() as nl, Netlink.open(req.netns) as ctr_nl:
            veths.create_veth(ctr_nl, req.ifname, host_veth, conf.mtu, None)
            created_link = True
            log.debug("links created", hostVeth=host_veth, container_ifname=req.ifname, mtu=conf.mtu)
            faults.point("ptp.add.after-veth")
            # A failing IPAM ADD releases what it reserved itself; only a successful one needs a DEL.
            ipam_result = invoke.delegate(req, ipam, "ADD") or {}
            ipam_done = True
            faults.point("ptp.add.after-ipam")
            ips = [dict(ip) for ip in ipam_result.get("ips") or []]
            if not ips:
                raise CNIError(INTERNAL, "IPAM plugin returned missing IP config")
            links.complete_gateways(ips)
            routes = [dict(r) for r in ipam_result.get("routes") or []]
            record["ips"] = [ip["address"] for ip in ips]
            store.save(att, record)
            families = {ipaddress.ip_interface(ip["address"]).version for ip in ips}
            veths.enable_forwarding(families)
            veths.set_container_sysctls(req.netns, req.ifname, 6 in families, enabledad=False)
            ctr_link = links.configure_container(ctr_nl, req.ifname, ips, routes)
            host_link = links.configure_host(nl, host_veth, ips)
            log.debug("addresses set", ifname=req.ifname, addresses=[ip["address"] for ip in ips], routes=routes,
                      hostVeth=host_veth, gateways=sorted({ip["gateway"] for ip in ips}))
            faults.point("ptp.add.after-addresses")
            if conf.ipMasq:
                ipmasq.setup(req.network, req.container_id, ips, backend=record["ipMasqBackend"])
                faults.point("ptp.add.after-ipmasq")
            result: dict[str, Any] = {"cniVersion": req.cni_version, "interfaces": [
                {"name": host_veth, "mac": host_link.mac or ""},
                {"name": req.ifname, "mac": ctr_link.mac or "", "sandbox": req.netns},
            ], "ips": ips, "routes": routes}
            # The config's DNS wins only when it says something; otherwise IPAM's stands (as the reference).
            dns = conf.dns if conf.dns else ipam_result.get("dns")
            if dns:
                result["dns"] = dns
            return result
    except BaseException:
        _undo_add(req, ipam if ipam_done else "", store, att, previous, created_link)
        raise


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

    The container interface goes only if this ADD created it: an ``ifname`` that already existed is not
    this ADD's to delete.
    """
    try:
        _teardown(req, store.load(att) or {}, ipam, container_link=created_link)
        if previous:
            store.save(att, previous)
        else:
            store.delete(att)
    except Exception as exc:  # the original error matters more; the record stays for a later DEL
        print(f"ptp: cleanup after failed ADD incomplete: {exc}", file=sys.stderr)
        log.warning("cleanup incomplete", msg=f"cleanup after failed ADD incomplete: {exc}")


def _teardown(req: Request, record: dict[str, Any] | None, ipam: str, container_link: bool = True) -> None:
    """Remove what the attachment owns. ``record`` None means "known to own nothing in the tables"
    (no record while the store keeps records); ``{}`` means "unknown" (a lost or corrupt record)."""
    from bridge import ipmasq  # noqa: PLC0415
    from bridge import links as veths  # noqa: PLC0415
    from cni import invoke  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415
    from ptp import links  # noqa: PLC0415

    known = record or {}
    if container_link:
        # Takes the node end, its gateway addresses and host routes with it. With the namespace gone,
        # the kernel has already destroyed the pair.
        veths.delete_container_link(req.netns, req.ifname)
    if ipam:
        invoke.delegate(req, ipam, "DEL")
        faults.point("ptp.del.after-ipam")
    # By chain name (and the recorded addresses): needs neither the netns nor prevResult. With a record,
    # only the families and the backend it says were set up; without one that can be trusted, both
    # families on both backends are swept.
    if record is not None and known.get("ipMasq", True):
        ipmasq.teardown(req.network, req.container_id, _families(known.get("ips") or []) if known else (4, 6),
                        backend=str(known.get("ipMasqBackend") or "iptables") if known else None,
                        addresses=list(known.get("ips") or []))
    host_veth = known.get("hostVeth")
    if isinstance(host_veth, str) and host_veth:
        with Netlink.open() as nl:
            links.delete_host_veth(nl, host_veth)


def _families(addresses: list[str]) -> tuple[int, ...]:
    import ipaddress  # noqa: PLC0415

    return tuple(sorted({ipaddress.ip_interface(ip).version for ip in addresses}))


def cmd_del(req: Request) -> None:
    store, att = RecordStore.of(req, OWNER), Attachment.of(req)
    record = store.load_for_delete(att)  # None: nothing of ours; {}: unknown, tear down by name (IPAM is told)
    if record is None:
        log.info("nothing to remove", reason="no record of this attachment: no host veth or rules of ours; "
                                             "only the container interface and the IPAM reservation are looked for")
    _teardown(req, record, req.ipam_type)
    store.delete(att)


def cmd_check(req: Request) -> None:
    from cni import invoke  # noqa: PLC0415
    from ptp import check, config  # noqa: PLC0415

    conf = config.load(req.config)
    cni_args.check_known(req.cni_args, KNOWN_ARGS)
    invoke.delegate(req, conf.ipam["type"], "CHECK")
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing")
    check.verify(req, conf, _masq_backend(req, conf.ipMasqBackend))


def _masq_backend(req: Request, configured: str | None) -> str | None:
    """Where ADD put the masquerade rules: the record says; else the config."""
    try:
        record = RecordStore.of(req, OWNER).load(Attachment.of(req)) or {}
    except CNIError:
        record = {}
    return str(record.get("ipMasqBackend") or configured or "") or None


def cmd_status(req: Request) -> None:
    from cni import invoke  # noqa: PLC0415
    from ptp import config  # noqa: PLC0415

    conf = config.load(req.config)
    invoke.delegate(req, conf.ipam["type"], "STATUS")


def cmd_gc(req: Request) -> None:
    """Remove the masquerade rules, host veths and records of attachments the runtime no longer knows;
    forward to IPAM."""
    from bridge import ipmasq  # noqa: PLC0415
    from cni import invoke  # noqa: PLC0415
    from cni.gc import collectable, valid_attachments  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415
    from ptp import config, links  # noqa: PLC0415

    conf = config.load(req.config)
    valid = valid_attachments(req.config)
    store = RecordStore.of(req, OWNER)
    errors: list[str] = []
    for att, foreign in collectable(store, req.network, valid):
        try:
            if foreign:  # another boot's or namespace's: its veth and rules are not in this node's tables
                store.delete(att)
                continue
            record = store.load(att) or {}
            if record.get("hostVeth"):
                with Netlink.open() as nl:
                    links.delete_host_veth(nl, str(record["hostVeth"]))
            if record.get("ipMasq", True):
                ipmasq.teardown(att.network, att.container_id, _families(record.get("ips") or []) or (4, 6),
                                backend=record.get("ipMasqBackend") or "iptables",
                                addresses=list(record.get("ips") or []))
            store.delete(att)
        except Exception as exc:  # keep going: GC reports what it could not do
            errors.append(f"{att.container_id}/{att.ifname}: {exc}")
    try:
        invoke.delegate(req, conf.ipam["type"], "GC")
    except CNIError as err:
        errors.append(f"ipam: {err}")
    if errors:
        raise CNIError(INTERNAL, "ptp GC incomplete", "; ".join(errors))


PLUGIN = skel.Plugin(name="ptp", add=cmd_add, delete=cmd_del, check=cmd_check, status=cmd_status, gc=cmd_gc)


def main() -> None:
    skel.run(PLUGIN)
