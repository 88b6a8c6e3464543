"""A backend-neutral model of iptables rules, with their canonical iptables-save text.

A :class:`Rule` is a chain name, the IP header conditions (``-s``, ``-d``, ``-i``, ``-o``,
``-p``, ``-f``), an ordered tuple of :class:`Match` extensions and a :class:`Target`.
Every value is brought to the form the kernel hands back when the object is built
(``-s 10.88.0.5/16`` becomes ``10.88.0.0/16``, ``--set-mark 0x2000`` becomes
``--set-xmark 0x2000/0xffffffff``, option order follows what iptables-save prints), so
two rules are equal exactly when iptables would consider them the same rule, and
:func:`render` prints exactly the line ``iptables-legacy-save`` prints for it.

Only extensions and options listed in :data:`MATCH_SPECS` and :data:`TARGET_SPECS` can be
built or parsed: anything else raises ValueError rather than being passed through as
text. Values never become rule fragments: each is one argument to the extension, and
:func:`render` quotes strings the way iptables-save does.

Rules read back from the kernel (see :mod:`chains.table`) may carry extensions outside
that list; they are built without validation and compare unequal to anything built here.
"""
from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, fields, replace

VERDICTS = frozenset({"ACCEPT", "DROP", "RETURN", "QUEUE"})
#: Fields of the IP header part that can be negated with ``!``.
HEADER_FIELDS = ("src", "dst", "in_iface", "out_iface", "protocol", "fragment")
MAX_COMMENT_BYTES = 255  # the kernel's comment match keeps at most 255 bytes
MAX_CHAIN_NAME = 28  # XT_EXTENSION_MAXNAMELEN - 1
MULTIPORT_SLOTS = 15  # a range takes two

_CHAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_IFACE_NAME = re.compile(r"[A-Za-z0-9_.@-]+\+?\Z")
# xtables_save_string leaves these unquoted; anything else is double-quoted.
_SAVE_STRING_BARE = re.compile(r"[A-Za-z0-9_-]+\Z")
_SAVE_STRING_ESCAPED = re.compile(r"[\"\\']")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

OptionPairs = tuple[tuple[str, "str | None"], ...]


# --------------------------------------------------------------------------- values


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
    the comment is cut to 255 bytes."""
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


# --------------------------------------------------------------------------- extension specs


@dataclass(frozen=True)
class OptionSpec:
    """One option of an extension, as iptables parses and saves it."""

    name: str
    aliases: tuple[str, ...] = ()
    takes_value: bool = True
    invertible: bool = False
    canonical: Callable[[str], str | None] | None = None
    quoted: bool = False  # printed through xtables_save_string
    save_as: str | None = None  # stored (and printed) as this option instead


@dataclass(frozen=True)
class ExtensionSpec:
    """A match or target extension: its options in the order iptables-save prints them."""

    name: str
    options: tuple[OptionSpec, ...]
    required_one_of: tuple[str, ...] = ()  # at least one of these (by canonical name)
    exclusive: bool = False  # at most one option
    protocols: frozenset[str] | None = None  # the rule's -p must be one of these
    port_protocols: frozenset[str] | None = None  # ... when a NAT address carries a port

    def option(self, name: str) -> OptionSpec | None:
        for spec in self.options:
            if name == spec.name or name in spec.aliases:
                return spec
        return None

    def position(self, name: str) -> int:
        for index, spec in enumerate(self.options):
            if name == (spec.save_as or spec.name):
                return index
        return len(self.options)


_PORT_PROTOCOLS = frozenset({"tcp", "udp", "udplite", "sctp", "dccp"})
_NAT_PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp", "dccp"})


def _ports_spec(protocol: str) -> ExtensionSpec:
    return ExtensionSpec(
        protocol,
        (
            OptionSpec("sport", ("source-port",), invertible=True, canonical=canonical_port_range),
            OptionSpec("dport", ("destination-port",), invertible=True, canonical=canonical_port_range),
        ),
        protocols=frozenset({protocol}),
    )


MATCH_SPECS: Mapping[str, ExtensionSpec] = {
    "comment": ExtensionSpec(
        "comment", (OptionSpec("comment", canonical=canonical_comment, quoted=True),), required_one_of=("comment",)
    ),
    "tcp": _ports_spec("tcp"),
    "udp": _ports_spec("udp"),
    "multiport": ExtensionSpec(
        "multiport",
        (
            OptionSpec("sports", ("source-ports",), invertible=True, canonical=canonical_port_list),
            OptionSpec("dports", ("destination-ports",), invertible=True, canonical=canonical_port_list),
            OptionSpec("ports", invertible=True, canonical=canonical_port_list),
        ),
        required_one_of=("sports", "dports", "ports"),
        exclusive=True,
        protocols=_PORT_PROTOCOLS,
    ),
    "addrtype": ExtensionSpec(
        "addrtype",
        (
            OptionSpec("src-type", invertible=True, canonical=canonical_addr_types),
            OptionSpec("dst-type", invertible=True, canonical=canonical_addr_types),
            OptionSpec("limit-iface-in", takes_value=False),
            OptionSpec("limit-iface-out", takes_value=False),
        ),
        required_one_of=("src-type", "dst-type"),
    ),
    "conntrack": ExtensionSpec(
        "conntrack",
        (OptionSpec("ctstate", invertible=True, canonical=canonical_ct_states),),
        required_one_of=("ctstate",),
    ),
    "mark": ExtensionSpec(
        "mark", (OptionSpec("mark", invertible=True, canonical=canonical_mark),), required_one_of=("mark",)
    ),
}

TARGET_SPECS: Mapping[str, ExtensionSpec] = {
    "DNAT": ExtensionSpec(
        "DNAT",
        (OptionSpec("to-destination", canonical=canonical_nat_address),),
        required_one_of=("to-destination",),
        port_protocols=_NAT_PORT_PROTOCOLS,
    ),
    "SNAT": ExtensionSpec(
        "SNAT",
        (OptionSpec("to-source", canonical=canonical_nat_address),),
        required_one_of=("to-source",),
        port_protocols=_NAT_PORT_PROTOCOLS,
    ),
    "MASQUERADE": ExtensionSpec("MASQUERADE", (OptionSpec("random", takes_value=False),)),
    "MARK": ExtensionSpec(
        "MARK",
        (
            OptionSpec("set-xmark", canonical=canonical_xmark),
            OptionSpec("set-mark", canonical=canonical_set_mark, save_as="set-xmark"),
        ),
        required_one_of=("set-xmark",),
        exclusive=True,
    ),
}

# Target extensions iptables knows but this model does not: never mistake them for chains.
_UNSUPPORTED_TARGETS = frozenset(
    "AUDIT CHECKSUM CLASSIFY CLUSTERIP CONNMARK CONNSECMARK CT DSCP ECN HL HMARK IDLETIMER LED LOG "
    "MIRROR NETMAP NFLOG NFQUEUE NOTRACK RATEEST REDIRECT REJECT SAME SECMARK SET SYNPROXY TCPMSS "
    "TCPOPTSTRIP TEE TOS TPROXY TRACE TTL ULOG".split()
)


def _canonical_options(
    spec: ExtensionSpec, options: Iterable[tuple[str, str | None]], negated: Iterable[str], kind: str
) -> tuple[OptionPairs, frozenset[str]]:
    """Validate and canonicalise ``options`` of one extension; returns (options, negated)."""
    given = {}
    for raw_name, raw_value in options:
        name = raw_name[2:] if raw_name.startswith("--") else raw_name
        option = spec.option(name)
        if option is None:
            raise ValueError(f"{kind} {spec.name}: unsupported option --{name}")
        if option.takes_value and not isinstance(raw_value, str):
            raise ValueError(f"{kind} {spec.name}: option --{name} needs a value")
        if not option.takes_value and raw_value is not None:
            raise ValueError(f"{kind} {spec.name}: option --{name} takes no value")
        stored = option.save_as or option.name
        if stored in given:
            raise ValueError(f"{kind} {spec.name}: option --{stored} given more than once")
        value = option.canonical(raw_value) if option.canonical and raw_value is not None else raw_value
        given[stored] = (option, value)
    negated_names = set()
    for raw_name in negated:
        name = raw_name[2:] if raw_name.startswith("--") else raw_name
        option = spec.option(name)
        stored = (option.save_as or option.name) if option else name
        if option is None or stored not in given:
            raise ValueError(f"{kind} {spec.name}: cannot negate --{name}, it is not set")
        if not option.invertible:
            raise ValueError(f"{kind} {spec.name}: option --{name} cannot be negated")
        negated_names.add(stored)
    if spec.required_one_of and not any(name in given for name in spec.required_one_of):
        wanted = " or ".join(f"--{name}" for name in spec.required_one_of)
        raise ValueError(f"{kind} {spec.name}: {wanted} is required")
    if spec.exclusive and len(given) > 1:
        raise ValueError(f"{kind} {spec.name}: only one of its options may be given")
    kept: list[tuple[str, str | None]] = []
    for name in sorted(given, key=spec.position):
        option, value = given[name]
        if option.takes_value and value is None:
            # canonical for "no condition" (a 0:65535 port range): iptables-save prints
            # nothing for it unless it is negated
            if name not in negated_names:
                continue
            value = "0:65535"
        kept.append((name, value))
    return tuple(kept), frozenset(negated_names)


# --------------------------------------------------------------------------- model


def _trusted(cls: type, **values: object) -> object:
    """Build a frozen model object without validation (values read back from the kernel)."""
    obj = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(obj, name, value)
    return obj


@dataclass(frozen=True)
class Match:
    """``-m name [!] --option value ...``; ``negated`` names the options preceded by ``!``."""

    name: str
    options: OptionPairs = ()
    negated: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        spec = MATCH_SPECS.get(self.name)
        if spec is None:
            raise ValueError(f"unsupported match extension {self.name!r}")
        options, negated = _canonical_options(spec, _pairs(self.options), self.negated, "match")
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "negated", negated)

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)


@dataclass(frozen=True)
class Target:
    """``-j name [--option value ...]`` (``-g`` when ``goto``); ``""`` means no target.

    The name is a verdict (ACCEPT, DROP, RETURN, QUEUE), a supported target extension
    (:data:`TARGET_SPECS`) or a chain to jump to.
    """

    name: str
    options: OptionPairs = ()
    goto: bool = False

    def __post_init__(self) -> None:
        spec = TARGET_SPECS.get(self.name)
        if spec is not None:
            options, _ = _canonical_options(spec, _pairs(self.options), (), "target")
            object.__setattr__(self, "options", options)
        elif self.name in _UNSUPPORTED_TARGETS:
            raise ValueError(f"unsupported target extension {self.name!r}")
        else:
            if self.name:
                validate_chain_name(self.name)
            if self.options:
                raise ValueError(f"target {self.name or '(none)'} takes no options")
        if self.goto and (spec is not None or self.name in VERDICTS or not self.name):
            raise ValueError(f"-g needs a chain, not {self.name or '(none)'}")

    @property
    def is_extension(self) -> bool:
        return self.name in TARGET_SPECS

    @property
    def is_chain_jump(self) -> bool:
        return bool(self.name) and self.name not in VERDICTS and self.name not in TARGET_SPECS

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)


def _pairs(options: object) -> list[tuple[str, str | None]]:
    if isinstance(options, Mapping):
        return list(options.items())
    pairs = []
    for item in options:  # type: ignore[attr-defined]
        if isinstance(item, str) or len(item) != 2:
            raise ValueError(f"options must be (name, value) pairs, got {item!r}")
        pairs.append((item[0], item[1]))
    return pairs


@dataclass(frozen=True)
class Conditions:
    """The part of a rule before the target: IP header fields and matches.

    This is what ``conditionsV4``/``conditionsV6`` style argument lists describe; turn it
    into a rule with :meth:`to_rule`.
    """

    src: str | None = None
    dst: str | None = None
    in_iface: str | None = None
    out_iface: str | None = None
    protocol: str | None = None
    fragment: bool = False
    matches: tuple[Match, ...] = ()
    negated: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _canonicalise_header(self)

    def to_rule(self, chain: str, target: Target) -> Rule:
        return Rule(chain, **_header_values(self), target=target)

    def extended(self, other: Conditions) -> Conditions:
        """These conditions followed by ``other``'s (its header fields must not clash)."""
        values = _header_values(self)
        for name in HEADER_FIELDS:
            theirs = getattr(other, name)
            if theirs not in (None, False):
                if values[name] not in (None, False):
                    raise ValueError(f"conditions set {_HEADER_FLAGS[name]} twice")
                values[name] = theirs
        values["matches"] = self.matches + other.matches
        values["negated"] = self.negated | other.negated
        return Conditions(**values)  # type: ignore[arg-type]

    @property
    def family(self) -> int | None:
        return _family_of(self)


@dataclass(frozen=True)
class Rule:
    """One iptables rule in ``chain``: conditions, matches in order, and a target.

    ``negated`` names the header fields preceded by ``!`` (see :data:`HEADER_FIELDS`).
    """

    chain: str
    _: KW_ONLY
    target: Target
    src: str | None = None
    dst: str | None = None
    in_iface: str | None = None
    out_iface: str | None = None
    protocol: str | None = None
    fragment: bool = False
    matches: tuple[Match, ...] = ()
    negated: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        validate_chain_name(self.chain)
        if not isinstance(self.target, Target):
            raise ValueError(f"target must be a Target, got {self.target!r}")
        _canonicalise_header(self)
        _check_target_needs(self)

    @property
    def family(self) -> int | None:
        """4 or 6 when an address pins the rule to a family, else None."""
        return _family_of(self)

    @property
    def conditions(self) -> Conditions:
        return Conditions(**_header_values(self))  # type: ignore[arg-type]

    def with_chain(self, chain: str) -> Rule:
        return replace(self, chain=chain)


_HEADER_FLAGS = {"src": "-s", "dst": "-d", "in_iface": "-i", "out_iface": "-o", "protocol": "-p", "fragment": "-f"}


def _header_values(obj: Conditions | Rule) -> dict[str, object]:
    names = [f.name for f in fields(Conditions)]
    return {name: getattr(obj, name) for name in names}


def _canonicalise_header(obj: Conditions | Rule) -> None:
    set_attr = object.__setattr__
    negated = frozenset(obj.negated)
    unknown = negated - set(HEADER_FIELDS)
    if unknown:
        raise ValueError(f"cannot negate {sorted(unknown)}: negatable fields are {list(HEADER_FIELDS)}")
    families = set()
    for name in ("src", "dst"):
        value = getattr(obj, name)
        if value is not None:
            text, family = canonical_network(value, keep_any=name in negated)
            families.add(family)
            set_attr(obj, name, text)
    for name in ("in_iface", "out_iface"):
        value = getattr(obj, name)
        if value is not None:
            validate_interface(value)
    if obj.protocol is not None:
        set_attr(obj, "protocol", canonical_protocol(obj.protocol))
        if obj.protocol is None and "protocol" in negated:
            raise ValueError("! -p all would never match")
    set_attr(obj, "fragment", bool(obj.fragment))
    for name in negated:
        if getattr(obj, name) in (None, False):
            raise ValueError(f"cannot negate {_HEADER_FLAGS[name]}: it is not set")
    set_attr(obj, "negated", negated)
    matches = tuple(obj.matches)
    for match in matches:
        if not isinstance(match, Match):
            raise ValueError(f"matches must be Match objects, got {match!r}")
        _check_protocol(MATCH_SPECS.get(match.name), obj, f"match {match.name}")
    set_attr(obj, "matches", matches)
    if len(families) > 1:
        raise ValueError("rule mixes IPv4 and IPv6 addresses")
    if obj.fragment and 6 in families:
        raise ValueError("-f exists for IPv4 only")


def _check_protocol(spec: ExtensionSpec | None, obj: Conditions | Rule, what: str) -> None:
    allowed = spec.protocols if spec else None
    if allowed is None:
        return
    if obj.protocol not in allowed or "protocol" in obj.negated:
        wanted = ", ".join(f"-p {p}" for p in sorted(allowed))
        raise ValueError(f"{what} needs {wanted}")


def _check_target_needs(rule: Rule) -> None:
    spec = TARGET_SPECS.get(rule.target.name)
    if spec is None or spec.port_protocols is None:
        return
    has_port = any(value and _nat_has_port(value) for _, value in rule.target.options)
    if has_port and (rule.protocol not in spec.port_protocols or "protocol" in rule.negated):
        raise ValueError(f"{rule.target.name} with a port needs -p tcp, udp, sctp or dccp")


def _nat_has_port(value: str) -> bool:
    return "]:" in value if value.startswith("[") else value.count(":") == 1


def _family_of(obj: Conditions | Rule) -> int | None:
    for address in (obj.src, obj.dst):
        if address is not None:
            return 6 if ":" in address else 4
    target = getattr(obj, "target", None)
    if target is not None and target.name in ("DNAT", "SNAT"):
        for _, value in target.options:
            if value:
                return nat_address_family(value)
    return None


def decoded_match(name: str, options: OptionPairs, negated: frozenset[str]) -> Match:
    """A Match read back from the kernel: taken as is, no validation."""
    return _trusted(Match, name=name, options=options, negated=negated)  # type: ignore[return-value]


def decoded_target(name: str, options: OptionPairs, goto: bool) -> Target:
    return _trusted(Target, name=name, options=options, goto=goto)  # type: ignore[return-value]


def decoded_rule(chain: str, **values: object) -> Rule:
    defaults: dict[str, object] = {
        "src": None, "dst": None, "in_iface": None, "out_iface": None, "protocol": None,
        "fragment": False, "matches": (), "negated": frozenset(),
    }
    defaults.update(values)
    return _trusted(Rule, chain=chain, **defaults)  # type: ignore[return-value]


# --------------------------------------------------------------------------- text


def to_args(rule: Rule | Conditions) -> list[str]:
    """The rule as an argument list for the iptables binary (without ``-A chain``)."""
    args: list[str] = []
    negated = rule.negated
    for name in HEADER_FIELDS:
        value = getattr(rule, name)
        if value in (None, False):
            continue
        if name in negated:
            args.append("!")
        args.append(_HEADER_FLAGS[name])
        if name != "fragment":
            args.append(str(value))
    for match in rule.matches:
        args += ["-m", match.name]
        for option, value in match.options:
            if option in match.negated:
                args.append("!")
            args.append(f"--{option}")
            if value is not None:
                args.append(value)
    target = getattr(rule, "target", None)
    if target is not None and target.name:
        args += ["-g" if target.goto else "-j", target.name]
        for option, value in target.options:
            args.append(f"--{option}")
            if value is not None:
                args.append(value)
    return args


def render(rule: Rule) -> str:
    """The line ``iptables-legacy-save`` prints for ``rule``."""
    return f"-A {rule.chain}{render_body(rule)}"


def render_body(rule: Rule | Conditions) -> str:
    """Everything after ``-A chain``, with a leading space unless empty."""
    parts: list[str] = []
    negated = rule.negated
    for name in HEADER_FIELDS:
        value = getattr(rule, name)
        if value in (None, False):
            continue
        bang = "! " if name in negated else ""
        parts.append(f"{bang}{_HEADER_FLAGS[name]}" if name == "fragment" else f"{bang}{_HEADER_FLAGS[name]} {value}")
    for match in rule.matches:
        parts.append(f"-m {match.name}")
        spec = MATCH_SPECS.get(match.name)
        parts += _render_options(spec, match.options, match.negated)
    target = getattr(rule, "target", None)
    if target is not None and target.name:
        parts.append(f"{'-g' if target.goto else '-j'} {target.name}")
        parts += _render_options(TARGET_SPECS.get(target.name), target.options, frozenset())
    return "".join(" " + part for part in parts)


def _render_options(spec: ExtensionSpec | None, options: OptionPairs, negated: frozenset[str]) -> list[str]:
    parts = []
    for name, value in options:
        option = spec.option(name) if spec else None
        text = f"! --{name}" if name in negated else f"--{name}"
        if value is not None:
            text += " " + (save_string(value) if option is not None and option.quoted else value)
        parts.append(text)
    return parts


# --------------------------------------------------------------------------- argument lists

_HEADER_OPTIONS = {
    "-s": "src", "--source": "src", "--src": "src",
    "-d": "dst", "--destination": "dst", "--dst": "dst",
    "-i": "in_iface", "--in-interface": "in_iface",
    "-o": "out_iface", "--out-interface": "out_iface",
    "-p": "protocol", "--protocol": "protocol",
    "-f": "fragment", "--fragment": "fragment",
}
_IMPLICIT_MATCHES = frozenset({"tcp", "udp"})  # what -p loads when its options appear


class _ArgParser:
    """getopt-like reading of one iptables argument list into model parts."""

    def __init__(self, args: Sequence[str]) -> None:
        if isinstance(args, str) or not all(isinstance(a, str) for a in args):
            raise ValueError(f"arguments must be a list of strings, got {args!r}")
        self.args = list(args)
        self.pos = 0
        self.header: dict[str, object] = {}
        self.negated: set[str] = set()
        self.matches: list[tuple[str, list[tuple[str, str | None]], set[str]]] = []
        self.target: tuple[str, list[tuple[str, str | None]], bool] | None = None

    def parse(self) -> None:
        while self.pos < len(self.args):
            invert = self._take_bang()
            word = self._next()
            if word in _HEADER_OPTIONS:
                self._header(_HEADER_OPTIONS[word], word, invert)
            elif word in ("-m", "--match"):
                self._refuse_bang(invert, word)
                name = self._value(word)
                if name not in MATCH_SPECS:
                    raise ValueError(f"unsupported match extension {name!r}")
                self.matches.append((name, [], set()))
            elif word in ("-j", "--jump", "-g", "--goto"):
                self._refuse_bang(invert, word)
                if self.target is not None:
                    raise ValueError("more than one -j/-g given")
                name = self._value(word)
                if name in _UNSUPPORTED_TARGETS:
                    raise ValueError(f"unsupported target extension {name!r}")
                self.target = (name, [], word in ("-g", "--goto"))
            elif word.startswith("--") and len(word) > 2:
                self._extension_option(word[2:], invert)
            elif word.startswith("-"):
                raise ValueError(f"unsupported iptables option {word!r}")
            else:
                raise ValueError(f"unexpected argument {word!r}")

    def _next(self) -> str:
        word = self.args[self.pos]
        self.pos += 1
        return word

    def _take_bang(self) -> bool:
        if self.args[self.pos] != "!":
            return False
        self.pos += 1
        if self.pos >= len(self.args) or self.args[self.pos] == "!":
            raise ValueError("'!' must be followed by an option")
        return True

    @staticmethod
    def _refuse_bang(invert: bool, word: str) -> None:
        if invert:
            raise ValueError(f"'!' cannot be applied to {word}")

    def _value(self, option: str) -> str:
        if self.pos >= len(self.args):
            raise ValueError(f"option {option} needs a value")
        return self._next()

    def _header(self, name: str, flag: str, invert: bool) -> None:
        if name in self.header:
            raise ValueError(f"multiple {_HEADER_FLAGS[name]} flags are not allowed")
        value = True if name == "fragment" else self._value(flag)
        if value == "!":
            raise ValueError(f"'{flag} ! value' (negation after the option) is not supported; write '! {flag} value'")
        self.header[name] = value
        if invert:
            self.negated.add(name)

    def _extension_option(self, name: str, invert: bool) -> None:
        if self.target is not None:
            spec = TARGET_SPECS.get(self.target[0])
            option = spec.option(name) if spec else None
            if option is not None:
                self._refuse_bang(invert, f"--{name}")
                self.target[1].append((name, self._value(f"--{name}") if option.takes_value else None))
                return
        owner = self._match_owning(name)
        if owner is None:
            raise ValueError(f"unsupported or unknown option --{name} (not an option of the matches or target given before it)")
        option = MATCH_SPECS[owner[0]].option(name)
        assert option is not None
        owner[1].append((name, self._value(f"--{name}") if option.takes_value else None))
        if invert:
            owner[2].add(name)

    def _match_owning(self, name: str) -> tuple[str, list[tuple[str, str | None]], set[str]] | None:
        for match in reversed(self.matches):
            if MATCH_SPECS[match[0]].option(name) is not None:
                return match
        protocol = self.header.get("protocol")
        if isinstance(protocol, str) and "protocol" not in self.negated:
            implicit = canonical_protocol(protocol)
            if implicit in _IMPLICIT_MATCHES and MATCH_SPECS[implicit].option(name) is not None:
                # iptables loads the protocol's match where its first option appears
                self.matches.append((implicit, [], set()))
                return self.matches[-1]
        return None

    def conditions(self) -> Conditions:
        matches = tuple(Match(name, tuple(options), frozenset(neg)) for name, options, neg in self.matches)
        return Conditions(**self.header, matches=matches, negated=frozenset(self.negated))  # type: ignore[arg-type]


def parse_conditions(args: Sequence[str]) -> Conditions:
    """Model parts of an iptables argument list without a target, e.g. ``["!", "-s", "10.0.0.0/8"]``.

    Raises ValueError for anything the model cannot represent (unknown options or
    extensions, a ``-j``, stray words).
    """
    parser = _ArgParser(args)
    parser.parse()
    if parser.target is not None:
        raise ValueError("conditions must not contain -j/-g")
    return parser.conditions()


def parse_args(chain: str, args: Sequence[str]) -> Rule:
    """The rule an iptables argument list (everything after ``-A chain``) describes.

    ``parse_args("CNI-DN-x", ["-p", "tcp", "--dport", "8080", "-j", "DNAT",
    "--to-destination", "10.88.0.5:80"])``. Without ``-j`` the rule has no target
    (``Target("")``). Raises ValueError for anything the model cannot represent.
    """
    parser = _ArgParser(args)
    parser.parse()
    name, options, goto = parser.target if parser.target is not None else ("", [], False)
    target = Target(name, tuple(options), goto)
    return parser.conditions().to_rule(chain, target)


# --------------------------------------------------------------------------- builders


def comment(text: str) -> Match:
    """``-m comment --comment text`` (control characters blanked, cut to 255 bytes)."""
    return Match("comment", (("comment", text),))


def jump(chain: str) -> Target:
    return Target(chain)


__all__ = [
    "VERDICTS", "HEADER_FIELDS", "MATCH_SPECS", "TARGET_SPECS", "Match", "Target", "Conditions", "Rule",
    "render", "render_body", "to_args", "parse_args", "parse_conditions", "comment", "jump",
    "truncate_comment", "save_string", "canonical_network",
]
