"""The ptp plugin's network config, read without pydantic (a ptp config has a handful of plain keys).

Every key is read with the exact-type readers of cni.fastconf; a value they cannot vouch for is an
error here (code 7) naming the key, what it should be and what it is.
"""
from __future__ import annotations

from cni import fastconf
from cni.errors import INVALID_CONFIG, CNIError, invalid_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IPMASQ_BACKENDS = ("iptables", "nftables")
_EXPECTED = {
    "cniVersion": "a string", "name": "a string", "type": "a string",
    "ipMasq": "true or false", "ipMasqBackend": '"iptables" or "nftables"',
    "mtu": "an integer from 0 to 65535", "ipam": "an object", "dns": "an object",
    "stateDir": "a string", "runtimeConfig": "an object", "args": "an object",
}


class PtpConf(fastconf.SlotsRepr):
    """What the ptp plugin reads of its config."""

    __slots__ = ("cniVersion", "name", "type", "ipMasq", "ipMasqBackend", "mtu", "ipam", "dns", "stateDir",
                 "runtimeConfig", "args")

    cniVersion: str
    name: str
    type: str
    ipMasq: bool
    ipMasqBackend: str | None  # None: the ipmasq module's default
    mtu: int
    ipam: dict[str, Any]
    dns: dict[str, Any] | None
    stateDir: str | None
    runtimeConfig: dict[str, Any]
    args: dict[str, Any]


def load(config: dict[str, Any]) -> PtpConf:
    """The validated config; CNIError (code 7) naming the first bad key."""
    try:
        conf = _read(config)
    except fastconf.Unsure as unsure:
        key = str(unsure.args[0]) if unsure.args else "?"
        raise invalid_value("ptp", key, config.get(key), _EXPECTED.get(key, "a valid value")) from None
    if not isinstance(conf.ipam.get("type"), str) or not conf.ipam["type"]:
        raise CNIError(INVALID_CONFIG, "invalid ptp config: ipam.type: ptp needs an IPAM plugin (got none)")
    return conf


def _read(config: dict[str, Any]) -> PtpConf:
    fastconf.require_str_keys(config)
    conf = PtpConf()
    conf.cniVersion, conf.name, conf.type = fastconf.netconf_fields(config)
    conf.ipMasq = fastconf.get_bool(config, "ipMasq")
    conf.ipMasqBackend = fastconf.get_optional_str(config, "ipMasqBackend")
    if conf.ipMasqBackend is not None and conf.ipMasqBackend not in IPMASQ_BACKENDS:
        raise fastconf.Unsure("ipMasqBackend")
    conf.mtu = fastconf.get_int(config, "mtu", 0, 0, 65535)
    conf.ipam = fastconf.get_dict(config, "ipam")
    conf.dns = fastconf.get_optional_dict(config, "dns")
    conf.stateDir = fastconf.get_optional_str(config, "stateDir")
    conf.runtimeConfig = fastconf.get_dict(config, "runtimeConfig")
    conf.args = fastconf.get_dict(config, "args")
    return conf

