"""The host-local IPAM plugin: ADD / DEL / CHECK / GC / STATUS handlers and ``main()``.

``PLUGIN`` is what the launcher and ``cni.invoke`` run (in-process delegation goes through
``cni.skel.execute(PLUGIN, env, stdin)``). The handlers are also plain functions of a request
(``cni.skel.Request`` or anything with the same attributes: ``container_id``, ``ifname``,
``cni_args``, ``config``, ``cni_version`` and, for CHECK, optionally ``prev_result``), so they
can be called directly. Failures are raised as ``CNIError``.

Error codes:
- 7 INVALID_CONFIG: bad IPAM config; requested gateway; requested IP outside every range set.
- 4 INVALID_ENV: bad CNI_ARGS (unknown keys, unparsable ``IP=``).
- 5 IO_FAILURE: the store or resolvConf cannot be read / written; GC problems.
- 11 TRY_AGAIN_LATER: a range set is exhausted, or a requested IP is held by someone else.
- 50 NOT_AVAILABLE: STATUS when the data directory cannot be written.
- 999 INTERNAL: duplicate ADD for an attachment; CHECK finding no reservation (the reference's
  generic code; no spec code fits either).
"""
from __future__ import annotations

import os

from cni import faults, log
from cni.errors import INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, CNIError
from cni.skel import Plugin, run
from hostlocal.addresses import parse_cidr
from hostlocal.allocator import allocate
from hostlocal.config import load_ipam_config, state_dir_of
from hostlocal.dns import parse_resolv_conf
from hostlocal.store import Owner, Store, warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Protocol

    from hostlocal.addresses import IPAddress
    from hostlocal.allocator import Allocation
    from hostlocal.config import IPAMConfig
    from hostlocal.store import Reservation

    class RequestLike(Protocol):
        """What the handlers read from a request (``cni.skel.Request`` has all of it)."""

        container_id: str
        ifname: str
        cni_args: dict[str, str]
        config: dict[str, Any]
        cni_version: str

RESULT_VERSION = "1.1.0"
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
LEGACY_ATTACHMENTS_KEY = "cni.dev/attachments"  # libcni also sends the misspelled key (spec #1101)


def _load(req: RequestLike) -> IPAMConfig:
    return load_ipam_config(req.config, req.cni_args, req.cni_version)


def _store(state_dir: str, config: dict[str, Any]) -> Store:
    """The network's store, indexed under the records state directory (``hostlocal.index``)."""
    return Store(state_dir, index_root=index_root(config))


def index_root(config: dict[str, Any]) -> str | None:
    """Where the store's index is kept; None (no index, every file read) when the config says nowhere
    usable: the index must never fail an operation the store alone could do."""
    from cni.records import state_dir  # noqa: PLC0415 - it imports json, which VERSION gets by without

    try:
        return state_dir(config)
    except CNIError as err:
        warn(f"not indexing reservations: {err.msg}")
        return None


def add(req: RequestLike) -> dict[str, Any]:
    """Reserve one address per range set and return a 1.1.0-shaped result."""
    conf = _load(req)
    dns = parse_resolv_conf(conf.resolv_conf) if conf.resolv_conf else {}
    store = _store(conf.state_dir, req.config)
    store.create()
    with store.locked():
        allocations = allocate(store, conf, req.container_id, req.ifname)
    faults.point("hostlocal.add.after-reserve")
    result = build_result(allocations, conf.routes, dns)
    log.debug("addresses reserved", addresses=[ip["address"] for ip in result["ips"]], dataDir=conf.state_dir)
    return result


def build_result(
    allocations: list[Allocation], routes: tuple[dict[str, Any], ...], dns: Mapping[str, Any]
) -> dict[str, Any]:
    result: dict[str, Any] = {"cniVersion": RESULT_VERSION, "ips": [a.result_ip() for a in allocations]}
    if routes:
        result["routes"] = [dict(route) for route in routes]
    if dns:
        result["dns"] = dict(dns)
    return result


def delete(req: RequestLike) -> None:
    """Release every address of (container ID, ifname); succeeds when there is nothing to release."""
    conf = _load(req)
    store = _store(conf.state_dir, req.config)
    if not store.exists():
        log.info("nothing to remove", reason=f"no reservations in {conf.state_dir}")
        return  # never created: nothing to release, and DEL should not create state
    with store.locked():
        released = store.release(req.container_id, req.ifname)
    if released:
        log.debug("addresses released", addresses=[str(address) for address in released], dataDir=conf.state_dir)
    else:
        log.info("nothing to remove", reason=f"no address reserved for this attachment in {conf.state_dir}")


def check(req: RequestLike) -> None:
    """The attachment must hold a reservation, and every address of prevResult that lies in one of
    our range sets must be reserved for it (the reference checks only the first part)."""
    conf = _load(req)
    store = _store(conf.state_dir, req.config)
    missing = CNIError(INTERNAL, f"host-local: Failed to find address added by container {req.container_id}")
    if not store.exists():
        raise missing
    with store.locked():
        held = store.reservations().held_by(Owner.attachment(req.container_id, req.ifname))
    if not held:
        raise missing
    _check_prev_result(conf, held, getattr(req, "prev_result", None), req.container_id)


def _check_prev_result(
    conf: IPAMConfig, held: list[Reservation], prev_result: Mapping[str, Any] | None, container_id: str
) -> None:
    held_addresses = {r.address for r in held}
    for address in _prev_result_addresses(prev_result):
        ours = any(s.contains(address) for s in conf.range_sets)
        if ours and address not in held_addresses:
            raise CNIError(
                INTERNAL, f"host-local: address {address} is not reserved for container {container_id}"
            )


def _prev_result_addresses(prev_result: Mapping[str, Any] | None) -> list[IPAddress]:
    out = []
    for entry in (prev_result or {}).get("ips") or []:
        try:
            address, _ = parse_cidr(entry.get("address"))
        except (ValueError, AttributeError):
            continue  # the skeleton validates prevResult; an odd entry is not ours to judge
        out.append(address)
    return out


def gc(req: RequestLike) -> None:
    """Release reservations whose attachment is not in ``cni.dev/valid-attachments``."""
    store = _store(state_dir_of(req.config), req.config)
    valid = valid_attachments(req.config)
    if not store.exists():
        return
    with store.locked():
        store.collect_garbage(valid)


def valid_attachments(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The runtime's live attachments as (containerID, ifname) pairs.

    A missing list is an error rather than "nothing is valid": GC must never free every address
    of a network because a runtime forgot the key.
    """
    raw = config.get(VALID_ATTACHMENTS_KEY, config.get(LEGACY_ATTACHMENTS_KEY))
    if raw is None:
        raise CNIError(INVALID_CONFIG, f"GC: missing {VALID_ATTACHMENTS_KEY}")
    shape_error = CNIError(
        INVALID_CONFIG, f"GC: {VALID_ATTACHMENTS_KEY} must be a list of {{containerID, ifname}} objects"
    )
    if not isinstance(raw, list):
        raise shape_error
    pairs = []
    for item in raw:
        if not isinstance(item, dict):
            raise shape_error
        container_id, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(container_id, str) or not isinstance(ifname, str):
            raise shape_error
        pairs.append((container_id, ifname))
    return pairs


def status(req: RequestLike) -> None:
    """Ready when the network's data directory exists writable or can be created."""
    state_dir = os.path.abspath(state_dir_of(req.config))
    problem = writability_problem(state_dir)
    if problem:
        raise CNIError(NOT_AVAILABLE, f"host-local: data directory {state_dir} is not usable: {problem}")


def writability_problem(path: str) -> str | None:
    """Why files cannot be created in ``path`` (or in the directory that would hold it), else None."""
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


PLUGIN = Plugin(name="host-local", add=add, delete=delete, check=check, gc=gc, status=status)


def main() -> None:
    run(PLUGIN)
