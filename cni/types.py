"""Typed result models (pydantic) for every spec version, and validation of results against them.

These are the schema of what plugins print and receive as ``prevResult``. Plugins that need a
typed view of a result (portmap reading the container's addresses, tests checking that output
parses as its version) validate with these; the hot conversion path in ``cni.result`` stays on
plain dicts so that a plugin that never looks inside a result does not pay for pydantic.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cni import version as versions


def _cidr(value: str) -> str:
    ipaddress.ip_interface(value)  # raises ValueError with a clear message
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length")
    return value


def _ip(value: str) -> str:
    ipaddress.ip_address(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class DNS(_Model):
    nameservers: list[str] = Field(default_factory=list)
    domain: str = ""
    search: list[str] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)


class Route(_Model):
    dst: str
    gw: str | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    _check_dst = field_validator("dst")(_cidr)

    @field_validator("gw")
    @classmethod
    def _check_gw(cls, v: str | None) -> str | None:
        return _ip(v) if v else v


class Interface(_Model):
    name: str
    mac: str = ""
    mtu: int | None = None
    sandbox: str = ""
    socketPath: str = ""
    pciID: str = ""


class IPConfig(_Model):
    address: str
    gateway: str | None = None
    interface: int | None = Field(default=None, ge=0)

    _check_address = field_validator("address")(_cidr)

    @field_validator("gateway")
    @classmethod
    def _check_gateway(cls, v: str | None) -> str | None:
        return _ip(v) if v else v


class IPConfig040(IPConfig):
    version: Literal["4", "6"] | None = None


class Result100(_Model):
    """1.0.0 and 1.1.0."""

    cniVersion: str
    interfaces: list[Interface] = Field(default_factory=list)
    ips: list[IPConfig] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    dns: DNS | None = None


class Result040(Result100):
    """0.3.0, 0.3.1 and 0.4.0: ``ips`` carry ``version``."""

    ips: list[IPConfig040] = Field(default_factory=list)  # type: ignore[assignment]


class IPBlock020(_Model):
    ip: str
    gateway: str | None = None
    routes: list[Route] = Field(default_factory=list)

    _check_ip = field_validator("ip")(_cidr)


class Result020(_Model):
    """0.1.0 and 0.2.0: at most one address per family."""

    cniVersion: str
    ip4: IPBlock020 | None = None
    ip6: IPBlock020 | None = None
    dns: DNS | None = None


class ErrorResult(_Model):
    cniVersion: str | None = None
    code: int
    msg: str
    details: str = ""


def model_for(version: str) -> type[_Model]:
    family = versions.result_family(version)
    return {versions.FAMILY_020: Result020, versions.FAMILY_040: Result040}.get(family, Result100)


def validate_result(data: dict[str, Any], version: str) -> _Model:
    """Parse ``data`` as a result of ``version``; raises pydantic.ValidationError when it is not one.

    A result of another family (e.g. 0.4.0 ``version`` keys in a 1.0.0 result) is rejected too.
    """
    declared = data.get("cniVersion")
    if declared != version:
        raise ValueError(f"result declares cniVersion {declared!r}, expected {version!r}")
    model = model_for(version).model_validate(data)
    if versions.result_family(version) == versions.FAMILY_100:
        if any("version" in ip for ip in data.get("ips") or []):
            raise ValueError("a 1.x result must not carry ips[].version")
    if versions.result_family(version) == versions.FAMILY_040:
        if any("version" not in ip for ip in data.get("ips") or []):
            raise ValueError("a 0.3.x/0.4.0 result must carry ips[].version")
    return model
