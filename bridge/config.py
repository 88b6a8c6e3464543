"""The bridge plugin's network config, validated like the reference does (plus field/value messages).

:func:`load` reads the common, plainly valid configs without pydantic (see cni.fastconf) into a
:class:`PlainBridgeConf`; anything it is not sure about goes to the pydantic model
(bridge.model.BridgeConf), which accepts it, coerced, or rejects it with the usual message. Both
objects offer the same attributes; tests/test_config_fastpath.py holds them to it.
"""
from __future__ import annotations

from bridge import DEFAULT_BRIDGE
from cni import fastconf
from cni.errors import INVALID_CONFIG, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bridge.model import BridgeConf

_MAC_PATTERN = r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class PlainBridgeConf(fastconf.SlotsRepr):
    """What the bridge plugin reads of its config: the fields of bridge.model.BridgeConf, after its
    validators (``isDefaultGateway`` implies ``isGateway``)."""

    __slots__ = ("cniVersion", "name", "type", "bridge", "isGateway", "isDefaultGateway", "forceAddress", "ipMasq",
                 "ipMasqBackend", "mtu", "hairpinMode", "promiscMode", "vlan", "macspoofchk", "enabledad", "ipam", "dns", "stateDir",
                 "runtimeConfig", "args")

    cniVersion: str
    name: str
    type: str
    bridge: str
    isGateway: bool
    isDefaultGateway: bool
    forceAddress: bool
    ipMasq: bool
    ipMasqBackend: str | None
    mtu: int
    hairpinMode: bool
    promiscMode: bool
    vlan: int
    macspoofchk: bool
    enabledad: bool
    ipam: dict[str, Any]
    dns: dict[str, Any] | None
    stateDir: str | None
    runtimeConfig: dict[str, Any]
    args: dict[str, Any]


# ``BridgeConf`` (the pydantic model) is imported only when asked for: it costs pydantic.
__getattr__ = fastconf.lazy_models(__name__, {"BridgeConf": "bridge.model:BridgeConf"})


def load(config: dict[str, Any]) -> PlainBridgeConf | BridgeConf:
    return fastconf.load(config, _read, "bridge.model:BridgeConf", "bridge")  # type: ignore[return-value]


def load_plain(config: dict[str, Any]) -> PlainBridgeConf | None:
    """The config read without pydantic, or None when the pydantic model must decide."""
    return fastconf.read_plain(config, _read)


def _read(config: dict[str, Any]) -> PlainBridgeConf:
    fastconf.require_str_keys(config)
    conf = PlainBridgeConf()
    conf.cniVersion, conf.name, conf.type = fastconf.netconf_fields(config)
    conf.bridge = _bridge_name(fastconf.get_str(config, "bridge", DEFAULT_BRIDGE))
    conf.isGateway = fastconf.get_bool(config, "isGateway")
    conf.isDefaultGateway = fastconf.get_bool(config, "isDefaultGateway")
    conf.forceAddress = fastconf.get_bool(config, "forceAddress")
    conf.ipMasq = fastconf.get_bool(config, "ipMasq")
    conf.ipMasqBackend = fastconf.get_optional_str(config, "ipMasqBackend")
    if conf.ipMasqBackend not in (None, "iptables", "nftables"):  # Literal["iptables", "nftables"] | None
        raise fastconf.Unsure("ipMasqBackend")
    conf.mtu = fastconf.get_int(config, "mtu", 0, 0, 65535)
    conf.hairpinMode = fastconf.get_bool(config, "hairpinMode")
    conf.promiscMode = fastconf.get_bool(config, "promiscMode")
    conf.vlan = fastconf.get_int(config, "vlan", 0, 0, 4094)
    conf.macspoofchk = fastconf.get_bool(config, "macspoofchk")
    conf.enabledad = fastconf.get_bool(config, "enabledad")
    conf.ipam = fastconf.get_dict(config, "ipam")
    conf.dns = fastconf.get_optional_dict(config, "dns")
    conf.stateDir = fastconf.get_optional_str(config, "stateDir")
    conf.runtimeConfig = fastconf.get_dict(config, "runtimeConfig")
    conf.args = fastconf.get_dict(config, "args")
    # BridgeConf._exclusive_modes
    if conf.hairpinMode and conf.promiscMode:
        raise fastconf.Unsure("hairpinMode")
    if conf.isDefaultGateway:
        conf.isGateway = True
    return conf


def _bridge_name(name: str) -> str:
    from cni.skel import ifname_problem  # noqa: PLC0415 - loaded already in a plugin process

    if ifname_problem(name):
        raise fastconf.Unsure("bridge")
    return name


def container_mac(conf: PlainBridgeConf | BridgeConf, cni_args: dict[str, str]) -> str | None:
    """The requested container MAC: CNI_ARGS MAC, then args.cni.mac, then runtimeConfig.mac (later wins)."""
    mac = cni_args.get("MAC") or None
    cni_block = conf.args.get("cni") if isinstance(conf.args.get("cni"), dict) else {}
    mac = cni_block.get("mac") or mac
    mac = conf.runtimeConfig.get("mac") or mac
    if mac is None:
        return None
    if not isinstance(mac, str) or not _is_mac(mac):
        raise CNIError(INVALID_CONFIG, f"invalid MAC address {mac!r}")
    return mac.lower()


def _is_mac(text: str) -> bool:
    """Whether ``text`` matches _MAC_PATTERN. The usual ``aa:bb:cc:dd:ee:ff`` is checked by hand; anything
    else goes to the pattern itself (``re`` costs ~4 ms to import, and ``$`` also matches before a final
    newline, which a hand-written check would have to copy)."""
    if len(text) == 17 and all(text[i] == ":" for i in range(2, 17, 3)) and \
            all(text[i] in _HEX_DIGITS for i in range(17) if i % 3 != 2):
        return True
    import re  # noqa: PLC0415

    return re.match(_MAC_PATTERN, text) is not None
