"""The tuning plugin's configuration: read, merged from its several sources, and validated.

Everything a tuning ADD will do is decided and checked here, before the kernel is touched: sysctl
keys are mapped to their ``/proc/sys`` paths and refused when they could leave the namespaced
``/proc/sys/net`` tree or name an interface other than ``CNI_IFNAME``; MAC, MTU, flags and queue
length are checked for type and range. Like the reference, later sources override earlier ones:
the config's own fields, then ``CNI_ARGS`` ``MAC``, then ``runtimeConfig.mac`` (the ``mac``
capability), then ``args.cni``.
"""
from __future__ import annotations

from cni.errors import INVALID_CONFIG, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ALLOWLIST_PATH = "/etc/cni/tuning/allowlist.conf"
IFNAME_PLACEHOLDER = "IFNAME"
# /proc/sys/net directories with one subdirectory per interface (plus "all" and "default").
PER_INTERFACE_DIRS = frozenset({("ipv4", "conf"), ("ipv6", "conf"), ("ipv4", "neigh"), ("ipv6", "neigh"),
                                ("mpls", "conf")})
NAMESPACE_WIDE_ENTRIES = frozenset({"all", "default"})
MIN_MTU = 68  # the IPv4 minimum; the kernel checks each device's own range when it is applied
MAX_MTU = 65535
MAX_TXQLEN = 0xFFFFFFFF
LINK_ATTRIBUTES = ("mac", "mtu", "promisc", "allmulti", "txQLen")


def _invalid(msg: str) -> CNIError:
    return CNIError(INVALID_CONFIG, msg)


class TuningConf:
    """What to change: sysctls (``/proc/sys``-relative slash paths -> values) and link attributes.

    A link attribute that is None is left alone.
    """

    __slots__ = ("sysctl", "sysctl_keys", "mac", "mtu", "promisc", "allmulti", "txqlen")

    def __init__(self) -> None:
        self.sysctl: dict[str, str] = {}  # "net/ipv4/conf/eth0/arp_filter" -> "1"
        self.sysctl_keys: dict[str, str] = {}  # the same path -> the key as configured, for messages
        self.mac: str | None = None  # lower-case, colon-separated
        self.mtu: int | None = None
        self.promisc: bool | None = None
        self.allmulti: bool | None = None
        self.txqlen: int | None = None

    @property
    def changes_link(self) -> bool:
        return any(v is not None for v in (self.mac, self.mtu, self.promisc, self.allmulti, self.txqlen))

    @property
    def empty(self) -> bool:
        return not self.sysctl and not self.changes_link


def sysctl_path(key: object, ifname: str) -> str:
    """The ``/proc/sys``-relative path (slash-separated) of a dotted sysctl ``key``.

    ``IFNAME`` as a whole component stands for ``ifname`` (which may itself contain dots). Refused
    (code 7): anything outside ``net.``, slashes, empty components (``..``, a leading or trailing
    dot), and per-interface keys (``net.ipv4.conf.<dev>.*`` and the like) naming another interface
    than ``ifname`` (``all`` and ``default`` are namespace-wide, not interfaces, and allowed).
    """
    if not isinstance(key, str):
        raise _invalid(f"invalid net sysctl key: {key!r} is not a string")
    if "/" in key or "\0" in key or any(c.isspace() for c in key):
        raise _invalid(f'invalid net sysctl key: "{key}": only dotted keys without "/" or spaces are allowed')
    parts = key.split(".")
    if any(not part for part in parts):
        raise _invalid(f'invalid net sysctl key: "{key}": empty component')
    if parts[0] != "net" or len(parts) < 2:
        raise _invalid(f'invalid net sysctl key: "{key}": only keys under net. are allowed')
    parts = [ifname if part == IFNAME_PLACEHOLDER else part for part in parts]
    if len(parts) >= 5 and (parts[1], parts[2]) in PER_INTERFACE_DIRS:
        device = parts[3]
        if device != ifname and device not in NAMESPACE_WIDE_ENTRIES:
            raise _invalid(f'invalid net sysctl key: "{key}": names interface {device}, '
                           f"not {ifname} (write IFNAME for the interface being configured)")
    return "/".join(parts)


def _sysctl_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(f'invalid value for sysctl "{key}": {value!r} is not a string')
    if "\n" in value or "\0" in value:
        raise _invalid(f'invalid value for sysctl "{key}": it contains a newline or NUL')
    return value


def normalize_mac(value: object, source: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` (or with ``-``) as lower-case colon form; a unicast, non-zero address."""
    if not isinstance(value, str):
        raise _invalid(f"invalid MAC address in {source}: {value!r} is not a string")
    parts = value.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise _invalid(f"invalid MAC address in {source}: {value!r}")
    octets = bytes.fromhex("".join(parts))
    if octets[0] & 1:
        raise _invalid(f"invalid MAC address in {source}: {value} is a multicast address")
    if not any(octets):
        raise _invalid(f"invalid MAC address in {source}: {value} is all zeros")
    return ":".join(f"{b:02x}" for b in octets)


def _int_in(value: object, name: str, low: int, high: int, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"invalid {name} in {source}: {value!r} is not an integer")
    if not low <= value <= high:
        raise _invalid(f"invalid {name} in {source}: {value} is not within {low}..{high}")
    return value


def _bool(value: object, name: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(f"invalid {name} in {source}: {value!r} is not true or false")
    return value


def _apply_fields(conf: TuningConf, fields: dict[str, Any], source: str, ifname: str) -> None:
    """Take the tuning fields of one source (the config itself, or ``args.cni``) into ``conf``."""
    sysctls = fields.get("sysctl")
    if sysctls is not None:
        if not isinstance(sysctls, dict):
            raise _invalid(f"sysctl in {source} must be an object of key: value strings")
        for key, value in sysctls.items():
            path = sysctl_path(key, ifname)
            text = _sysctl_value(key, value)
            if path in conf.sysctl and conf.sysctl_keys[path] != key and conf.sysctl[path] != text:
                raise _invalid(f'sysctl keys "{conf.sysctl_keys[path]}" and "{key}" name the same setting '
                               "with different values")
            conf.sysctl[path] = text
            conf.sysctl_keys[path] = key
    if fields.get("mac") not in (None, ""):
        conf.mac = normalize_mac(fields["mac"], source)
    mtu = fields.get("mtu")
    if mtu is not None and mtu != 0:  # 0: not set, as in the reference
        conf.mtu = _int_in(mtu, "mtu", MIN_MTU, MAX_MTU, source)
    if fields.get("promisc") is not None:
        conf.promisc = _bool(fields["promisc"], "promisc", source)
    if fields.get("allmulti") is not None:
        conf.allmulti = _bool(fields["allmulti"], "allmulti", source)
    if fields.get("txQLen") is not None:
        conf.txqlen = _int_in(fields["txQLen"], "txQLen", 0, MAX_TXQLEN, source)


def load(config: dict[str, Any], ifname: str, cni_args: dict[str, str], stdin: bytes = b"") -> TuningConf:
    """The validated tuning settings of one invocation (code 7 for anything wrong)."""
    conf = TuningConf()
    data_dir = config.get("dataDir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise _invalid("dataDir must be a string")  # accepted for compatibility; records go to stateDir
    _apply_fields(conf, config, "the config", ifname)
    if cni_args.get("MAC"):
        conf.mac = normalize_mac(cni_args["MAC"], "CNI_ARGS")
    runtime = config.get("runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("mac") not in (None, ""):
        conf.mac = normalize_mac(runtime["mac"], "runtimeConfig")
    args = config.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    if cni is not None:
        if not isinstance(cni, dict):
            raise _invalid("args.cni must be an object")
        _apply_fields(conf, cni, "args.cni", ifname)
    if stdin and conf.sysctl:
        refuse_duplicate_keys(stdin, config)
    return conf


def refuse_duplicate_keys(stdin: bytes, config: dict[str, Any]) -> None:
    """A JSON object may repeat a key (the last one wins when decoded); in ``sysctl`` that hides a
    setting from whoever reads the config, so it is refused, as the reference does."""
    import json  # noqa: PLC0415 - already loaded by the skeleton

    repeated: list[dict[str, Any]] = []

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            repeated.append(obj)
        return obj

    parsed = json.loads(stdin, object_pairs_hook=build)
    if not repeated:
        return
    args = parsed.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    candidates = [parsed.get("sysctl"), cni.get("sysctl") if isinstance(cni, dict) else None]
    if any(candidate is obj for candidate in candidates for obj in repeated):
        raise _invalid("duplicated sysctl keys are not allowed")


def check_allowlist(conf: TuningConf, path: str = ALLOWLIST_PATH) -> None:
    """When ``path`` exists, every configured sysctl key must match one of its regular expressions
    (one a line, searched anywhere in the key, as the reference's ``regexp.MatchString`` does)."""
    try:
        with open(path, encoding="utf-8") as file:
            patterns = [line.strip() for line in file if line.strip()]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CNIError(INVALID_CONFIG, f"cannot read the sysctl allowlist {path}: {exc.strerror}") from None
    refused = not_allowed(list(conf.sysctl_keys.values()), patterns)
    if refused:
        raise _invalid(f"Sysctl {refused[0]} is not allowed. Only the following sysctls are allowed: {patterns}")


def not_allowed(keys: list[str], patterns: list[str]) -> list[str]:
    """The keys no pattern matches (an invalid pattern is a config error)."""
    import re  # noqa: PLC0415 - only when an allowlist exists

    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as exc:
        raise _invalid(f"invalid pattern in the sysctl allowlist: {exc}") from None
    return [key for key in keys if not any(p.search(key) for p in compiled)]
