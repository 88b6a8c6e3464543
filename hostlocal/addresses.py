"""Textual IP addresses and CIDRs, parsed with the rules the reference (Go ``net``) applies.

Differences from a bare ``ipaddress`` call that matter for interoperability:
- an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) *is* the IPv4 address, as in Go, so it names
  the same reservation file;
- zone suffixes (``fe80::1%eth0``) and netmask-style prefixes (``/255.255.255.0``) are rejected;
- a CIDR keeps the address as written (host bits included) next to its network.
"""
from __future__ import annotations

import ipaddress

TYPE_CHECKING = False  # typing costs milliseconds per exec; type checkers treat this as True
if TYPE_CHECKING:
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: object) -> IPAddress:
    """A bare IP address. Raises ValueError for anything else (including ``a.b.c.d/n``)."""
    if not isinstance(text, str) or "%" in text or "/" in text:
        raise ValueError(f"invalid IP address {text!r}")
    return unmap(ipaddress.ip_address(text))


def parse_ip_ignoring_prefix(text: object) -> IPAddress:
    """An IP address, optionally written with a prefix length that is validated and then dropped.

    The reference accepts requested IPs as ``10.1.2.3`` or ``10.1.2.3/24`` (CNI_ARGS ``IP=``,
    ``args.cni.ips``, ``runtimeConfig.ips``).
    """
    if isinstance(text, str) and "/" in text:
        address, _ = parse_cidr(text)
        return address
    return parse_ip(text)


def parse_cidr(text: object) -> tuple[IPAddress, IPNetwork]:
    """``"10.1.2.3/24"`` -> (10.1.2.3, 10.1.2.0/24). Raises ValueError unless it is ``address/decimal``."""
    if not isinstance(text, str):
        raise ValueError(f"invalid CIDR address {text!r}")
    address, sep, prefix = text.partition("/")
    if not sep or not (prefix.isascii() and prefix.isdigit()) or "%" in address:
        raise ValueError(f"invalid CIDR address {text!r}")
    interface = ipaddress.ip_interface(text)
    return interface.ip, interface.network


def unmap(address: IPAddress) -> IPAddress:
    """``::ffff:a.b.c.d`` -> ``a.b.c.d``; any other address unchanged."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_of(version: int, value: int) -> IPAddress:
    """The address of the given family with the given integer value."""
    if version == 4:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)
