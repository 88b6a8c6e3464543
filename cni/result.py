"""Result conversion between every spec version, on plain JSON dicts.

Plugins work with one canonical shape, the 1.1.0 result (``interfaces``, ``ips`` without
``version``, ``routes``, ``dns``). ``to_canonical`` lifts any version into it and
``from_canonical`` lowers it into the version a config asks for. Dicts rather than models keep
this on the cheap path: every ADD converts a result, few need the typed models in ``cni.types``.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~2 ms to import; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

from cni import version as versions
from cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, CNIError

Result = dict  # a JSON object: dict[str, Any]

# Fields 1.1.0 added to interfaces; 0.3.x/0.4.0 results cannot carry them.
_INTERFACE_FIELDS_040 = ("name", "mac", "sandbox")


def _family_of(cidr: str) -> int:
    import ipaddress  # noqa: PLC0415 - ~5 ms; a 1.x result (loopback's ADD, every pass-through) never needs it

    try:
        return ipaddress.ip_interface(cidr).version
    except ValueError as exc:
        raise CNIError(DECODE_FAILURE, f"invalid IP address in result: {cidr!r}") from exc


def _copy(value: Any) -> Any:
    """A deep copy of decoded JSON (dicts, lists, scalars): ``copy.deepcopy`` costs a plugin exec
    ~1.5 ms to import (weakref and copyreg) and walks a memo it does not need here."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _require_object(result: object, what: str) -> Result:
    if not isinstance(result, dict):
        raise CNIError(DECODE_FAILURE, f"{what} must be a JSON object")
    return result


def to_canonical(result: object, assumed_version: str) -> Result:
    """Any version's result -> a 1.1.0-shaped dict (a copy). A missing cniVersion means ``assumed_version``."""
    data = _copy(_require_object(result, "result"))
    for key in ("interfaces", "ips", "routes"):
        value = data.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, dict) for v in value)):
            raise CNIError(DECODE_FAILURE, f"result field {key} must be a list of objects")
    for key in ("ip4", "ip6", "dns"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise CNIError(DECODE_FAILURE, f"result field {key} must be an object")
    for ip in data.get("ips") or []:
        if not isinstance(ip.get("address"), str):
            raise CNIError(DECODE_FAILURE, "every result ips[] entry needs an address string")
    ver = data.get("cniVersion") or assumed_version
    if not isinstance(ver, str) or ver not in versions.ALL_VERSIONS:
        raise CNIError(INCOMPATIBLE_VERSION, f"unsupported result version {ver!r}")
    family = versions.result_family(ver)
    if family == versions.FAMILY_020:
        data = _lift_020(data)
    elif family == versions.FAMILY_040:
        for ip in data.get("ips") or []:
            if isinstance(ip, dict):
                ip.pop("version", None)
    data["cniVersion"] = versions.CURRENT
    return _drop_empty(data)


def _lift_020(data: Result) -> Result:
    out: Result = {"ips": [], "routes": []}
    for key in ("ip4", "ip6"):
        block = data.get(key)
        if not isinstance(block, dict) or not block.get("ip"):
            continue
        entry: dict[str, Any] = {"address": block["ip"]}
        if block.get("gateway"):
            entry["gateway"] = block["gateway"]
        out["ips"].append(entry)
        out["routes"].extend(r for r in block.get("routes") or [] if isinstance(r, dict))
    if data.get("dns"):
        out["dns"] = data["dns"]
    return out


def from_canonical(result: Result, target_version: str) -> Result:
    """A 1.1.0-shaped dict -> the shape of ``target_version`` (a copy), as libcni converts."""
    family = versions.result_family(target_version)
    data = _copy(result)
    if family == versions.FAMILY_100:
        out = data
    elif family == versions.FAMILY_040:
        out = _lower_040(data)
    else:
        out = _lower_020(data, target_version)
    ordered: Result = {"cniVersion": target_version}
    ordered.update((k, v) for k, v in out.items() if k != "cniVersion")
    if family == versions.FAMILY_040:
        ordered.setdefault("dns", {})  # 0.3.x/0.4.0 results always print "dns"
    return ordered


def _lower_040(data: Result) -> Result:
    interfaces = [
        {k: iface[k] for k in _INTERFACE_FIELDS_040 if iface.get(k)}
        for iface in data.get("interfaces") or []
    ]
    ips = []
    for ip in data.get("ips") or []:
        entry = {"version": str(_family_of(ip["address"]))}
        entry.update(ip)
        ips.append(entry)
    out = dict(data)
    if interfaces:
        out["interfaces"] = interfaces
    if ips:
        out["ips"] = ips
    return out


def _lower_020(data: Result, target_version: str) -> Result:
    ips = data.get("ips") or []
    if not ips:
        raise CNIError(INCOMPATIBLE_VERSION, "cannot convert: no valid IP addresses")
    out: Result = {}
    routes = data.get("routes") or []
    for fam, key in ((4, "ip4"), (6, "ip6")):
        chosen = [ip for ip in ips if _family_of(ip["address"]) == fam]
        if len(chosen) > 1:
            raise CNIError(
                INCOMPATIBLE_VERSION,
                f"CNI version {target_version} does not support more than 1 address per family",
            )
        if not chosen:
            continue
        block: dict[str, Any] = {"ip": chosen[0]["address"]}
        if chosen[0].get("gateway"):
            block["gateway"] = chosen[0]["gateway"]
        fam_routes = [r for r in routes if _family_of(r["dst"]) == fam]
        if fam_routes:
            block["routes"] = fam_routes
        out[key] = block
    if data.get("dns"):
        out["dns"] = data["dns"]
    return out



def _drop_empty(data: Result) -> Result:
    return {k: v for k, v in data.items() if v not in (None, [], {}, "") or k == "cniVersion"}


def ips_of(result: Result, family: int) -> list[dict[str, Any]]:
    """The canonical result's ``ips`` entries of one address family, in order."""
    return [ip for ip in result.get("ips") or [] if _family_of(ip["address"]) == family]
