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

BACKENDS = ("iptables", "nftables")
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


class FirewallAccessors:
    """What the firewall asks of its config beyond the fields; shared by the plain class and the model."""

    __slots__ = ()
    if TYPE_CHECKING:  # the fields themselves belong to the classes (pydantic reads annotations)
        iptablesAdminChainName: str
        ingressPolicy: str

    @property
    def admin_chain(self) -> str:
        return self.iptablesAdminChainName

    @property
    def isolating(self) -> bool:
        return self.ingressPolicy in ISOLATING_POLICIES


class PlainFirewallConf(FirewallAccessors, fastconf.SlotsRepr):
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


# ``FirewallConf`` (the pydantic model) is imported only when asked for: it costs pydantic.
__getattr__ = fastconf.lazy_models(__name__, {"FirewallConf": "firewall.model:FirewallConf"})


def load(config: dict[str, Any]) -> PlainFirewallConf | FirewallConf:
    return fastconf.load(config, _read, "firewall.model:FirewallConf", "firewall")  # type: ignore[return-value]


def load_plain(config: dict[str, Any]) -> PlainFirewallConf | None:
    """The config read without pydantic, or None when the pydantic model must decide."""
    return fastconf.read_plain(config, _read)


def _read(config: dict[str, Any]) -> PlainFirewallConf:
    fastconf.require_str_keys(config)
    conf = PlainFirewallConf()
    conf.cniVersion, conf.name, conf.type = fastconf.netconf_fields(config)
    conf.backend = fastconf.get_optional_str(config, "backend")
    if conf.backend not in (None, "", *BACKENDS):
        raise fastconf.Unsure("backend")
    conf.iptablesAdminChainName = admin_chain_name(
        fastconf.get_str(config, "iptablesAdminChainName", DEFAULT_ADMIN_CHAIN))
    conf.ingressPolicy = fastconf.get_str(config, "ingressPolicy", OPEN) or OPEN  # "" means the default
    if conf.ingressPolicy not in POLICIES:
        raise fastconf.Unsure("ingressPolicy")
    conf.stateDir = fastconf.get_optional_str(config, "stateDir")
    return conf
