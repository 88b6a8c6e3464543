"""What the firewall reads from prevResult: the container's addresses per family, and the bridge.

Cheap to import (stdlib and chains.values): DEL goes through here whenever it has no record.
"""
from __future__ import annotations

import _socket as socket  # the C module: socket.py costs ~3 ms to import

from chains.values import validate_interface
from cni.errors import INVALID_CONFIG, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

def host_address(text: str) -> tuple[int, str]:
    """(family, canonical address) of ``10.88.0.5/16`` or ``FD00::0002/64``; ValueError if it is none."""
    address = text.partition("/")[0].strip()
    for family, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        try:
            return family, socket.inet_ntop(af, socket.inet_pton(af, address))
        except OSError:
            continue
    raise ValueError(f"invalid IP address {text!r}")


def host_cidr(address: str) -> str:
    """The address as a one-host network, as iptables prints it: ``/32`` or ``/128``."""
    return f"{address}/128" if ":" in address else f"{address}/32"


def _belongs_to(ip: dict[str, Any], interfaces: list[Any], ifname: str) -> bool:
    """An address without an interface index is the container's; one with an index only when that
    interface is ``ifname`` inside a sandbox (not the host side of a veth, not the bridge)."""
    index = ip.get("interface")
    if index is None:
        return True
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(interfaces):
        return False
    interface = interfaces[index]
    if not isinstance(interface, dict):
        return False
    return interface.get("name") == ifname and bool(interface.get("sandbox"))


def _list(prev: dict[str, Any], key: str) -> list[Any]:
    value = prev.get(key) if isinstance(prev, dict) else None
    if value is None:
        return []
    if not isinstance(value, list):
        raise CNIError(INVALID_CONFIG, f"invalid prevResult: {key}: must be a list (got {str(value)[:40]!r})")
    return value


def container_addresses(prev: dict[str, Any], ifname: str) -> dict[int, list[str]]:
    """The container's addresses by family (4, 6), canonical and without duplicates, in prevResult order."""
    interfaces = _list(prev, "interfaces")
    found: dict[int, list[str]] = {}
    for ip in _list(prev, "ips"):
        if not isinstance(ip, dict) or not _belongs_to(ip, interfaces, ifname):
            continue
        try:
            family, address = host_address(str(ip.get("address", "")))
        except ValueError as exc:
            raise CNIError(INVALID_CONFIG, f"invalid prevResult: ips: {exc}") from None
        if address not in found.setdefault(family, []):
            found[family].append(address)
    return found


def bridge_name(prev: dict[str, Any], policy: str) -> str:
    """The bridge the isolation rules are about: the first interface of the result, as the reference has it."""
    interfaces = _list(prev, "interfaces")
    if not interfaces:
        raise CNIError(INVALID_CONFIG, f'interface needs to be set for ingress policy "{policy}", '
                                       'make sure to chain "firewall" plugin with "bridge"')
    first = interfaces[0]
    name = first.get("name") if isinstance(first, dict) else None
    if not isinstance(name, str) or not name:
        raise CNIError(INVALID_CONFIG, "invalid prevResult: interfaces.0.name: got empty bridge name")
    try:
        if name.endswith("+"):  # iptables would read it as a wildcard for every bridge it prefixes
            raise ValueError("wildcard")
        validate_interface(name)
    except ValueError:
        raise CNIError(INVALID_CONFIG, f"invalid prevResult: interfaces.0.name: not a bridge name (got {name[:40]!r})"
                       ) from None
    return name
