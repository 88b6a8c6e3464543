"""``cnictl show`` and ``cnictl gc --dry-run``: what this node's attachments own, and whether it is still there.

Everything comes from what the plugins and the runtime already keep on disk: the ownership records
of every record-keeping plugin of a network (``cni.records``, in the state directory its plugin config
names) and libcni's result cache (``cnictl.cache``). Each attachment is then checked against the live
node by its plugins' own ``drift.inspect`` (which uses the same code as their CHECK), so ``show``
reports exactly what CHECK would, per attachment, for the whole node at once.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from cni import records
from cni.errors import CNIError
from cnictl import cache, config
from cnictl.config import NetworkList
from cnictl.errors import CacheError, CnictlError

# The plugins that keep ownership records, and the module that compares a record with the node.
DRIFT_MODULES = {"bridge": "bridge.drift", "portmap": "portmap.drift", "firewall": "firewall.drift",
                 "ptp": "ptp.drift", "host-device": "hostdevice.drift"}
DEFAULT_BACKEND = "iptables"
EXIT_DRIFT = 3  # 1 stays "cnictl itself failed"
FOREIGN = ("another boot", "another network namespace")


@dataclass
class HostPort:
    protocol: str
    hostPort: int  # noqa: N815 - the JSON key
    holder: str | None = None  # network/containerID/ifname of the claim's holder; None: no claim
    contested: bool = False  # another attachment holds the port and receives its traffic


@dataclass
class AttachmentView:
    """One attachment as ``show`` reports it (the JSON object, field for field)."""

    network: str
    containerID: str  # noqa: N815
    ifname: str
    netns: str = ""
    addresses: list[str] = field(default_factory=list)
    hostLink: str = ""  # noqa: N815
    bridge: str = ""
    hostPorts: list[HostPort] = field(default_factory=list)  # noqa: N815
    backend: str = DEFAULT_BACKEND
    chains: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)  # the plugins that keep a record of it
    cached: bool = False  # the runtime's result cache knows it
    origin: str = "current"  # or "unknown" (records older than origins), or one of FOREIGN
    problems: list[str] = field(default_factory=list)

    @property
    def owner(self) -> str:
        return f"{self.network}/{self.containerID}/{self.ifname}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = "drift" if self.problems else "ok"
        return out


# --------------------------------------------------------------------------- show

def networks(conf_dir: str, name: str | None) -> list[NetworkList]:
    if name:
        return [config.find(name, conf_dir)]
    names = config.names(conf_dir)
    if not names:
        missing = "" if os.path.isdir(conf_dir) else " (the directory does not exist)"
        raise CnictlError(f"no network configurations found in {conf_dir}{missing}")
    return [config.find(n, conf_dir) for n in names]


def collect(nets: list[NetworkList], cache_dir: str) -> list[AttachmentView]:
    """Every attachment of ``nets`` that has a record or a cache entry, each checked against the node."""
    entries = _cache_entries(cache_dir)
    views: list[AttachmentView] = []
    for net in nets:
        views += _network_views(net, [e for e in entries if e.network_name == net.name])
    return views


def _cache_entries(cache_dir: str) -> list[cache.CacheEntry]:
    try:
        return cache.attachments(cache_dir)
    except CacheError as exc:
        raise CnictlError(str(exc)) from None


def _network_views(net: NetworkList, entries: list[cache.CacheEntry]) -> list[AttachmentView]:
    from cnictl import runtime  # noqa: PLC0415

    views: dict[tuple[str, str], AttachmentView] = {}
    cached = {(e.container_id, e.ifname): e for e in entries}

    def view_of(container_id: str, ifname: str) -> AttachmentView:
        if (container_id, ifname) not in views:
            views[(container_id, ifname)] = AttachmentView(net.name, container_id, ifname)
        return views[(container_id, ifname)]

    for (container_id, ifname), entry in cached.items():
        view = view_of(container_id, ifname)
        view.cached = True
        view.netns = entry.netns
        view.addresses = [str(ip.get("address")) for ip in (entry.result or {}).get("ips") or []
                          if isinstance(ip, dict) and ip.get("address")]
    claim_holders: dict[str, dict[str, tuple[str, Any]]] = {}
    keepers = [(i, net.plugin_type(i)) for i in range(len(net.plugins)) if net.plugin_type(i) in DRIFT_MODULES]
    for index, kind in keepers:
        try:
            root = records.state_dir(net.plugins[index])
        except CNIError as err:
            raise CnictlError(f'network "{net.name}", plugin {kind}: {err.msg}') from None
        store = records.RecordStore(root, kind)
        drift = importlib.import_module(DRIFT_MODULES[kind])
        for att in store.attachments(net.name):
            view = view_of(att.container_id, att.ifname)
            try:
                record = store.load(att)
            except CNIError as err:
                view.problems.append(f"{kind}: {err.msg}")
                continue
            if record is None:
                continue
            view.plugins.append(kind)
            view.backend = _joined(view.backend if len(view.plugins) > 1 else "", _record_backend(record))
            origin = records.origin_of(record)
            if origin in FOREIGN:
                view.origin = origin
                view.problems.append(f"{kind}: record written in {origin}: nothing it names exists here "
                                     "(GC removes it)")
                continue
            if origin == "unknown" and view.origin == "current":
                view.origin = origin
            _describe(view, kind, record, root, claim_holders)
            view.chains += drift.chains(att, record)
            entry = cached.get((att.container_id, att.ifname))
            request = runtime.build_request(net, index, _prev_result(net, entry),
                                            entry.capability_args if entry else None)
            try:
                found = drift.inspect(att, record, request, entry.netns if entry else None)
            except Exception as exc:  # noqa: BLE001 - one attachment's failure must not hide the others
                found = [f"cannot inspect: {exc}"]
            view.problems += [f"{kind}: {text}" for text in found]
    if any(kind == "bridge" for _, kind in keepers):
        for key in cached:
            if "bridge" not in views[key].plugins and views[key].origin not in FOREIGN:
                views[key].problems.append("bridge: the runtime's cache names this attachment but bridge keeps "
                                           "no record of it")
    return sorted(views.values(), key=lambda v: (v.containerID, v.ifname))


def _record_backend(record: dict[str, Any]) -> str:
    """The backend holding a record's rules: ``backend`` (portmap, firewall) or ``ipMasqBackend`` (bridge);
    records from before backends existed hold iptables rules."""
    return str(record.get("backend") or record.get("ipMasqBackend") or DEFAULT_BACKEND)


def _joined(shown: str, backend: str) -> str:
    """Plugins of one attachment on different backends show as ``iptables,nftables``."""
    names = set(shown.split(",")) - {""} | {backend}
    return ",".join(sorted(names))


def _prev_result(net: NetworkList, entry: cache.CacheEntry | None) -> dict[str, Any] | None:
    if entry is None or not entry.result:
        return None
    from cnictl import runtime  # noqa: PLC0415

    try:
        return runtime.convert_result(entry.result, net.cni_version)
    except CNIError:
        return entry.result


def _describe(view: AttachmentView, kind: str, record: dict[str, Any], root: str,
              claim_holders: dict[str, dict[str, tuple[str, Any]]]) -> None:
    """Fill in what the plugin's record says about the attachment."""
    if kind in ("bridge", "ptp"):
        view.hostLink = str(record.get("hostVeth") or "")
        view.bridge = str(record.get("bridge") or "")
        if record.get("ips"):
            view.addresses = [str(ip) for ip in record["ips"]]
    elif kind == "portmap":
        if root not in claim_holders:
            from portmap import claims  # noqa: PLC0415

            claim_holders[root] = claims.holders(root)
        view.hostPorts = _host_ports(view.owner, record, claim_holders[root])


def _host_ports(owner: str, record: dict[str, Any], holders: dict[str, tuple[str, Any]]) -> list[HostPort]:
    """Each hostPort the record maps, with who holds its claim. Claim keys are
    ``<family>-<protocol>-<hostIP>-<port>``; a foreign claim is a dead holder's and counts for nobody."""
    ports = []
    for text in dict.fromkeys(str(p) for p in record.get("hostPorts") or []):
        protocol, _, number = text.partition("/")
        if not number.isdigit():
            continue
        names = []
        for key, (name, origin) in holders.items():
            parts = key.split("-")
            if len(parts) == 4 and parts[1] == protocol and parts[3] == number \
                    and records.same_origin(origin, records.current_origin()):
                names.append(name)
        holder = owner if owner in names else (names[0] if names else None)
        ports.append(HostPort(protocol, int(number), holder, holder not in (None, owner)))
    return ports


def render_table(views: list[AttachmentView]) -> str:
    """The human-readable table: one row per attachment, its chains and what drifted indented below."""
    header = ("NETWORK", "CONTAINER", "IFNAME", "ADDRESSES", "HOST LINK", "HOSTPORTS", "BACKEND", "STATUS")
    rows = [header]
    for view in views:
        rows.append((view.network, view.containerID, view.ifname, ",".join(view.addresses) or "-",
                     view.hostLink or "-", ",".join(_port_text(view, p) for p in view.hostPorts) or "-",
                     view.backend, "DRIFT" if view.problems else "ok"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if number == 0:
            continue
        view = views[number - 1]
        if view.chains:
            lines.append(f"    chains: {' '.join(view.chains)}")
        if view.origin != "current":
            lines.append(f"    origin: {view.origin}")
        lines += [f"    drift: {text}" for text in view.problems]
    if not views:
        lines.append("(no attachments)")
    return "\n".join(lines)


def _port_text(view: AttachmentView, port: HostPort) -> str:
    text = f"{port.hostPort}/{port.protocol}"
    if port.contested and port.holder:
        network, _, rest = port.holder.partition("/")
        holder = rest if network == view.network else port.holder
        return f"{text} (held by {holder})"
    return text


def render_json(views: list[AttachmentView]) -> str:
    return json.dumps({"ok": not any(v.problems for v in views), "attachments": [v.to_json() for v in views]},
                      indent=2)


# --------------------------------------------------------------------------- gc --dry-run

@dataclass
class Removal:
    """One thing ``cnictl gc`` would remove."""

    action: str  # "DEL": the whole attachment, through every plugin; "GC": what one plugin keeps of it
    containerID: str  # noqa: N815
    ifname: str
    plugin: str = ""
    reason: str = ""
    what: str = ""  # e.g. "reservation 10.88.0.5"; default: the plugin's record

    def text(self) -> str:
        what = "attachment" if self.action == "DEL" else f"{self.plugin} {self.what or 'record'} of"
        return f"{self.action}  {what} {self.containerID}/{self.ifname}: {self.reason}"


def gc_plan(net: NetworkList, cache_dir: str, valid: list[tuple[str, str]]) -> list[Removal]:
    """What ``cnictl gc`` (runtime.Runtime.gc) would remove for ``net`` with these valid attachments."""
    from cni import version as versions  # noqa: PLC0415
    from cni.gc import collectable  # noqa: PLC0415

    if net.disable_gc:
        return []
    keep = set(valid)
    plan = [Removal("DEL", e.container_id, e.ifname, reason=f"cached by the runtime, not valid (netns "
                    f"{e.netns or 'unknown'})")
            for e in _cache_entries(cache_dir) if e.network_name == net.name and (e.container_id, e.ifname) not in keep]
    if not versions.at_least(net.cni_version, "1.1.0"):
        return plan  # the plugins are sent GC only from 1.1.0 on
    deleted = {(r.containerID, r.ifname) for r in plan}
    for index in range(len(net.plugins)):
        kind = net.plugin_type(index)
        ipam = net.plugins[index].get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            plan += _reservations_plan(net, index, keep, deleted)
        if kind not in DRIFT_MODULES:
            continue
        try:
            store = records.RecordStore(records.state_dir(net.plugins[index]), kind)
        except CNIError as err:
            raise CnictlError(f'network "{net.name}", plugin {kind}: {err.msg}') from None
        for att, foreign in collectable(store, net.name, keep):
            if (att.container_id, att.ifname) in deleted:
                continue  # the DEL before the GC removes the record
            reason = _foreign_reason(store, att) if foreign else "not in the valid set"
            plan.append(Removal("GC", att.container_id, att.ifname, kind, reason))
    return plan


def _reservations_plan(net: NetworkList, index: int, keep: set[tuple[str, str]],
                       deleted: set[tuple[str, str]]) -> list[Removal]:
    """The host-local reservations the plugin's IPAM GC would free (hostlocal.store.collect_garbage's rule:
    a bare-ID reservation of an old version stays while any valid attachment has that container ID)."""
    from cnictl import runtime  # noqa: PLC0415
    from hostlocal.config import state_dir_of  # noqa: PLC0415
    from hostlocal.store import Store  # noqa: PLC0415

    try:
        store = Store(state_dir_of(runtime.build_request(net, index)))
    except CNIError as err:
        raise CnictlError(f'network "{net.name}", plugin {net.plugin_type(index)}: ipam: {err.msg}') from None
    if not store.exists():
        return []
    valid_ids = {container_id for container_id, _ in keep}
    plan = []
    for reservation in sorted(store.snapshot().reservations.values(), key=lambda r: (r.address.version, r.address)):
        owner = reservation.owner
        if owner.ifname is None:
            if owner.container_id in valid_ids:
                continue
        elif (owner.container_id, owner.ifname) in keep | deleted:
            continue  # valid, or released by the attachment's DEL
        plan.append(Removal("GC", owner.container_id, owner.ifname or "*", "host-local", "not in the valid set",
                            f"reservation {reservation.address}"))
    return plan


def _foreign_reason(store: records.RecordStore, att: records.Attachment) -> str:
    try:
        data = store.load(att) or {}
    except CNIError:
        data = {}
    return f"written in {records.origin_of(data)}; only the record goes, no table is touched"
