"""portmap's config: options, port mappings from runtimeConfig, and the container's addresses.

:func:`load` reads the common, plainly valid configs without pydantic (see cni.fastconf) into a
:class:`PlainPortMapConf`; anything it is not sure about goes to the pydantic model
(portmap.model.PortMapConf), which accepts it, coerced, or rejects it with the usual message. Both
offer the same attributes, properties and methods; tests/test_config_fastpath.py holds them to it.
"""
from __future__ import annotations

from cni import fastconf

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from typing import Any

    from portmap.model import PortMapConf, PortMapping  # noqa: F401 - PortMapping: re-exported, see __getattr__

DEFAULT_MARK_BIT = 13
MAX_CHAIN_NAME = 28  # iptables' limit (XT_EXTENSION_MAXNAMELEN - 1)
MAX_MAPPINGS = 4096
MAX_CONDITION_ARGS = 64
PROTOCOLS = ("tcp", "udp", "sctp")


def valid_chain_name(name: str) -> str:
    if not name or len(name) > MAX_CHAIN_NAME:
        raise ValueError(f"chain name must be 1 to {MAX_CHAIN_NAME} characters")
    if name[0] in "-!" or any(c.isspace() or c in "\"'\\" or not c.isprintable() for c in name):
        raise ValueError("chain name must not start with - or ! nor contain quotes, backslashes or whitespace")
    return name


def host_ip_for(host_ip: str, family: int) -> str | None:
    """The destination to match for a mapping's ``hostIP`` in this family: '' for any, the address, or
    None to skip the family."""
    if not host_ip:
        return ""
    import ipaddress  # noqa: PLC0415 - ~5 ms, and most mappings have no hostIP

    addr = ipaddress.ip_address(host_ip)
    if addr.version != family:
        return None
    return "" if addr.is_unspecified else str(addr)


class PlainPortMapping(fastconf.SlotsRepr):
    """One entry of ``runtimeConfig.portMappings``, as portmap.model.PortMapping reads it."""

    __slots__ = ("hostPort", "containerPort", "protocol", "hostIP")

    def __init__(self, hostPort: int, containerPort: int, protocol: str, hostIP: str) -> None:  # noqa: N803
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.protocol = protocol
        self.hostIP = hostIP

    def host_ip_for(self, family: int) -> str | None:
        return host_ip_for(self.hostIP, family)


class PlainRuntimeConfig(fastconf.SlotsRepr):
    __slots__ = ("portMappings",)

    def __init__(self, portMappings: list[PlainPortMapping]) -> None:  # noqa: N803
        self.portMappings = portMappings


class PortMapAccessors:
    """What portmap asks of its config beyond the fields; shared by the plain class and the model."""

    __slots__ = ()
    if TYPE_CHECKING:  # the fields themselves belong to the classes (pydantic reads annotations)
        runtimeConfig: Any
        markMasqBit: int | None
        conditionsV4: list[str] | None
        conditionsV6: list[str] | None

    @property
    def mappings(self) -> list[Any]:
        return self.runtimeConfig.portMappings  # type: ignore[no-any-return]

    @property
    def mark(self) -> int:
        return 1 << (self.markMasqBit if self.markMasqBit is not None else DEFAULT_MARK_BIT)

    def conditions(self, family: int) -> list[str]:
        return list((self.conditionsV4 if family == 4 else self.conditionsV6) or [])


class PlainPortMapConf(PortMapAccessors, fastconf.SlotsRepr):
    """What portmap reads of its config: the fields of portmap.model.PortMapConf after its validators
    (``snat`` None means True; ``markMasqBit`` defaults to 13 unless ``externalSetMarkChain`` is set)."""

    __slots__ = ("cniVersion", "name", "type", "snat", "markMasqBit", "externalSetMarkChain", "masqAll",
                 "conditionsV4", "conditionsV6", "backend", "stateDir", "runtimeConfig")

    cniVersion: str
    name: str
    type: str
    snat: bool
    markMasqBit: int | None
    externalSetMarkChain: str | None
    masqAll: bool
    conditionsV4: list[str] | None
    conditionsV6: list[str] | None
    backend: str | None
    stateDir: str | None
    runtimeConfig: PlainRuntimeConfig


# The pydantic models are imported only when asked for: they cost pydantic.
__getattr__ = fastconf.lazy_models(__name__, {name: f"portmap.model:{name}"
                                              for name in ("PortMapConf", "PortMapping", "RuntimeConfig")})


def load(config: dict[str, Any]) -> PlainPortMapConf | PortMapConf:
    return fastconf.load(config, _read, "portmap.model:PortMapConf", "portmap")  # type: ignore[return-value]


def load_plain(config: dict[str, Any]) -> PlainPortMapConf | None:
    """The config read without pydantic, or None when the pydantic model must decide."""
    return fastconf.read_plain(config, _read)


def _read(config: dict[str, Any]) -> PlainPortMapConf:
    fastconf.require_str_keys(config)
    conf = PlainPortMapConf()
    conf.cniVersion, conf.name, conf.type = fastconf.netconf_fields(config)
    snat = fastconf.get_optional_bool(config, "snat")
    conf.markMasqBit = fastconf.get_optional_int(config, "markMasqBit", 0, 31)
    conf.externalSetMarkChain = fastconf.get_optional_str(config, "externalSetMarkChain")
    if conf.externalSetMarkChain is not None:
        valid_chain_name(conf.externalSetMarkChain)
    conf.masqAll = fastconf.get_bool(config, "masqAll")
    conf.conditionsV4 = fastconf.get_optional_str_list(config, "conditionsV4", MAX_CONDITION_ARGS)
    conf.conditionsV6 = fastconf.get_optional_str_list(config, "conditionsV6", MAX_CONDITION_ARGS)
    conf.backend = fastconf.get_optional_str(config, "backend")
    if conf.backend not in (None, "iptables", "nftables"):  # Literal["iptables", "nftables"] | None
        raise fastconf.Unsure("backend")
    conf.stateDir = fastconf.get_optional_str(config, "stateDir")
    conf.runtimeConfig = _runtime_config(config)
    # PortMapConf._mark_options
    if conf.markMasqBit is not None and conf.externalSetMarkChain is not None:
        raise fastconf.Unsure("markMasqBit")
    conf.snat = True if snat is None else snat
    if conf.markMasqBit is None and conf.externalSetMarkChain is None:
        conf.markMasqBit = DEFAULT_MARK_BIT
    return conf


def _runtime_config(config: dict[str, Any]) -> PlainRuntimeConfig:
    """``runtimeConfig``: a dict whose other keys are ignored, like the model's (extra="ignore")."""
    if "runtimeConfig" not in config:
        return PlainRuntimeConfig([])
    runtime = config["runtimeConfig"]
    if type(runtime) is not dict:
        raise fastconf.Unsure("runtimeConfig")
    entries = fastconf.get_list(runtime, "portMappings", MAX_MAPPINGS)
    return PlainRuntimeConfig([_mapping(entry) for entry in entries])


def _mapping(entry: object) -> PlainPortMapping:
    if type(entry) is not dict:
        raise fastconf.Unsure("portMappings")
    host_port = fastconf.require_int(entry, "hostPort", 1, 65535)
    container_port = fastconf.require_int(entry, "containerPort", 1, 65535)
    protocol = fastconf.get_str(entry, "protocol", "tcp").lower()
    if protocol not in PROTOCOLS:
        raise fastconf.Unsure("protocol")
    host_ip = fastconf.get_str(entry, "hostIP", "")
    if host_ip:
        import ipaddress  # noqa: PLC0415 - only configs with a hostIP pay for it

        ipaddress.ip_address(host_ip)  # ValueError: not an address
    return PlainPortMapping(host_port, container_port, protocol, host_ip)


# Options that only make sense on the other backend, refused before anything changes.
IPTABLES_ONLY = ("markMasqBit", "externalSetMarkChain")


def check_backend_options(config: dict[str, Any], backend: str) -> None:
    """Code 7 naming the option when the config holds options of the other backend."""
    from chains.nft.conditions import is_iptables_syntax  # noqa: PLC0415
    from cni.errors import INVALID_CONFIG, CNIError  # noqa: PLC0415

    conditions = [key for key in ("conditionsV4", "conditionsV6") if config.get(key)]
    if backend == "nftables":
        wrong = [key for key in IPTABLES_ONLY if config.get(key) is not None]
        wrong += [key for key in conditions if is_iptables_syntax(config[key])]
        if wrong:
            raise CNIError(INVALID_CONFIG, "nftables backend was requested but configuration contains "
                                           f"iptables-specific options [{' '.join(wrong)}]")
    else:
        wrong = [key for key in conditions if not is_iptables_syntax(config[key])]
        if wrong:
            raise CNIError(INVALID_CONFIG, "iptables backend was requested but configuration contains "
                                           f"nftables-specific options [{' '.join(wrong)}]")


def container_addresses(prev_result: dict[str, Any], ifname: str) -> dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The container's first IPv4 and first IPv6 address (with prefix) on ``ifname``, by family.

    Like the reference: an IP whose ``interface`` index names another interface, or a host-side one
    (no sandbox), is skipped; an IP without an index is accepted.
    """
    import ipaddress  # noqa: PLC0415 - load() must not pay for it

    interfaces = prev_result.get("interfaces") or []
    found: dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface] = {}
    for ip in prev_result.get("ips") or []:
        index = ip.get("interface")
        if index is not None:
            if not (0 <= index < len(interfaces)):
                continue
            iface = interfaces[index]
            if iface.get("name") != ifname or not iface.get("sandbox"):
                continue
        addr = ipaddress.ip_interface(ip["address"])
        found.setdefault(addr.version, addr)
    return found
