"""firewall's config as a pydantic model: the fallback of :func:`firewall.config.load` for every config
its fast path is not sure about, and the source of the field/value error messages. Importing this
module imports pydantic (~100 ms in a fresh process)."""
from __future__ import annotations

from pydantic import field_validator

from cni import config as netconf
from firewall.config import BACKENDS, POLICIES, FirewallAccessors, admin_chain_name
from firewall.rules import DEFAULT_ADMIN_CHAIN, OPEN


class FirewallConf(netconf.NetConf, FirewallAccessors):
    """The keys the iptables backend reads; firewalld's (``firewalldZone``) are accepted and ignored."""

    backend: str | None = None
    iptablesAdminChainName: str = DEFAULT_ADMIN_CHAIN
    ingressPolicy: str = OPEN
    stateDir: str | None = None

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str | None) -> str | None:
        if v not in (None, "", *BACKENDS):
            raise ValueError(f"unrecognized backend {v!r}: expected one of {', '.join(BACKENDS)}")
        return v

    @field_validator("iptablesAdminChainName")
    @classmethod
    def _admin_chain(cls, v: str) -> str:
        return admin_chain_name(v)

    @field_validator("ingressPolicy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v == "":
            return OPEN
        if v not in POLICIES:
            raise ValueError(f"unknown ingress policy, expected one of {', '.join(POLICIES)}")
        return v

