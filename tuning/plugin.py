"""The tuning plugin's commands: a chained meta plugin that adjusts the container's interface.

ADD validates the whole configuration first, reads the values it is about to change and writes
them to an ownership record *before* changing anything, then applies the sysctls and the link
attributes; if any change is refused, everything already changed is put back and the record is
removed again. It passes prevResult through, with the interface's MAC updated when it set one.
DEL puts the recorded values back (what is gone with the namespace or the interface is skipped)
and removes the record; unlike the reference it also restores sysctls. CHECK compares every
configured value with what the container has and names each difference.
"""
from __future__ import annotations

import sys

from cni import args as cni_args
from cni import skel
from cni.errors import INTERNAL, INVALID_CONFIG, UNKNOWN_CONTAINER, CNIError
from cni.records import Attachment, RecordStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.skel import Request
    from tuning.config import TuningConf

OWNER = "tuning"
# MAC is the reference's own CNI_ARGS key; IP is the main plugin's, so a chain passing it works.
KNOWN_ARGS = frozenset({"MAC", "IP"}) | cni_args.KUBERNETES_KEYS


def _load_conf(req: Request) -> TuningConf:
    from tuning import config  # noqa: PLC0415

    cni_args.check_known(req.cni_args, KNOWN_ARGS)
    conf = config.load(req.config, req.ifname, req.cni_args, req.stdin)
    config.check_allowlist(conf)
    return conf


def _require_netns(req: Request) -> None:
    from netlink import netns  # noqa: PLC0415

    if not netns.is_netns(req.netns):
        raise CNIError(UNKNOWN_CONTAINER, f"failed to open netns {req.netns!r}: not a network namespace")


def _with_mac(prev: dict[str, Any], ifname: str, netns: str, mac: str) -> dict[str, Any]:
    """prevResult with the container interface's MAC replaced (by name, in this sandbox or none)."""
    for iface in prev.get("interfaces") or []:
        if iface.get("name") == ifname and iface.get("sandbox") in (None, "", netns):
            iface["mac"] = mac
    return prev


def cmd_add(req: Request) -> dict[str, Any]:
    conf = _load_conf(req)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing")
    _require_netns(req)
    if conf.empty:
        return req.prev_result
    from tuning import apply  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    store, att = RecordStore.of(req, OWNER), Attachment.of(req)
    with Netlink.open(req.netns) as nl:
        link = apply.find_link(nl, req.ifname) if conf.changes_link else None
        old_sysctls = apply.read_sysctls(req.netns, list(conf.sysctl))
        old_link = {}
        if link is not None:
            current = apply.link_values(link)
            old_link = {name: current[name] for name in apply.wanted_link_values(conf)}
        previous = _previous_record(store, att)
        record = _merged_record(previous, req.netns, old_sysctls, old_link)
        store.save(att, record)  # before anything changes: a crash from here on is undone by DEL
        try:
            apply.write_sysctls(req.netns, conf.sysctl)
            if link is not None:
                apply.set_link_values(nl, link, apply.wanted_link_values(conf))
        except BaseException:
            # Back to the values this ADD found (an earlier ADD's changes stay, with its record).
            _undo_add(req, store, att, {"sysctl": old_sysctls, "link": old_link}, previous)
            raise
    if conf.mac:
        return _with_mac(req.prev_result, req.ifname, req.netns, conf.mac)
    return req.prev_result


def _previous_record(store: RecordStore, att: Attachment) -> dict[str, Any] | None:
    try:
        return store.load(att)
    except CNIError as err:
        print(f"tuning: {err}; starting a new record", file=sys.stderr)
        return None


def _merged_record(previous: dict[str, Any] | None, netns: str, sysctls: dict[str, str],
                   link: dict[str, Any]) -> dict[str, Any]:
    """The values to restore on DEL. A repeated ADD keeps the values recorded by the first one:
    those are the originals, the current ones may be its own."""
    old_sysctls = dict(sysctls)
    old_link = dict(link)
    if previous and previous.get("netns") == netns:
        if isinstance(previous.get("sysctl"), dict):
            old_sysctls.update(previous["sysctl"])
        if isinstance(previous.get("link"), dict):
            old_link.update(previous["link"])
    return {"netns": netns, "sysctl": old_sysctls, "link": old_link}


def _undo_add(req: Request, store: RecordStore, att: Attachment, found: dict[str, Any],
              previous: dict[str, Any] | None) -> None:
    """Best effort after a failed ADD: put back the values it ``found``, then the record as it was."""
    from tuning import apply  # noqa: PLC0415

    try:
        failures = apply.restore(req.netns, req.ifname, found)
        if failures:
            print(f"tuning: could not put back after the failed ADD: {'; '.join(failures)}", file=sys.stderr)
            return  # the record stays, so a DEL can try again
        if previous:
            store.save(att, previous)
        else:
            store.delete(att)
    except Exception as exc:  # the original error matters more
        print(f"tuning: cleanup after failed ADD incomplete: {exc}", file=sys.stderr)


def cmd_del(req: Request) -> None:
    store, att = RecordStore.of(req, OWNER), Attachment.of(req)
    try:
        record = store.load(att)
    except CNIError as err:  # nothing trustworthy to restore; the record must not block DEL forever
        print(f"tuning: {err}; removing it without restoring", file=sys.stderr)
        store.delete(att)
        return
    if record is None:
        return  # nothing was changed, or it was put back already
    from tuning import apply  # noqa: PLC0415

    failures = apply.restore(req.netns, req.ifname, record)
    if failures:
        raise CNIError(INTERNAL, f"tuning: failed to restore {req.ifname}", "; ".join(failures))
    store.delete(att)


def cmd_check(req: Request) -> None:
    conf = _load_conf(req)
    if req.prev_result is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing")
    _require_netns(req)
    from tuning import apply  # noqa: PLC0415

    found = apply.differences(req.netns, req.ifname, conf)
    if found:
        raise CNIError(INTERNAL, f"tuning: {req.ifname} differs from the configuration: " + "; ".join(found))


def cmd_gc(req: Request) -> None:
    """Drop the records of attachments the runtime no longer lists (their namespaces are gone)."""
    from cni.gc import valid_attachments  # noqa: PLC0415

    valid = valid_attachments(req.config)
    store = RecordStore.of(req, OWNER)
    for att in list(store.attachments(req.network)):
        if (att.container_id, att.ifname) not in valid:
            store.delete(att)


PLUGIN = skel.Plugin(name="tuning", add=cmd_add, delete=cmd_del, check=cmd_check, gc=cmd_gc)


def main() -> None:
    skel.run(PLUGIN)
