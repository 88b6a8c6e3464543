"""The bridge plugin's network config, validated like the reference does (plus field/value messages)."""
from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from cni import config as netconf
from cni.errors import INVALID_CONFIG, CNIError

_MAC = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
from bridge import DEFAULT_BRIDGE  # noqa: E402


class BridgeConf(netconf.NetConf):
    bridge: str = DEFAULT_BRIDGE
    isGateway: bool = False
    isDefaultGateway: bool = False
    forceAddress: bool = False
    ipMasq: bool = False
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


def load(config: dict[str, Any]) -> BridgeConf:
    return netconf.parse(BridgeConf, config, "bridge")


def container_mac(conf: BridgeConf, cni_args: dict[str, str]) -> str | None:
    """The requested container MAC: CNI_ARGS MAC, then args.cni.mac, then runtimeConfig.mac (later wins)."""
    mac = cni_args.get("MAC") or None
    cni_block = conf.args.get("cni") if isinstance(conf.args.get("cni"), dict) else {}
    mac = cni_block.get("mac") or mac
    mac = conf.runtimeConfig.get("mac") or mac
    if mac is None:
        return None
    if not isinstance(mac, str) or not _MAC.match(mac):
        raise CNIError(INVALID_CONFIG, f"invalid MAC address {mac!r}")
    return mac.lower()
