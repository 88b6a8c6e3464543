"""Canonical forms of the values iptables rules carry, as the kernel hands them back.

Each ``canonical_*`` function takes what a user or plugin may write (``10.88.0.5/16``,
``http``, ``8192/0x2000``) and returns what ``iptables-legacy-save`` prints for it
(``10.88.0.0/16``, ``80``, ``0x2000/0x2000``), raising ValueError for anything the
kernel would refuse or this package cannot represent.
"""
from __future__ import annotations

import re
import _socket as socket  # the C module: socket.py costs ~3 ms to import
from collections.abc import Callable, Sequence

MAX_COMMENT_BYTES = 255  # the kernel's comment match keeps at most 255 bytes
MAX_CHAIN_NAME = 28  # XT_EXTENSION_MAXNAMELEN - 1
MULTIPORT_SLOTS = 15  # a range takes two

_CHAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_IFACE_NAME = re.compile(r"[A-Za-z0-9_.@-]+\+?\Z")
# xtables_save_string leaves these unquoted; anything else is double-quoted.
_SAVE_STRING_BARE = re.compile(r"[A-Za-z0-9_-]+\Z")
_SAVE_STRING_ESCAPED = re.compile(r"[\"\\']")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def canonical_network(text: str, *, keep_any: bool = False) -> tuple[str | None, int]:
    """``addr[/prefix|/netmask]`` as iptables stores it: masked, with the prefix length.

    Returns ``(text, family)``; text is None for "any address" unless ``keep_any`` (a
    negated ``! -s 0.0.0.0/0`` is still printed by iptables-save).
    """
    address, slash, mask_text = text.strip().partition("/")
    family, packed = _parse_address(address)
    bits = 32 if family == 4 else 128
    if not slash:
        prefix = bits
    elif mask_text.isdigit():
        prefix = int(mask_text)
        if prefix > bits:
            raise ValueError(f"invalid prefix length in {text!r}")
    else:
        prefix = _netmask_prefix(mask_text, family, text)
    host_bits = bits - prefix
    value = (int.from_bytes(packed, "big") >> host_bits) << host_bits if host_bits < bits else 0
    if prefix == 0 and not keep_any:
        return None, family
    network = value.to_bytes(bits // 8, "big")
    return f"{_format_address(network, family)}/{prefix}", family


def _parse_address(text: str) -> tuple[int, bytes]:
    for family, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        try:
            packed = socket.inet_pton(af, text)
        except OSError:
            continue
        if family == 4 and text.count(".") != 3:
            break  # inet_pton is strict already; this guards odd libc variants
        return family, packed
    raise ValueError(f"invalid IP address {text!r}")


def _format_address(packed: bytes, family: int) -> str:
    # inet_ntop, not ipaddress: glibc prints IPv4-mapped IPv6 addresses as ::ffff:1.2.3.4
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, packed)


def _netmask_prefix(mask_text: str, family: int, whole: str) -> int:
    mask_family, packed = _parse_address(mask_text)
    if mask_family != family:
        raise ValueError(f"netmask family does not match address in {whole!r}")
    bits = len(packed) * 8
    value = int.from_bytes(packed, "big")
    inverted = ~value & ((1 << bits) - 1)
    if inverted & (inverted + 1):
        raise ValueError(f"non-contiguous netmask in {whole!r} is not supported")
    return bits - inverted.bit_length()


def canonical_address(text: str) -> tuple[str, int]:
    """A single IP address in inet_ntop form, and its family."""
    family, packed = _parse_address(text.strip())
    return _format_address(packed, family), family


_CHAIN_PROTOCOLS = {  # xtables_chain_protos: used when /etc/protocols lacks a number
    "tcp": 6, "sctp": 132, "udp": 17, "udplite": 136, "icmp": 1, "icmpv6": 58,
    "ipv6-icmp": 58, "esp": 50, "ah": 51, "mh": 135, "all": 0,
}
_protocol_names: dict[int, str] = {}


def _etc_protocols() -> dict[int, str]:
    """Number -> official name from /etc/protocols, as getprotobynumber(3) answers."""
    if not _protocol_names:
        _protocol_names[-1] = ""  # marks "read", even if the file is missing
        try:
            with open("/etc/protocols", encoding="utf-8", errors="replace") as table:
                for line in table:
                    words = line.split("#", 1)[0].split()
                    if len(words) >= 2 and words[1].isdigit():
                        _protocol_names.setdefault(int(words[1]), words[0])
        except OSError:
            pass
    return _protocol_names


def protocol_number(text: str | int) -> int:
    """``tcp``, ``TCP``, ``6`` -> 6. ValueError for names nobody knows."""
    word = str(text).strip().lower()
    if word.isdigit():
        number = int(word)
        if number > 255:
            raise ValueError(f"invalid protocol number {text!r}")
        return number
    if word in _CHAIN_PROTOCOLS:
        return _CHAIN_PROTOCOLS[word]
    try:
        return socket.getprotobyname(word)
    except OSError:
        raise ValueError(f"unknown protocol {text!r}") from None


def protocol_name(number: int) -> str:
    """The name iptables-save prints for a protocol number."""
    if number in (6, 17, 1):
        return {6: "tcp", 17: "udp", 1: "icmp"}[number]
    name = _etc_protocols().get(number)
    if name:
        return name
    for known, known_number in _CHAIN_PROTOCOLS.items():
        if known_number == number:
            return known
    return str(number)


def canonical_protocol(text: str | int) -> str | None:
    number = protocol_number(text)
    return None if number == 0 else protocol_name(number)


def canonical_port(text: str) -> int:
    word = text.strip()
    if word.isdigit():
        port = int(word)
    else:
        try:
            port = socket.getservbyname(word)
        except OSError:
            raise ValueError(f"invalid port {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {text!r} out of range")
    return port


def canonical_port_range(text: str) -> str | None:
    """``80``, ``80:90``, ``80:``, ``:90`` as the tcp/udp match prints them.

    The full range 0:65535 is what an unset option means: None (dropped, unless negated).
    """
    low_text, colon, high_text = text.partition(":")
    low = canonical_port(low_text) if low_text.strip() else 0
    high = (canonical_port(high_text) if high_text.strip() else 65535) if colon else low
    if low > high:
        raise ValueError(f"invalid port range {text!r} (min > max)")
    if (low, high) == (0, 65535):
        return None
    return str(low) if low == high else f"{low}:{high}"


def canonical_port_list(text: str) -> str:
    """A multiport list: at most 15 slots, a range ``a:b`` (a < b) taking two."""
    items = []
    slots = 0
    for item in text.split(","):
        low_text, colon, high_text = item.partition(":")
        if colon:
            low, high = canonical_port(low_text), canonical_port(high_text)
            if low >= high:
                raise ValueError(f"invalid port range {item!r} in {text!r}")
            items.append(f"{low}:{high}")
            slots += 2
        else:
            items.append(str(canonical_port(item)))
            slots += 1
    if slots > MULTIPORT_SLOTS:
        raise ValueError(f"too many ports in {text!r}: multiport takes at most {MULTIPORT_SLOTS}")
    return ",".join(items)


def _canonical_flag_list(order: Sequence[str], what: str) -> Callable[[str], str]:
    def canonical(text: str) -> str:
        wanted = {word.strip().upper() for word in text.split(",")}
        unknown = wanted - set(order)
        if unknown or not text.strip():
            raise ValueError(f"invalid {what} {text!r}")
        return ",".join(name for name in order if name in wanted)

    return canonical


canonical_ct_states = _canonical_flag_list(
    ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"), "conntrack state list"
)
canonical_addr_types = _canonical_flag_list(
    ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE",
     "PROHIBIT", "THROW", "NAT", "XRESOLVE"),
    "address type list",
)


def _parse_u32(text: str) -> int:
    word = text.strip().lower()
    try:
        if word.startswith("0x"):
            value = int(word, 16)
        elif len(word) > 1 and word.startswith("0"):
            value = int(word, 8)  # strtoul(base 0) reads a leading 0 as octal
        else:
            value = int(word, 10)
    except ValueError:
        raise ValueError(f"invalid mark value {text!r}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"mark value {text!r} out of range")
    return value


def _value_and_mask(text: str) -> tuple[int, int | None]:
    value_text, slash, mask_text = text.partition("/")
    return _parse_u32(value_text), (_parse_u32(mask_text) if slash else None)


def canonical_mark(text: str) -> str:
    """``--mark value[/mask]``: hex, the mask omitted when it is all ones."""
    value, mask = _value_and_mask(text)
    if mask is None or mask == 0xFFFFFFFF:
        return f"{value:#x}"
    return f"{value:#x}/{mask:#x}"


def canonical_xmark(text: str) -> str:
    """``--set-xmark value[/mask]``: always printed with its mask."""
    value, mask = _value_and_mask(text)
    return f"{value:#x}/{0xFFFFFFFF if mask is None else mask:#x}"


def canonical_set_mark(text: str) -> str:
    """``--set-mark value[/mask]`` is stored as ``--set-xmark value/(mask|value)``."""
    value, mask = _value_and_mask(text)
    return f"{value:#x}/{(0xFFFFFFFF if mask is None else mask) | value:#x}"


def canonical_nat_address(text: str) -> str:
    """``ip``, ``ip:port``, ``[ip6]``, ``[ip6]:port`` as the NAT targets print them."""
    word = text.strip()
    port: str | None = None
    if word.startswith("["):
        address, bracket, rest = word[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid NAT address {text!r}")
        port = rest[1:] if rest else None
    elif word.count(":") == 1:
        address, _, port = word.partition(":")
    else:
        address = word
    if "-" in address or (port is not None and "-" in port):
        raise ValueError(f"NAT address ranges are not supported: {text!r}")
    canonical, family = canonical_address(address)
    if port is None:
        return canonical
    number = canonical_port(port)
    if number == 0:
        raise ValueError(f"invalid port in NAT address {text!r}")
    return f"[{canonical}]:{number}" if family == 6 else f"{canonical}:{number}"


def nat_address_family(value: str) -> int:
    return 6 if value.startswith("[") or value.count(":") > 1 else 4


def truncate_comment(text: str) -> str:
    """Fit a comment into the kernel's 255 bytes: first 252 bytes (whole characters) + "..."."""
    raw = text.encode()
    if len(raw) <= MAX_COMMENT_BYTES:
        return text
    return raw[: MAX_COMMENT_BYTES - 3].decode(errors="ignore") + "..."


def canonical_comment(text: str) -> str:
    """Control characters become spaces (a newline would split iptables-save's line), then
    the comment is cut to 255 bytes. An empty comment is refused: python-iptables cannot
    hand an empty argument to the extension parser."""
    if not text:
        raise ValueError("comment must not be empty")
    return truncate_comment(_CONTROL_CHARS.sub(" ", text))


def save_string(value: str) -> str:
    """Quote a string option value exactly as iptables-save's xtables_save_string does."""
    if _SAVE_STRING_BARE.match(value):
        return value
    return '"' + _SAVE_STRING_ESCAPED.sub(lambda m: "\\" + m.group(0), value) + '"'


def validate_chain_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_CHAIN_NAME or not _CHAIN_NAME.match(name):
        raise ValueError(
            f"invalid chain name {name!r}: 1-{MAX_CHAIN_NAME} characters of A-Z a-z 0-9 _ . -, "
            "not starting with . or -"
        )
    return name


def validate_interface(name: str) -> str:
    if not 0 < len(name) < 16 or not _IFACE_NAME.match(name):
        raise ValueError(f"invalid interface name {name!r}")
    return name

