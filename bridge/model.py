"""The bridge config's pydantic model: the fallback of :func:`bridge.config.load` for every config its
fast path is not sure about, and the source of the field/value error messages. Importing this module
imports pydantic (~100 ms in a fresh process)."""
from __future__ import annotations

from typing import Any

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bridge import DEFAULT_BRIDGE
from cni import config as netconf


class BridgeConf(netconf.NetConf):
    bridge: str = DEFAULT_BRIDGE
    isGateway: bool = False
    isDefaultGateway: bool = False
    forceAddress: bool = False
    ipMasq: bool = False
    ipMasqBackend: Literal["iptables", "nftables"] | None = None
    mtu: int = Field(default=0, ge=0, le=65535)
    hairpinMode: bool = False
    promiscMode: bool = False
    vlan: int = Field(default=0, ge=0, le=4094)
    macspoofchk: bool = False
    enabledad: bool = False
    ipam: dict[str, Any] = Field(default_factory=dict)
    dns: dict[str, Any] | None = None
    stateDir: str | None = None
    runtimeConfig: dict[str, Any] = Field(default_factory=dict)
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("bridge")
    @classmethod
    def _bridge_name(cls, v: str) -> str:
        from cni.skel import ifname_problem  # noqa: PLC0415

        problem = ifname_problem(v)
        if problem:
            raise ValueError(f"invalid bridge name: {problem}")
        return v

    @model_validator(mode="after")
    def _exclusive_modes(self) -> "BridgeConf":
        if self.hairpinMode and self.promiscMode:
            raise ValueError("cannot set hairpin mode and promiscuous mode at the same time")
        if self.isDefaultGateway:
            self.isGateway = True
        return self
