"""firewall's config: the iptables backend's keys, validated with field/value messages (code 7).

:func:`load` reads the common, plainly valid configs without pydantic (see cni.fastconf) into a
:class:`PlainFirewallConf`; anything it is not sure about goes to the pydantic model
(firewall.model.FirewallConf), which accepts it or rejects it with the usual message. Both offer the
same attributes; tests/test_config_fastpath.py holds them to it.
"""
from __future__ import annotations

from chains.rule import VERDICTS
from chains.values import validate_chain_name
from cni import fastconf
from firewall.rules import DEFAULT_ADMIN_CHAIN, ISOLATING_POLICIES, OPEN, OWN_CHAINS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from firewall.model import FirewallConf

BACKEND = "iptables"
POLICIES = (OPEN, *ISOLATING_POLICIES)
BUILTIN_CHAINS = ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING")


def admin_chain_name(name: str) -> str:
    """``iptablesAdminChainName`` as the plugin uses it; ValueError when it cannot be the admin chain."""
    if name == "":  # the reference treats an empty name as unset
        return DEFAULT_ADMIN_CHAIN
    validate_chain_name(name)
    if name in BUILTIN_CHAINS or name in VERDICTS or name in OWN_CHAINS:
        raise ValueError("must be a chain of its own, not a built-in chain, a verdict or one of the plugin's")
    return name


class PlainFirewallConf:
    """What the firewall plugin reads of its config: the fields of firewall.model.FirewallConf after its
    validators (an empty admin chain or policy means the default)."""

    __slots__ = ("cniVersion", "name", "type", "backend", "iptablesAdminChainName", "ingressPolicy", "stateDir")

    cniVersion: str
    name: str
    type: str
    backend: str | None
    iptablesAdminChainName: str
    ingressPolicy: str
    stateDir: str | None

    @property
    def admin_chain(self) -> str:
        return self.iptablesAdminChainName

    @property
    def isolating(self) -> bool:
        return self.ingressPolicy in ISOLATING_POLICIES

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.__slots__)
        return f"PlainFirewallConf({fields})"


def __getattr__(name: str) -> object:
    """``FirewallConf`` (the pydantic model) is imported only when asked for: it costs pydantic."""
    if name == "FirewallConf":
        from firewall.model import FirewallConf  # noqa: PLC0415

        return FirewallConf
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(config: dict[str, Any]) -> PlainFirewallConf | FirewallConf:
    conf = load_plain(config)
    if conf is not None:
        return conf
    from cni.config import parse  # noqa: PLC0415
    from firewall.model import FirewallConf  # noqa: PLC0415

    return parse(FirewallConf, config, "firewall")


def load_plain(config: dict[str, Any]) -> PlainFirewallConf | None:
    """The config read without pydantic, or None when the pydantic model must decide."""
    if type(config) is not dict:
        return None
    try:
        return _read(config)
    except (fastconf.Unsure, ValueError):  # ValueError: a validator refused the value
        return None


def _read(config: dict[str, Any]) -> PlainFirewallConf:
    fastconf.require_str_keys(config)
    conf = PlainFirewallConf()
    conf.cniVersion, conf.name, conf.type = fastconf.netconf_fields(config)
    conf.backend = fastconf.get_optional_str(config, "backend")
    if conf.backend not in (None, "", BACKEND):
        raise fastconf.Unsure("backend")
    conf.iptablesAdminChainName = admin_chain_name(
        fastconf.get_str(config, "iptablesAdminChainName", DEFAULT_ADMIN_CHAIN))
    conf.ingressPolicy = fastconf.get_str(config, "ingressPolicy", OPEN) or OPEN  # "" means the default
    if conf.ingressPolicy not in POLICIES:
        raise fastconf.Unsure("ingressPolicy")
    conf.stateDir = fastconf.get_optional_str(config, "stateDir")
    return conf
