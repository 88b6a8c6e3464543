"""portmap's config as pydantic models: the fallback of :func:`portmap.config.load` for every config its
fast path is not sure about, and the source of the field/value error messages. Importing this module
imports pydantic (~100 ms in a fresh process)."""
from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from cni import config as netconf
from portmap.config import (
    DEFAULT_MARK_BIT,
    PortMapAccessors,
    MAX_CONDITION_ARGS,
    MAX_MAPPINGS,
    PROTOCOLS,
    host_ip_for,
    valid_chain_name,
)


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
        if proto not in PROTOCOLS:
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
        return host_ip_for(self.hostIP, family)


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    portMappings: list[PortMapping] = Field(default_factory=list, max_length=MAX_MAPPINGS)


class PortMapConf(netconf.NetConf, PortMapAccessors):
    snat: StrictBool | None = None
    markMasqBit: StrictInt | None = Field(default=None, ge=0, le=31)
    externalSetMarkChain: str | None = None
    masqAll: StrictBool = False
    conditionsV4: list[str] | None = Field(default=None, max_length=MAX_CONDITION_ARGS)
    conditionsV6: list[str] | None = Field(default=None, max_length=MAX_CONDITION_ARGS)
    backend: Literal["iptables", "nftables"] | None = None
    stateDir: str | None = None
    runtimeConfig: RuntimeConfig = Field(default_factory=RuntimeConfig)

    _chain = field_validator("externalSetMarkChain")(lambda v: valid_chain_name(v) if v is not None else v)

    @model_validator(mode="after")
    def _mark_options(self) -> "PortMapConf":
        if self.markMasqBit is not None and self.externalSetMarkChain is not None:
            raise ValueError("Cannot specify externalSetMarkChain and markMasqBit")
        if self.snat is None:
            self.snat = True
        if self.markMasqBit is None and self.externalSetMarkChain is None:
            self.markMasqBit = DEFAULT_MARK_BIT
        return self
