"""portmap's config: options, port mappings from runtimeConfig, and the container's addresses."""
from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from cni import config as netconf

DEFAULT_MARK_BIT = 13
MAX_CHAIN_NAME = 28  # iptables' limit (XT_EXTENSION_MAXNAMELEN - 1)
MAX_MAPPINGS = 4096
MAX_CONDITION_ARGS = 64


def _valid_chain_name(name: str) -> str:
    if not name or len(name) > MAX_CHAIN_NAME:
        raise ValueError(f"chain name must be 1 to {MAX_CHAIN_NAME} characters")
    if name[0] in "-!" or any(c.isspace() or c in "\"'\\" or not c.isprintable() for c in name):
        raise ValueError("chain name must not start with - or ! nor contain quotes, backslashes or whitespace")
    return name


class PortMapping(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hostPort: StrictInt = Field(ge=1, le=65535)
    containerPort: StrictInt = Field(ge=1, le=65535)
    protocol: str = "tcp"
    hostIP: str = ""

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        proto = v.lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise ValueError("protocol must be tcp, udp or sctp")
        return proto

    @field_validator("hostIP")
    @classmethod
    def _host_ip(cls, v: str) -> str:
        if v:
            ipaddress.ip_address(v)  # "does not appear to be an IPv4 or IPv6 address"
        return v

    def host_ip_for(self, family: int) -> str | None:
        """The destination to match for this family: '' for any, the address, or None to skip the family."""
        if not self.hostIP:
            return ""
        addr = ipaddress.ip_address(self.hostIP)
        if addr.version != family:
            return None
        return "" if addr.is_unspecified else str(addr)


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    portMappings: list[PortMapping] = Field(default_factory=list, max_length=MAX_MAPPINGS)


class PortMapConf(netconf.NetConf):
    snat: StrictBool | None = None
    markMasqBit: StrictInt | None = Field(default=None, ge=0, le=31)
    externalSetMarkChain: str | None = None
    masqAll: StrictBool = False
    conditionsV4: list[str] | None = Field(default=None, max_length=MAX_CONDITION_ARGS)
    conditionsV6: list[str] | None = Field(default=None, max_length=MAX_CONDITION_ARGS)
    backend: Literal["iptables"] | None = None
    stateDir: str | None = None
    runtimeConfig: RuntimeConfig = Field(default_factory=RuntimeConfig)

    _chain = field_validator("externalSetMarkChain")(lambda v: _valid_chain_name(v) if v is not None else v)

    @model_validator(mode="after")
    def _mark_options(self) -> "PortMapConf":
        if self.markMasqBit is not None and self.externalSetMarkChain is not None:
            raise ValueError("Cannot specify externalSetMarkChain and markMasqBit")
        if self.snat is None:
            self.snat = True
        if self.markMasqBit is None and self.externalSetMarkChain is None:
            self.markMasqBit = DEFAULT_MARK_BIT
        return self

    @property
    def mappings(self) -> list[PortMapping]:
        return self.runtimeConfig.portMappings

    @property
    def mark(self) -> int:
        return 1 << (self.markMasqBit if self.markMasqBit is not None else DEFAULT_MARK_BIT)

    def conditions(self, family: int) -> list[str]:
        return list((self.conditionsV4 if family == 4 else self.conditionsV6) or [])


def load(config: dict[str, Any]) -> PortMapConf:
    return netconf.parse(PortMapConf, config, "portmap")


def container_addresses(prev_result: dict[str, Any], ifname: str) -> dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The container's first IPv4 and first IPv6 address (with prefix) on ``ifname``, by family.

    Like the reference: an IP whose ``interface`` index names another interface, or a host-side one
    (no sandbox), is skipped; an IP without an index is accepted.
    """
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
