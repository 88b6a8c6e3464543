"""The firewall plugin's commands (iptables backend): let container traffic through FORWARD.

Each container's addresses are recorded before its rules are committed, so DEL removes exactly its
rules even without prevResult (the reference leaks them then). ``CNI-FORWARD``, its jump from
``FORWARD`` and the isolation chains are removed in the commit that removes the last container rule
that needed them; the admin chain belongs to the administrator and is only deleted when it is empty.
"""
from __future__ import annotations

import sys

from cni import faults, skel
from cni.errors import INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, CNIError
from cni.records import Attachment, RecordStore, state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from chains.table import Tx
    from cni.skel import Request

OWNER = "firewall"
VERSIONS = ("0.4.0", "1.0.0", "1.1.0")


def _store(req: Request) -> RecordStore:
    return RecordStore(state_dir(req.config), OWNER)


def container_ips(prev: dict[str, Any], ifname: str) -> dict[int, list[str]]:
    """The container's addresses by family: those on ``ifname`` in a sandbox, or without an index."""
    interfaces = prev.get("interfaces") or []
    found: dict[int, list[str]] = {}
    for ip in prev.get("ips") or []:
        index = ip.get("interface")
        if index is not None:
            if not (0 <= index < len(interfaces)) or interfaces[index].get("name") != ifname \
                    or not interfaces[index].get("sandbox"):
                continue
        address = ip["address"].split("/")[0]
        found.setdefault(6 if ":" in address else 4, []).append(address)
    return found


def _bridge_of(prev: dict[str, Any]) -> str:
    interfaces = prev.get("interfaces") or []
    return str(interfaces[0].get("name", "")) if interfaces else ""


def _stage_add(tx: Tx, admin: str, ips: list[str], policy: str, bridge: str) -> None:
    from firewall import rules  # noqa: PLC0415

    rules.forward_chain().ensure(tx)
    rules.admin_chain(admin).ensure(tx)
    if policy in ("same-bridge", "isolated") and bridge:
        stage1, stage2 = rules.isolation_chains(policy)
        stage2.ensure(tx)
        stage1.ensure(tx)
        top, returns = rules.isolation_rules(policy, bridge)
        for rule in top:
            if not tx.has_rule(rule):
                tx.insert(rule, 1)
        for rule in returns:
            if not tx.has_rule(rule):
                tx.append(rule)
    for ip in ips:
        for rule in rules.container_rules(ip):
            if not tx.has_rule(rule):
                tx.append(rule)


def _stage_del(tx: Tx, admin: str, ips: list[str]) -> None:
    from firewall import rules  # noqa: PLC0415

    if not tx.has_chain(rules.FORWARD_CHAIN):
        return
    for ip in ips:
        for rule in rules.container_rules(ip):
            while tx.delete_rule(rule):  # duplicates too, should anything have made them
                pass
    _remove_unused_shared(tx, admin)


def _remove_unused_shared(tx: Tx, admin: str) -> None:
    """When CNI-FORWARD holds nothing but jumps to admin chains, no container needs it any more."""
    from firewall import rules  # noqa: PLC0415

    admin_jumps = tx.find_jumps(rules.FORWARD_CHAIN, admin) if tx.has_chain(admin) else []
    if tx.rule_count(rules.FORWARD_CHAIN) != len(admin_jumps):
        return
    rules.forward_chain().remove(tx)  # its jumps, then the chain with the admin jump in it
    if tx.has_chain(admin) and tx.rule_count(admin) == 0 and tx.references(admin) == 0:
        tx.delete_chain(admin)
    for chain in (rules.STAGE1, rules.STAGE2):
        if tx.has_chain(chain):
            for entry in ("FORWARD", rules.STAGE1):
                if tx.has_chain(entry):
                    for number in reversed(tx.find_jumps(entry, chain)):
                        tx.delete_rule_at(entry, number)
    for chain in (rules.STAGE1, rules.STAGE2):
        if tx.has_chain(chain) and tx.references(chain) == 0:
            tx.delete_chain(chain)


def cmd_add(req: Request) -> dict[str, Any]:
    from chains import table  # noqa: PLC0415
    from firewall import config  # noqa: PLC0415

    conf = config.load(req.config)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "missing prevResult from earlier plugin")
    ips = container_ips(req.prev_result, req.ifname)
    bridge = _bridge_of(req.prev_result)
    store, att = _store(req), Attachment(req.network, req.container_id, req.ifname)
    previous = _load(store, att)
    recorded = {str(f): sorted(set(ips.get(f, [])) | set(previous.get("ips", {}).get(str(f), []))) for f in (4, 6)}
    store.save(att, {"ips": recorded, "admin": conf.iptablesAdminChainName})
    faults.point("firewall.add.after-record")
    try:
        for family in (4, 6):
            stale = [ip for ip in recorded[str(family)] if ip not in ips.get(family, [])]
            if stale:
                table.apply(family, "filter", lambda tx, s=stale: _stage_del(tx, conf.iptablesAdminChainName, s))
            if ips.get(family):
                table.apply(family, "filter", lambda tx, f=family: _stage_add(
                    tx, conf.iptablesAdminChainName, ips[f], conf.ingressPolicy or "open", bridge))
    except BaseException:
        _undo(store, att, recorded, conf.iptablesAdminChainName)
        raise
    store.save(att, {"ips": {str(f): ips.get(f, []) for f in (4, 6)}, "admin": conf.iptablesAdminChainName})
    return req.prev_result


def _load(store: RecordStore, att: Attachment) -> dict[str, Any]:
    try:
        return store.load(att) or {}
    except CNIError as err:
        print(f"firewall: {err}", file=sys.stderr)
        return {}


def _undo(store: RecordStore, att: Attachment, recorded: dict[str, list[str]], admin: str) -> None:
    from chains import table  # noqa: PLC0415

    try:
        for family in (4, 6):
            if recorded[str(family)]:
                table.apply(family, "filter", lambda tx, f=family: _stage_del(tx, admin, recorded[str(f)]))
        store.delete(att)
    except Exception as exc:  # the ADD's own error matters more; the record stays for DEL
        print(f"firewall: cleanup after failed ADD incomplete: {exc}", file=sys.stderr)


def cmd_del(req: Request) -> None:
    from chains import table  # noqa: PLC0415

    store, att = _store(req), Attachment(req.network, req.container_id, req.ifname)
    record = _load(store, att)
    if record:
        ips = {int(f): list(v) for f, v in record.get("ips", {}).items()}
        admin = str(record.get("admin") or "CNI-ADMIN")
    elif req.prev_result is not None:  # no (or a corrupt) record: fall back to what the runtime says
        ips = container_ips(req.prev_result, req.ifname)
        admin = str(req.config.get("iptablesAdminChainName") or "CNI-ADMIN")
    else:
        return  # nothing recorded means nothing of ours was ever committed
    for family, addresses in sorted(ips.items()):
        if addresses and family in (4, 6):
            table.apply(family, "filter", lambda tx, a=addresses: _stage_del(tx, admin, a))
    store.delete(att)


def cmd_check(req: Request) -> None:
    from chains import table  # noqa: PLC0415
    from chains.rule import render_body  # noqa: PLC0415
    from firewall import config, rules  # noqa: PLC0415

    conf = config.load(req.config)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing")
    admin = conf.iptablesAdminChainName

    def inspect(tx: Tx, ips: list[str]) -> list[str]:
        problems = rules.forward_chain().check(tx) + rules.admin_chain(admin).check(tx)
        for ip in ips:
            problems += [f"expected rule [{render_body(r).strip()}] not found" for r in rules.container_rules(ip)
                         if not tx.has_chain(rules.FORWARD_CHAIN) or not tx.has_rule(r)]
        return problems

    for family, ips in sorted(container_ips(req.prev_result, req.ifname).items()):
        problems = table.read(family, "filter", lambda tx, i=ips: inspect(tx, i))
        if problems:
            raise CNIError(INTERNAL, "; ".join(problems))


def cmd_gc(req: Request) -> None:
    from chains import table  # noqa: PLC0415
    from cni.gc import valid_attachments  # noqa: PLC0415

    valid = valid_attachments(req.config)
    store = _store(req)
    errors = []
    for att in list(store.attachments(req.network)):
        if (att.container_id, att.ifname) in valid:
            continue
        try:
            record = _load(store, att)
            admin = str(record.get("admin") or "CNI-ADMIN")
            for family, addresses in record.get("ips", {}).items():
                if addresses:
                    table.apply(int(family), "filter", lambda tx, a=addresses: _stage_del(tx, admin, a))
            store.delete(att)
        except Exception as exc:  # report and continue with the others
            errors.append(f"{att.container_id}/{att.ifname}: {exc}")
    if errors:
        raise CNIError(INTERNAL, "firewall GC incomplete", "; ".join(errors))


def cmd_status(req: Request) -> None:
    from chains import table  # noqa: PLC0415

    try:
        table.read(4, "filter", lambda tx: tx.has_chain("FORWARD"))
    except Exception as exc:  # noqa: BLE001 - any failure means ADD cannot work now
        raise CNIError(NOT_AVAILABLE, f"iptables filter table is not usable: {exc}") from None


PLUGIN = skel.Plugin(name="firewall", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc, status=cmd_status,
                     versions=VERSIONS)


def main() -> None:
    skel.run(PLUGIN)
