"""portmap's commands: ADD, DEL, CHECK, GC and STATUS.

Every container's rules are recorded (families, host ports) before they are committed, so DEL is
exact and idempotent without prevResult or ``portMappings`` (the reference does nothing then and
leaks), after ``ip netns del``, and after a crash half-way through ADD. A re-ADD replaces the
container's chain instead of stacking rules behind stale ones (reference issue #683).
"""
from __future__ import annotations

import sys

from cni import faults, log, skel
from cni.errors import INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, CNIError
from cni.records import ORIGIN_KEY, Attachment, RecordStore, is_foreign, state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.skel import Request
    from portmap.config import PortMapConf

OWNER = "portmap"
NOTHING_RECORDED = "no record of this attachment: no rules of ours were set up for it (or a DEL removed them)"
FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}


def _store(req: Request) -> RecordStore:
    return RecordStore(state_dir(req.config), OWNER)


def cmd_add(req: Request) -> dict[str, Any]:
    from portmap import config  # noqa: PLC0415

    conf = config.load(req.config)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "must be called as chained plugin")
    if not conf.mappings:
        return req.prev_result
    from portmap import apply, claims, host, rules  # noqa: PLC0415 - the netfilter libraries, only when used
    addresses = config.container_addresses(req.prev_result, req.ifname)
    apply.validate(conf, req.network, req.container_id, addresses)
    store, att = _store(req), Attachment(req.network, req.container_id, req.ifname)
    previous = _load_record(store, att)
    families = sorted(addresses)
    udp_ports = {str(f): rules.udp_host_ports(conf, f) for f in families}
    # Families a previous ADD set up are kept in the record until they are gone again.
    recorded = sorted(set(families) | set(previous.get("families", [])))
    # The claims about to be taken are recorded with the earlier ones (release checks the holder).
    claiming = list(dict.fromkeys([*previous.get("claims", []), *claims.keys(families, conf.mappings)]))
    store.save(att, {"families": recorded, "udpPorts": udp_ports, "claims": claiming,
                     "hostPorts": [f"{m.protocol}/{m.hostPort}" for m in conf.mappings]})
    faults.point("portmap.add.after-record")
    try:
        for family in recorded:
            if family not in addresses:
                apply.unforward(req.network, req.container_id, family)  # a stale family of an earlier ADD
        for family in families:
            apply.forward(conf, req.network, req.container_id, family, addresses[family])
            faults.point("portmap.add.after-first-family")
        if 4 in addresses and conf.snat:
            host.enable_route_localnet(str(addresses[4].ip))
    except BaseException:
        _undo(req, store, att, recorded, previous.get("claims", []))
        raise
    faults.point("portmap.add.after-rules")
    held, _conflicts = claims.claim(state_dir(req.config), att, families, conf.mappings)
    stale_claims = [k for k in previous.get("claims", []) if k not in held]
    store.save(att, {"families": families, "udpPorts": udp_ports, "claims": held,
                     "hostPorts": [f"{m.protocol}/{m.hostPort}" for m in conf.mappings]})
    claims.release(state_dir(req.config), att, stale_claims)
    for family in families:  # after the rules are in, so new flows take the new DNAT
        host.flush_udp_conntrack(family, udp_ports[str(family)])
    return req.prev_result


def _load_record(store: RecordStore, att: Attachment) -> dict[str, Any]:
    """The attachment's record; {} when there is none or it is foreign (another boot's or another network
    namespace's: none of its chains or claims exist here)."""
    try:
        record = store.load(att) or {}
        return {} if record and is_foreign(record) else record
    except CNIError as err:
        print(f"portmap: {err}; treating it as covering both families", file=sys.stderr)
        log.warning("unreadable record", msg=f"{err}; treating it as covering both families")
        return {"families": [4, 6]}


def _undo(req: Request, store: RecordStore, att: Attachment, families: list[int], held: list[str]) -> None:
    from portmap import apply, claims  # noqa: PLC0415

    try:
        for family in families:
            apply.unforward(req.network, req.container_id, family)
        claims.release(state_dir(req.config), att, list(held))  # a re-ADD's earlier claims go with its rules
        store.delete(att)
    except Exception as exc:  # the ADD's own error matters more; the record stays for DEL
        print(f"portmap: cleanup after failed ADD incomplete: {exc}", file=sys.stderr)
        log.warning("cleanup incomplete", msg=f"cleanup after failed ADD incomplete: {exc}")


def _families_to_remove(req: Request, record: dict[str, Any] | None, store: RecordStore) -> list[int]:
    if record is not None:
        return [int(f) for f in record.get("families", []) if int(f) in (4, 6)]
    if store.keeps_records():
        return []  # no record: nothing of ours was ever committed for it (a repeated DEL lands here)
    # The state directory was lost (or this node never had one): when the runtime still names
    # mappings, sweep by chain name like the reference does.
    mappings = req.runtime_config.get("portMappings")
    return [4, 6] if mappings else []


def cmd_del(req: Request) -> None:
    from portmap import claims  # noqa: PLC0415

    store, att = _store(req), Attachment(req.network, req.container_id, req.ifname)
    record: dict[str, Any] | None
    try:
        record = store.load(att)
    except CNIError as err:
        print(f"portmap: {err}; removing by chain name in both families", file=sys.stderr)
        log.warning("unreadable record", msg=f"{err}; removing by chain name in both families")
        record = {"families": [4, 6]}
        claims.release_all(state_dir(req.config), att)  # the record no longer says which ports it held
    if record is not None and is_foreign(record):  # its chains were in another boot's or namespace's tables
        claims.release(state_dir(req.config), att, list(record.get("claims", [])), record[ORIGIN_KEY])
        store.delete(att)
        return
    families = _families_to_remove(req, record, store)
    if not families and record is None:
        log.info("nothing to remove", reason=NOTHING_RECORDED)
    for family in families:
        from portmap import apply, host  # noqa: PLC0415 - not needed when there is nothing to remove

        apply.unforward(req.network, req.container_id, family)
        udp = (record or {}).get("udpPorts", {}).get(str(family), [])
        host.flush_udp_conntrack(family, [int(p) for p in udp])
    faults.point("portmap.del.after-rules")
    claims.release(state_dir(req.config), att, list((record or {}).get("claims", [])))
    store.delete(att)


def cmd_check(req: Request) -> None:
    from portmap import apply, config  # noqa: PLC0415

    conf = config.load(req.config)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing")
    if not conf.mappings:
        return
    addresses = config.container_addresses(req.prev_result, req.ifname)
    apply.validate(conf, req.network, req.container_id, addresses)
    for family, address in sorted(addresses.items()):
        problems = apply.check(conf, req.network, req.container_id, family, address)
        if problems:
            raise CNIError(INTERNAL, f"could not check {FAMILY_NAMES[family]} dnat: " + "; ".join(problems))


def cmd_gc(req: Request) -> None:
    """Remove the chains and records of attachments of this network that the runtime no longer has."""
    from cni.gc import collectable, valid_attachments  # noqa: PLC0415
    from portmap import apply, claims  # noqa: PLC0415

    valid = valid_attachments(req.config)
    store = _store(req)
    errors = []
    for att, foreign in collectable(store, req.network, valid):
        try:
            if foreign:  # another boot's or namespace's: only its record and its claims are left of it
                record = store.load(att) or {}
                claims.release(state_dir(req.config), att, list(record.get("claims", [])), record.get(ORIGIN_KEY))
                store.delete(att)
                continue
            record = _load_record(store, att)
            for family in record.get("families", [4, 6]):
                apply.unforward(att.network, att.container_id, int(family))
            claims.release(state_dir(req.config), att, list(record.get("claims", [])))
            store.delete(att)
        except Exception as exc:  # report, and keep collecting the others
            errors.append(f"{att.container_id}/{att.ifname}: {exc}")
    if errors:
        raise CNIError(INTERNAL, "portmap GC incomplete", "; ".join(errors))


def cmd_status(req: Request) -> None:
    from chains import table  # noqa: PLC0415

    try:
        table.read(4, "nat", lambda tx: tx.has_chain("PREROUTING"))
    except Exception as exc:  # noqa: BLE001 - any failure means ADD cannot work now
        raise CNIError(NOT_AVAILABLE, f"iptables nat table is not usable: {exc}") from None


PLUGIN = skel.Plugin(name="portmap", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc, status=cmd_status)


def main() -> None:
    skel.run(PLUGIN)
