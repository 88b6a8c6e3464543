"""firewall's config: the iptables backend's keys, validated with field/value messages (code 7)."""
from __future__ import annotations

from typing import Any

from pydantic import field_validator

from chains.rule import VERDICTS
from chains.values import validate_chain_name
from cni import config as netconf
from firewall.rules import DEFAULT_ADMIN_CHAIN, ISOLATING_POLICIES, OPEN, OWN_CHAINS

BACKEND = "iptables"
POLICIES = (OPEN, *ISOLATING_POLICIES)
BUILTIN_CHAINS = ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING")


class FirewallConf(netconf.NetConf):
    """The keys the iptables backend reads; firewalld's (``firewalldZone``) are accepted and ignored."""

    backend: str | None = None
    iptablesAdminChainName: str = DEFAULT_ADMIN_CHAIN
    ingressPolicy: str = OPEN
    stateDir: str | None = None

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str | None) -> str | None:
        if v not in (None, "", BACKEND):
            raise ValueError(f"only the {BACKEND} backend is implemented")
        return v

    @field_validator("iptablesAdminChainName")
    @classmethod
    def _admin_chain(cls, v: str) -> str:
        if v == "":  # the reference treats an empty name as unset
            return DEFAULT_ADMIN_CHAIN
        validate_chain_name(v)
        if v in BUILTIN_CHAINS or v in VERDICTS or v in OWN_CHAINS:
            raise ValueError("must be a chain of its own, not a built-in chain, a verdict or one of the plugin's")
        return v

    @field_validator("ingressPolicy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v == "":
            return OPEN
        if v not in POLICIES:
            raise ValueError(f"unknown ingress policy, expected one of {', '.join(POLICIES)}")
        return v

    @property
    def admin_chain(self) -> str:
        return self.iptablesAdminChainName

    @property
    def isolating(self) -> bool:
        return self.ingressPolicy in ISOLATING_POLICIES


def load(config: dict[str, Any]) -> FirewallConf:
    return netconf.parse(FirewallConf, config, "firewall")
