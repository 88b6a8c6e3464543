"""host-local's IPAM configuration, canonicalised and validated like the reference.

The whole network config is read (IPAM plugins get their caller's config); the IPAM keys live
under ``ipam``. Sources, in the order the reference assembles them:

- range sets: ``runtimeConfig.ipRanges`` (capability), then the legacy single range written
  directly under ``ipam`` (``subnet``, ``rangeStart``, ``rangeEnd``, ``gateway``), then
  ``ipam.ranges``. One address is allocated per range set; the ranges inside a set are a pool.
- requested IPs: CNI_ARGS ``IP=`` (a comma-separated list is accepted), ``args.cni.ips``,
  ``runtimeConfig.ips``; a prefix length (``10.1.2.3/24``) is accepted and ignored.
- ``routes`` (copied to the result), ``dataDir`` (default ``/var/lib/cni/networks``),
  ``resolvConf``.

Every problem is a CNIError: INVALID_CONFIG (7) for the config, INVALID_ENV (4) for CNI_ARGS.
Messages follow the Debian 1.1.1 binaries (reference §4.1, Appendix B) with two deliberate
differences: a gateway outside its subnet is rejected (as upstream head does) and a range whose
start lies after its (defaulted) end is rejected instead of producing a runaway iterator.
"""
from __future__ import annotations

import os

from cni.errors import INVALID_CONFIG, INVALID_ENV, CNIError
from cni.version import at_least
from hostlocal.addresses import parse_cidr, parse_ip, parse_ip_ignoring_prefix
from hostlocal.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from hostlocal.addresses import IPAddress, IPNetwork

DEFAULT_DATA_DIR = "/var/lib/cni/networks"

# CNI_ARGS keys host-local understands; anything else fails unless IgnoreUnknown is set (as 1.1.1).
KNOWN_CNI_ARGS = frozenset({"IP"})

# A subnet needs at least two host bits: network address + one usable address + (v4) broadcast.
MIN_HOST_BITS = 2

# Route fields carried into the result (dst/gw since 0.3.0, the rest since 1.1.0).
ROUTE_FIELDS = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")


class RangeProblem(ValueError):
    """A range set failed canonicalisation; reported as ``invalid range set N: <reason>``."""


class IPRange(Record):
    """One canonical range: ``start``..``end`` inclusive inside ``subnet``, with its gateway."""

    __slots__ = ("subnet", "start", "end", "gateway")

    def __init__(self, subnet: IPNetwork, start: IPAddress, end: IPAddress, gateway: IPAddress) -> None:
        self.subnet = subnet
        self.start = start
        self.end = end
        self.gateway = gateway

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, address: IPAddress) -> bool:
        return address.version == self.version and int(self.start) <= int(address) <= int(self.end)

    def overlaps(self, other: IPRange) -> bool:
        return (
            self.version == other.version
            and int(self.start) <= int(other.end)
            and int(other.start) <= int(self.end)
        )

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


class RangeSet(Record):
    """Ranges of one address family that together yield one address per container."""

    __slots__ = ("ranges",)

    def __init__(self, ranges: tuple[IPRange, ...]) -> None:
        self.ranges = ranges

    @property
    def version(self) -> int:
        return self.ranges[0].version

    def range_for(self, address: IPAddress) -> IPRange | None:
        for candidate in self.ranges:
            if candidate.contains(address):
                return candidate
        return None

    def contains(self, address: IPAddress) -> bool:
        return self.range_for(address) is not None

    def overlaps(self, other: RangeSet) -> bool:
        return any(a.overlaps(b) for a in self.ranges for b in other.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


class IPAMConfig(Record):
    """Everything ADD / DEL / CHECK need, canonical."""

    __slots__ = ("network", "cni_version", "range_sets", "requested_ips", "routes", "data_dir", "resolv_conf")

    def __init__(
        self,
        *,
        network: str,
        cni_version: str,
        range_sets: tuple[RangeSet, ...],
        requested_ips: tuple[IPAddress, ...],
        routes: tuple[dict[str, Any], ...],
        data_dir: str,
        resolv_conf: str,
    ) -> None:
        self.network = network
        self.cni_version = cni_version
        self.range_sets = range_sets
        self.requested_ips = requested_ips
        self.routes = routes
        self.data_dir = data_dir
        self.resolv_conf = resolv_conf

    @property
    def state_dir(self) -> str:
        return os.path.join(self.data_dir, self.network)


class RangeSpec(Record):
    """One range as written: decoded from JSON, not yet defaulted or validated."""

    __slots__ = ("subnet_address", "subnet", "range_start", "range_end", "gateway")

    def __init__(
        self,
        *,
        subnet_address: IPAddress | None,  # the address part of ``subnet`` as written (host bits kept)
        subnet: IPNetwork | None,
        range_start: IPAddress | None = None,
        range_end: IPAddress | None = None,
        gateway: IPAddress | None = None,
    ) -> None:
        self.subnet_address = subnet_address
        self.subnet = subnet
        self.range_start = range_start
        self.range_end = range_end
        self.gateway = gateway


def _config_error(msg: str) -> CNIError:
    return CNIError(INVALID_CONFIG, msg)


# ---------------------------------------------------------------------------------------------
# Entry points


def load_ipam_config(config: Mapping[str, Any], cni_args: Mapping[str, str], cni_version: str) -> IPAMConfig:
    """Canonicalise the IPAM part of a network config (plus CNI_ARGS) for ADD / DEL / CHECK."""
    ipam = ipam_section(config)
    from cni.args import check_known  # noqa: PLC0415 - only the full load needs CNI_ARGS

    check_known(dict(cni_args), KNOWN_CNI_ARGS)
    requested = _dedup(
        [*_ips_from_cni_args(cni_args), *_ips_from_args(config), *_ips_from_runtime_config(config)]
    )
    specs = _range_set_specs(config, ipam)
    if not specs:
        raise _config_error("no IP ranges specified")
    range_sets = _canonical_range_sets(specs)
    _check_version_allows(range_sets, cni_version)
    _check_sets_disjoint(range_sets)
    return IPAMConfig(
        network=network_name(config),
        cni_version=cni_version,
        range_sets=range_sets,
        requested_ips=tuple(requested),
        routes=_routes(ipam.get("routes")),
        data_dir=_data_dir(ipam),
        resolv_conf=_resolv_conf(ipam),
    )


def ipam_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    ipam = config.get("ipam")
    if ipam is None:
        raise _config_error("IPAM config missing 'ipam' key")
    if not isinstance(ipam, dict):
        raise _config_error("ipam must be a JSON object")
    return ipam


def state_dir_of(config: Mapping[str, Any]) -> str:
    """``<dataDir>/<network>`` from a network config, validating only what the path needs (GC, STATUS)."""
    return os.path.join(_data_dir(ipam_section(config)), network_name(config))


def network_name(config: Mapping[str, Any]) -> str:
    """The network name, safe to use as one path component under dataDir.

    The skeleton already enforces ``^[a-zA-Z0-9][a-zA-Z0-9_.-]*$``; this is checked again because
    the bridge calls host-local in-process and the name becomes a directory we write into. The
    pattern excludes ``.``, ``..`` and ``/`` (first character alphanumeric, no slash).
    """
    from cni.skel import valid_name  # noqa: PLC0415 - one definition of the pattern

    name = config.get("name")
    if not name:
        raise _config_error("missing network name")
    if not isinstance(name, str) or not valid_name(name) or name in (".", ".."):
        raise _config_error("invalid characters found in network name")
    return name


# ---------------------------------------------------------------------------------------------
# Requested IPs


def _ips_from_cni_args(cni_args: Mapping[str, str]) -> list[IPAddress]:
    raw = cni_args.get("IP", "")
    out = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            out.append(parse_ip_ignoring_prefix(item))
        except ValueError:
            raise CNIError(
                INVALID_ENV, f'ARGS: error parsing value of pair "IP={raw}": invalid IP address {item}'
            ) from None
    return out


def _ips_from_args(config: Mapping[str, Any]) -> list[IPAddress]:
    args = config.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    if not isinstance(cni, dict) or cni.get("ips") is None:
        return []
    return _ip_list(cni["ips"], "args.cni.ips")


def _ips_from_runtime_config(config: Mapping[str, Any]) -> list[IPAddress]:
    runtime = config.get("runtimeConfig")
    if not isinstance(runtime, dict) or runtime.get("ips") is None:
        return []
    return _ip_list(runtime["ips"], "runtimeConfig.ips")


def _ip_list(raw: object, where: str) -> list[IPAddress]:
    if not isinstance(raw, list):
        raise _config_error(f"{where} must be a list of IP addresses")
    out = []
    for item in raw:
        try:
            out.append(parse_ip_ignoring_prefix(item))
        except ValueError:
            raise _config_error(f"invalid IP address {item}") from None
    return out


def _dedup(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(addresses))


# ---------------------------------------------------------------------------------------------
# Range sets: decoding


def _range_set_specs(config: Mapping[str, Any], ipam: Mapping[str, Any]) -> list[list[RangeSpec]]:
    """All range sets in the reference's order: runtime ipRanges, legacy range, ipam.ranges."""
    sets: list[list[RangeSpec]] = []
    runtime = config.get("runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("ipRanges"):
        sets.extend(_decode_range_sets(runtime["ipRanges"], "runtimeConfig.ipRanges"))
    if ipam.get("subnet"):
        sets.append([_decode_range(ipam)])
    if ipam.get("ranges") is not None:
        sets.extend(_decode_range_sets(ipam["ranges"], "ipam.ranges"))
    return sets


def _decode_range_sets(raw: object, where: str) -> list[list[RangeSpec]]:
    if not isinstance(raw, list):
        raise _config_error(f"{where} must be a list of range sets")
    sets = []
    for range_set in raw:
        if not isinstance(range_set, list) or not all(isinstance(r, dict) for r in range_set):
            raise _config_error(f"{where}: each range set must be a list of range objects")
        sets.append([_decode_range(r) for r in range_set])
    return sets


def _decode_range(raw: Mapping[str, Any]) -> RangeSpec:
    subnet_address: IPAddress | None = None
    subnet: IPNetwork | None = None
    if raw.get("subnet"):
        try:
            subnet_address, subnet = parse_cidr(raw["subnet"])
        except ValueError:
            raise _config_error(f"invalid CIDR address: {raw['subnet']}") from None
    return RangeSpec(
        subnet_address=subnet_address,
        subnet=subnet,
        range_start=_optional_ip(raw.get("rangeStart")),
        range_end=_optional_ip(raw.get("rangeEnd")),
        gateway=_optional_ip(raw.get("gateway")),
    )


def _optional_ip(raw: object) -> IPAddress | None:
    if raw is None or raw == "":
        return None
    try:
        return parse_ip(raw)
    except ValueError:
        raise _config_error(f"invalid IP address: {raw}") from None


# ---------------------------------------------------------------------------------------------
# Range sets: canonicalisation and validation


def _canonical_range_sets(specs: list[list[RangeSpec]]) -> tuple[RangeSet, ...]:
    out = []
    for index, spec_set in enumerate(specs):
        try:
            out.append(canonical_range_set(spec_set))
        except RangeProblem as problem:
            raise _config_error(f"invalid range set {index}: {problem}") from None
    return tuple(out)


def canonical_range_set(specs: list[RangeSpec]) -> RangeSet:
    if not specs:
        raise RangeProblem("empty range set")
    ranges: list[IPRange] = []
    for spec in specs:
        canonical = canonical_range(spec)
        if ranges and canonical.version != ranges[0].version:
            raise RangeProblem("mixed address families")
        ranges.append(canonical)
    for i, first in enumerate(ranges):
        for second in ranges[i + 1 :]:
            if first.overlaps(second):
                raise RangeProblem(f"subnets {first} and {second} overlap")
    return RangeSet(tuple(ranges))


def canonical_range(spec: RangeSpec) -> IPRange:
    """Fill in defaults and validate one range (reference order of checks and messages)."""
    subnet, written = spec.subnet, spec.subnet_address
    if subnet is None or written is None:
        raise RangeProblem("range has no subnet")
    if subnet.prefixlen > subnet.max_prefixlen - MIN_HOST_BITS:
        raise RangeProblem(f"Network {written}/{subnet.prefixlen} too small to allocate from")
    if subnet.version == 6 and subnet.network_address.ipv4_mapped is not None:
        raise RangeProblem("IPNet IP and Mask version mismatch")  # Go's view of ::ffff:a.b.c.d/n
    if written != subnet.network_address:
        raise RangeProblem(
            f"Network has host bits set. For a subnet mask of length {subnet.prefixlen} "
            f"the network address is {subnet.network_address}"
        )
    first_host = subnet.network_address + 1
    gateway = first_host if spec.gateway is None else spec.gateway
    if gateway not in subnet:
        raise RangeProblem(f"gateway {gateway} not in network {subnet}")

    start = spec.range_start
    if start is not None and not _in_span(start, subnet, None, spec.range_end):
        raise RangeProblem(f"RangeStart {start} not in network {subnet}")
    start = first_host if start is None else start
    end = spec.range_end
    if end is not None and not _in_span(end, subnet, start, None):
        raise RangeProblem(f"RangeEnd {end} not in network {subnet}")
    end = _last_host(subnet) if end is None else end
    if int(start) > int(end):
        raise RangeProblem(f"RangeStart {start} is after RangeEnd {end}")
    return IPRange(subnet=subnet, start=start, end=end, gateway=gateway)


def _in_span(address: IPAddress, subnet: IPNetwork, low: IPAddress | None, high: IPAddress | None) -> bool:
    """Inside ``subnet`` and, where given, not before ``low`` / not after ``high``."""
    if address not in subnet:
        return False
    if low is not None and int(address) < int(low):
        return False
    return high is None or (high.version == address.version and int(address) <= int(high))


def _last_host(subnet: IPNetwork) -> IPAddress:
    """Default rangeEnd: the broadcast address minus one for IPv4, the very last address for IPv6."""
    if subnet.version == 4:
        return subnet.broadcast_address - 1
    return subnet.broadcast_address


def _check_version_allows(range_sets: tuple[RangeSet, ...], cni_version: str) -> None:
    """Results before 0.3.0 carry at most one address per family (ip4 / ip6)."""
    v4 = sum(1 for s in range_sets if s.version == 4)
    v6 = len(range_sets) - v4
    if (v4 > 1 or v6 > 1) and not _at_least_030(cni_version):
        raise _config_error(f"CNI version {cni_version} does not support more than 1 address per family")


def _at_least_030(cni_version: str) -> bool:
    try:
        return at_least(cni_version or "0.1.0", "0.3.0")
    except ValueError:
        return False


def _check_sets_disjoint(range_sets: tuple[RangeSet, ...]) -> None:
    for i, first in enumerate(range_sets):
        for j in range(i + 1, len(range_sets)):
            if first.overlaps(range_sets[j]):
                raise _config_error(f"range set {i} overlaps with {j}")


# ---------------------------------------------------------------------------------------------
# Routes, dataDir, resolvConf


def _routes(raw: object) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise _config_error("ipam.routes must be a list of route objects")
    return tuple(_route(r) for r in raw)


def _route(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A route with ``dst`` (required CIDR) and ``gw`` written canonically; other 1.1 fields kept."""
    route = {key: raw[key] for key in ROUTE_FIELDS if raw.get(key) not in (None, "")}
    try:
        address, network = parse_cidr(raw.get("dst"))
    except ValueError:
        raise _config_error(f"invalid CIDR address: {raw.get('dst')}") from None
    route["dst"] = f"{address}/{network.prefixlen}"
    if "gw" in route:
        try:
            route["gw"] = str(parse_ip(route["gw"]))
        except ValueError:
            raise _config_error(f"invalid IP address: {route['gw']}") from None
    return route


def _data_dir(ipam: Mapping[str, Any]) -> str:
    raw = ipam.get("dataDir")
    if raw is None or raw == "":
        return DEFAULT_DATA_DIR
    if not isinstance(raw, str) or "\0" in raw:
        raise _config_error("ipam.dataDir must be a path")
    if not os.path.isabs(raw):  # relative to whatever directory the runtime runs plugins in: anywhere
        raise _config_error(f"ipam.dataDir must be an absolute path: {raw!r}")
    return raw


def _resolv_conf(ipam: Mapping[str, Any]) -> str:
    raw = ipam.get("resolvConf")
    if raw is None:
        return ""
    if not isinstance(raw, str) or "\0" in raw:
        raise _config_error("ipam.resolvConf must be a path")
    return raw
