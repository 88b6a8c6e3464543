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


def cmd_add(req: Request) -> dict[str, Any]:
    from portmap import config  # noqa: PLC0415

    conf = config.load(req.config)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "must be called as chained plugin")
    if not conf.mappings:
        return req.prev_result
    from portmap import claims, host, rules  # noqa: PLC0415 - the netfilter libraries, only when used
    from chains.backends import resolve  # noqa: PLC0415

    backend = resolve(conf.backend)
    config.check_backend_options(req.config, backend)
    layout = _layout(backend)
    addresses = config.container_addresses(req.prev_result, req.ifname)
    layout.validate(conf, req.network, req.container_id, addresses)
    store, att = RecordStore.of(req, OWNER), Attachment(req.network, req.container_id, req.ifname)
    previous = _load_record(store, att)
    previous_claims = list(previous.get("claims", []))
    families = sorted(addresses)
    udp_ports = {str(f): rules.udp_host_ports(conf, f) for f in families}
    moved = _backend_of(previous) != backend  # the config switched backends since the earlier ADD
    # Families a previous ADD set up are kept in the record until they are gone again.
    recorded = sorted(set(families) | set(previous.get("families", [])))
    # The claims about to be taken are recorded with the earlier ones (release checks the holder).
    claiming = list(dict.fromkeys([*previous.get("claims", []), *claims.keys(families, conf.mappings)]))
    fields = layout.record_fields(conf, addresses)
    host_ports = [f"{m.protocol}/{m.hostPort}" for m in conf.mappings]
    if moved and previous.get("families"):
        store.save(att, {**previous, "claims": claiming})
    else:
        store.save(att, {"backend": backend, "families": recorded, "udpPorts": udp_ports, "claims": claiming,
                         "hostPorts": host_ports, **_merged(fields, previous)})
    faults.point("portmap.add.after-record")
    try:
        if moved and previous.get("families"):
            old = _layout(_backend_of(previous))
            for family in previous.get("families", []):
                old.unforward(req.network, req.container_id, int(family), previous)
            store.save(att, {"backend": backend, "families": families, "udpPorts": udp_ports, "claims": claiming,
                             "hostPorts": host_ports, **fields})
            previous = {}
        for family in recorded:
            if family not in addresses:  # a stale family of an earlier ADD
                layout.unforward(req.network, req.container_id, family, previous)
        for family in families:
            changes = layout.forward(conf, req.network, req.container_id, family, addresses[family], previous)
            if changes:  # (the iptables layer logs its own commits)
                log.debug("rules committed", backend=backend, family=family, rules=changes)
            faults.point("portmap.add.after-first-family")
        if 4 in addresses and conf.snat:
            host.enable_route_localnet(str(addresses[4].ip))
    except BaseException:
        _undo(req, store, att, recorded, previous_claims, backend)
        raise
    faults.point("portmap.add.after-rules")
    held, _conflicts = claims.claim(state_dir(req.config), att, families, conf.mappings)
    stale_claims = [k for k in previous_claims if k not in held]
    store.save(att, {"backend": backend, "families": families, "udpPorts": udp_ports, "claims": held,
                     "hostPorts": host_ports, **fields})
    claims.release(state_dir(req.config), att, stale_claims)
    for family in families:  # after the rules are in, so new flows take the new DNAT
        host.flush_udp_conntrack(family, udp_ports[str(family)])
    return req.prev_result


LAYOUTS = {"iptables": "portmap.apply", "nftables": "portmap.nft"}


def _layout(backend: str) -> Any:
    """The module that lays out portmap's rules on ``backend`` (same functions on each)."""
    from chains.backends import layout  # noqa: PLC0415

    return layout(LAYOUTS, backend)


def _backend_of(record: dict[str, Any] | None) -> str:
    """The backend holding a record's rules (records from before backends existed: iptables)."""
    return str((record or {}).get("backend") or "iptables")


def _merged(fields: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """The layout's record fields with the earlier ADD's kept beside them until the rules are in,
    so a crash in between leaves DEL knowing both."""
    merged = dict(fields)
    for name, by_family in fields.items():
        old = previous.get(name)
        if isinstance(by_family, dict) and isinstance(old, dict):
            merged[name] = {**old, **by_family}
            for family, values in by_family.items():
                if isinstance(values, list) and isinstance(old.get(family), list):
                    merged[name][family] = list(dict.fromkeys([*old[family], *values]))
    return merged


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


def _undo(req: Request, store: RecordStore, att: Attachment, families: list[int], held: list[str],
          backend: str) -> None:
    from portmap import claims  # noqa: PLC0415

    try:
        record = store.load(att)
        for family in families:
            _layout(backend).unforward(req.network, req.container_id, family, record)
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


def _backends_to_sweep(record: dict[str, Any] | None) -> tuple[str, ...]:
    """Where the rules are: the record says; without a (readable) one, both backends are swept."""
    if record is not None and not record.get("unreadable"):
        return (_backend_of(record),)
    from chains.backends import NAMES  # noqa: PLC0415

    return NAMES


def cmd_del(req: Request) -> None:
    from portmap import claims  # noqa: PLC0415

    store, att = RecordStore.of(req, OWNER), Attachment(req.network, req.container_id, req.ifname)
    record: dict[str, Any] | None
    try:
        record = store.load(att)
    except CNIError as err:
        print(f"portmap: {err}; removing by chain name in both families", file=sys.stderr)
        log.warning("unreadable record", msg=f"{err}; removing by chain name in both families")
        record = {"families": [4, 6], "unreadable": True}
        claims.release_all(state_dir(req.config), att)  # the record no longer says which ports it held
    if record is not None and is_foreign(record):  # its chains were in another boot's or namespace's tables
        claims.release(state_dir(req.config), att, list(record.get("claims", [])), record[ORIGIN_KEY])
        store.delete(att)
        return
    families = _families_to_remove(req, record, store)
    if not families and record is None:
        log.info("nothing to remove", reason=NOTHING_RECORDED)
    mappings = req.runtime_config.get("portMappings") if record is None or record.get("unreadable") else None
    for family in families:
        from portmap import host  # noqa: PLC0415 - not needed when there is nothing to remove

        for backend in _backends_to_sweep(record):
            changes = _layout(backend).unforward(req.network, req.container_id, family, record, mappings)
            if changes:
                log.debug("rules removed", backend=backend, family=family, rules=changes)
        udp = (record or {}).get("udpPorts", {}).get(str(family), [])
        host.flush_udp_conntrack(family, [int(p) for p in udp])
    faults.point("portmap.del.after-rules")
    claims.release(state_dir(req.config), att, list((record or {}).get("claims", [])))
    store.delete(att)


def cmd_check(req: Request) -> None:
    from chains.backends import resolve  # noqa: PLC0415
    from portmap import config  # noqa: PLC0415

    conf = config.load(req.config)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing")
    if not conf.mappings:
        return
    backend = resolve(conf.backend)
    config.check_backend_options(req.config, backend)
    record = _load_record(RecordStore.of(req, OWNER), Attachment(req.network, req.container_id, req.ifname))
    if record.get("backend"):
        backend = _backend_of(record)  # the rules are checked where ADD put them
    layout = _layout(backend)
    addresses = config.container_addresses(req.prev_result, req.ifname)
    layout.validate(conf, req.network, req.container_id, addresses)
    for family, address in sorted(addresses.items()):
        problems = layout.check(conf, req.network, req.container_id, family, address)
        if problems:
            raise CNIError(INTERNAL, f"could not check {FAMILY_NAMES[family]} dnat ({backend}): "
                                     + "; ".join(problems))


def cmd_gc(req: Request) -> None:
    """Remove the chains and records of attachments of this network that the runtime no longer has."""
    from cni.gc import collectable, valid_attachments  # noqa: PLC0415
    from portmap import claims  # noqa: PLC0415

    valid = valid_attachments(req.config)
    store = RecordStore.of(req, OWNER)
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
                _layout(_backend_of(record)).unforward(att.network, att.container_id, int(family), record)
            claims.release(state_dir(req.config), att, list(record.get("claims", [])))
            store.delete(att)
        except Exception as exc:  # report, and keep collecting the others
            errors.append(f"{att.container_id}/{att.ifname}: {exc}")
    if errors:
        raise CNIError(INTERNAL, "portmap GC incomplete", "; ".join(errors))


def cmd_status(req: Request) -> None:
    from chains.backends import resolve  # noqa: PLC0415

    backend = resolve(req.config.get("backend") if isinstance(req.config.get("backend"), str) else None)
    try:
        _layout(backend).status()
    except Exception as exc:  # noqa: BLE001 - any failure means ADD cannot work now
        what = "iptables nat table" if backend == "iptables" else "nftables"
        raise CNIError(NOT_AVAILABLE, f"{what} is not usable: {exc}") from None


PLUGIN = skel.Plugin(name="portmap", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc, status=cmd_status)


def main() -> None:
    skel.run(PLUGIN)
