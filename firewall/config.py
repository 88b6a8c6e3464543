"""firewall's config: the iptables backend's keys, validated with field/value messages."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from cni import config as netconf

DEFAULT_ADMIN_CHAIN = "CNI-ADMIN"
MAX_CHAIN_NAME = 28


class FirewallConf(netconf.NetConf):
    backend: Literal["iptables"] | None = None
    iptablesAdminChainName: str = DEFAULT_ADMIN_CHAIN
    ingressPolicy: Literal["open", "same-bridge", "isolated", ""] = "open"
    stateDir: str | None = None
    runtimeConfig: dict[str, Any] = Field(default_factory=dict)

    @field_validator("iptablesAdminChainName")
    @classmethod
    def _chain_name(cls, v: str) -> str:
        if not v or len(v) > MAX_CHAIN_NAME or v[0] in "-!" or any(c.isspace() or c in "\"'\\" for c in v):
            raise ValueError(f"must be a chain name of 1 to {MAX_CHAIN_NAME} characters without quotes or spaces")
        return v


def load(config: dict[str, Any]) -> FirewallConf:
    return netconf.parse(FirewallConf, config, "firewall")
