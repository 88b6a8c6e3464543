"""The firewall plugin's commands (iptables backend): let container traffic through FORWARD.

Each container's addresses (and isolation pairs) are recorded before its rules are committed, so
DEL removes exactly its rules even without prevResult (the reference leaks them then), repeatedly,
and after a crash half-way through ADD. ``CNI-FORWARD``, its jump from ``FORWARD`` and the isolation
chains are removed in the commit that removes the last container rule that needed them; the admin
chain is the administrator's and is only deleted when it is empty and unreferenced (firewall.apply).
"""
from __future__ import annotations

import sys

from cni import faults, log, skel
from cni.errors import INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, CNIError
from cni.records import Attachment
from firewall.ownership import FAMILIES, Holdings, claims, empty, load_reporting, recorded_backend, save, store_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import RecordStore
    from cni.skel import Request
    from firewall.config import FirewallConf

VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LAYOUTS = {"iptables": "firewall.apply", "nftables": "firewall.nft"}


def _layout(backend: str) -> Any:
    """The module that lays out the firewall's rules on ``backend`` (same functions on each)."""
    from chains.backends import layout  # noqa: PLC0415

    return layout(LAYOUTS, backend)


def _backend(conf: FirewallConf) -> str:
    from chains.backends import resolve  # noqa: PLC0415

    return resolve(conf.backend or None)


def _wanted(policy: str, isolating: bool, prev: dict[str, Any], ifname: str) -> dict[int, Holdings]:
    """What the container needs per family: its addresses, and its bridge's isolation where it has any."""
    from firewall import prevresult  # noqa: PLC0415

    addresses = prevresult.container_addresses(prev, ifname)
    pairs = [(prevresult.bridge_name(prev, policy), policy)] if isolating and addresses else []
    return {family: Holdings(addresses.get(family, []), pairs if addresses.get(family) else [])
            for family in FAMILIES}


def _wanted_checked(conf: FirewallConf, prev: dict[str, Any], ifname: str) -> dict[int, Holdings]:
    """:func:`_wanted`, with every rule built once so that a bad value fails before anything is written."""
    want = _wanted(conf.ingressPolicy, conf.isolating, prev, ifname)
    layout = _layout(_backend(conf))
    try:
        for holdings in want.values():
            layout.build_rules(conf.admin_chain, holdings)
    except ValueError as exc:
        raise CNIError(INVALID_CONFIG, f"invalid firewall input: {exc}") from None
    return want


def _apply(family: int, store: RecordStore, exclude: set[Attachment], drop: Holdings,
           want: Holdings | None = None, admin: str | None = None, backend: str = "iptables") -> None:
    """One transaction on the backend's tables: drop what is no longer held, add what is wanted.

    What the other attachments hold (on the same backend) is read inside the transaction, under its lock."""
    changes = _layout(backend).commit(family, drop, lambda f: claims(store, exclude, f, backend), want, admin)
    if changes:  # (the iptables layer logs its own commits)
        log.debug("rules committed", backend=backend, family=family, rules=changes)


def cmd_add(req: Request) -> dict[str, Any]:
    from firewall import config  # noqa: PLC0415

    conf = config.load(req.config)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "missing prevResult from earlier plugin")
    backend = _backend(conf)
    want = _wanted_checked(conf, req.prev_result, req.ifname)
    store, att = store_for(req.config), Attachment.of(req)
    previous = load_reporting(store, att) or empty()
    previous_backend = recorded_backend(store, att) or backend
    if previous_backend != backend and any(previous.values()):
        # The config moved to the other backend since the earlier ADD: its rules leave the old one first.
        for family in FAMILIES:
            if previous[family]:
                _apply(family, store, {att}, previous[family], backend=previous_backend)
        previous = empty()
    stale = {family: previous[family] - want[family] for family in FAMILIES}
    # Until the commits are done the record covers both the old and the new rules.
    save(store, att, {family: previous[family] | want[family] for family in FAMILIES}, backend)
    faults.point("firewall.add.after-record")
    try:
        committed = 0
        for family in FAMILIES:
            if stale[family] or want[family]:
                _apply(family, store, {att}, stale[family], want[family], conf.admin_chain, backend)
                committed += 1
                if committed == 1:
                    faults.point("firewall.add.after-first-family")
    except BaseException:
        _undo(store, att, backend)
        raise
    faults.point("firewall.add.after-rules")
    save(store, att, want, backend)
    return req.prev_result


def _undo(store: RecordStore, att: Attachment, backend: str) -> None:
    """Take out whatever the record covers after a failed ADD: no partial rules stay behind."""
    try:
        held = load_reporting(store, att) or empty()
        for family in FAMILIES:
            if held[family]:
                _apply(family, store, {att}, held[family], backend=backend)
        store.delete(att)
    except Exception as exc:  # the ADD's own error matters more; the record stays for DEL
        print(f"firewall: cleanup after failed ADD incomplete: {exc}", file=sys.stderr)
        log.warning("cleanup incomplete", msg=f"cleanup after failed ADD incomplete: {exc}")


def _fallback_holdings(req: Request) -> dict[int, Holdings]:
    """Without a (readable) record: what prevResult says the container had, as the reference does."""
    from firewall.rules import ISOLATING_POLICIES, OPEN  # noqa: PLC0415

    if req.prev_result is None:
        return empty()
    policy = req.config.get("ingressPolicy")  # not validated: a DEL must not fail on its config
    isolating = policy in ISOLATING_POLICIES
    try:
        return _wanted(str(policy), isolating, req.prev_result, req.ifname)
    except CNIError:
        if not isolating:
            raise
        return _wanted(OPEN, False, req.prev_result, req.ifname)  # no bridge named: addresses only


def cmd_del(req: Request) -> None:
    from chains.backends import NAMES  # noqa: PLC0415

    store, att = store_for(req.config), Attachment.of(req)
    held = load_reporting(store, att)
    backends: tuple[str, ...] = (recorded_backend(store, att) or "iptables",)
    if held is None:
        held = _fallback_holdings(req)
        backends = NAMES  # without a (readable) record, both backends are swept
        if not any(held[family] for family in FAMILIES):
            log.info("nothing to remove", reason="no record of this attachment and no addresses in prevResult")
    for family in FAMILIES:
        if held[family]:
            for backend in backends:
                _apply(family, store, {att}, held[family], backend=backend)
    faults.point("firewall.del.after-rules")
    store.delete(att)


def cmd_check(req: Request) -> None:
    from firewall import config  # noqa: PLC0415

    conf = config.load(req.config)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing")
    want = _wanted_checked(conf, req.prev_result, req.ifname)
    # The rules are checked where ADD put them.
    layout = _layout(recorded_backend(store_for(req.config), Attachment.of(req)) or _backend(conf))
    problems: list[str] = []
    for family in FAMILIES:
        if want[family].addresses:
            problems += layout.check(family, conf.admin_chain, want[family])
    if problems:
        raise CNIError(INTERNAL, "; ".join(problems))


def cmd_gc(req: Request) -> None:
    """Remove the rules and records of this network's attachments the runtime no longer has."""
    from cni.gc import collectable, valid_attachments  # noqa: PLC0415

    valid = valid_attachments(req.config)
    store = store_for(req.config)
    stale = [att for att, _foreign in collectable(store, req.network, valid)]  # a foreign one holds nothing
    if not stale:
        return
    drops = {backend: empty() for backend in ("iptables", "nftables")}
    for att in stale:  # a corrupt record is reported; its rules cannot be told apart, it goes all the same
        held = load_reporting(store, att) or empty()
        backend = recorded_backend(store, att) or "iptables"
        drops[backend] = {family: drops[backend][family] | held[family] for family in FAMILIES}
    for backend, drop in drops.items():
        for family in FAMILIES:
            if drop[family]:
                _apply(family, store, set(stale), drop[family], backend=backend)
    for att in stale:
        store.delete(att)


def cmd_status(req: Request) -> None:
    from firewall import config  # noqa: PLC0415

    backend = _backend(config.load(req.config))
    try:
        _layout(backend).status()
    except Exception as exc:  # noqa: BLE001 - any failure means ADD cannot work now
        what = "iptables filter table" if backend == "iptables" else "nftables"
        raise CNIError(NOT_AVAILABLE, f"{what} is not usable: {exc}") from None


PLUGIN = skel.Plugin(name="firewall", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc, status=cmd_status,
                     versions=VERSIONS)


def main() -> None:
    skel.run(PLUGIN)
