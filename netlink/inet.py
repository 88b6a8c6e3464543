"""IP address, CIDR and MAC text <-> bytes conversions, without the (slow to import) ipaddress module."""

from __future__ import annotations

# ``_socket`` is the C half of ``socket``; importing the Python wrapper costs ~6 ms (it pulls
# in enum and selectors) for nothing we need.
from _socket import inet_ntop, inet_pton

from netlink.constants import AF_INET, AF_INET6

ADDRESS_BITS = {AF_INET: 32, AF_INET6: 128}


def parse_ip(text: str) -> tuple[int, bytes]:
    """``'10.0.0.1'`` or ``'fd00::1'`` -> (family, packed address); ValueError otherwise."""
    for family in (AF_INET, AF_INET6):
        try:
            return family, inet_pton(family, text)
        except OSError:
            continue
    raise ValueError(f"invalid IP address: {text!r}")


def parse_cidr(text: str) -> tuple[int, bytes, int]:
    """``'10.88.0.1/16'`` -> (family, packed address, prefix length).

    A bare address means a host prefix (/32 or /128). Host bits are kept; callers
    that need the network use ``network_of``.
    """
    address, slash, prefix_text = text.partition("/")
    family, packed = parse_ip(address)
    bits = ADDRESS_BITS[family]
    if not slash:
        return family, packed, bits
    if not (prefix_text.isascii() and prefix_text.isdigit()) or int(prefix_text) > bits:
        raise ValueError(f"invalid prefix length in {text!r}")
    return family, packed, int(prefix_text)


def format_ip(family: int, packed: bytes) -> str:
    return inet_ntop(family, packed)


def _mask(packed: bytes, prefixlen: int) -> int:
    bits = len(packed) * 8
    return ((1 << bits) - 1) ^ ((1 << (bits - prefixlen)) - 1)


def network_of(packed: bytes, prefixlen: int) -> bytes:
    """The address with its host bits cleared."""
    value = int.from_bytes(packed, "big") & _mask(packed, prefixlen)
    return value.to_bytes(len(packed), "big")


def broadcast_of(packed: bytes, prefixlen: int) -> bytes:
    """The address with all its host bits set (the IPv4 directed broadcast)."""
    bits = len(packed) * 8
    value = int.from_bytes(packed, "big") | ((1 << (bits - prefixlen)) - 1)
    return value.to_bytes(len(packed), "big")


def parse_mac(text: str) -> bytes:
    """``'aa:bb:cc:dd:ee:ff'`` (or with '-') -> 6 bytes; ValueError otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(part) == 2 for part in parts):
        raise ValueError(f"invalid MAC address: {text!r}")
    try:
        return bytes.fromhex("".join(parts))
    except ValueError:
        raise ValueError(f"invalid MAC address: {text!r}") from None


def format_mac(packed: bytes) -> str:
    return ":".join(f"{octet:02x}" for octet in packed)
