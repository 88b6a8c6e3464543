"""The match and target extensions the rule model supports, option by option.

Each :class:`ExtensionSpec` lists its options in the order iptables-save prints them,
with how each is parsed (value or flag, negatable or not) and canonicalised. Anything not
listed here is rejected by the model instead of being passed through as text.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from chains.values import (
    canonical_addr_types,
    canonical_comment,
    canonical_ct_states,
    canonical_mark,
    canonical_nat_address,
    canonical_port_list,
    canonical_port_range,
    canonical_set_mark,
    canonical_xmark,
)

OptionPairs = tuple[tuple[str, "str | None"], ...]


class OptionSpec:
    """One option of an extension, as iptables parses and saves it."""

    __slots__ = ("name", "aliases", "takes_value", "invertible", "canonical", "quoted", "save_as")

    def __init__(self, name: str, aliases: tuple[str, ...] = (), *, takes_value: bool = True,
                 invertible: bool = False, canonical: Callable[[str], str | None] | None = None,
                 quoted: bool = False, save_as: str | None = None) -> None:
        self.name = name
        self.aliases = aliases
        self.takes_value = takes_value
        self.invertible = invertible
        self.canonical = canonical
        self.quoted = quoted  # printed through xtables_save_string
        self.save_as = save_as  # stored (and printed) as this option instead


class ExtensionSpec:
    """A match or target extension: its options in the order iptables-save prints them."""

    __slots__ = ("name", "options", "required_one_of", "exclusive", "protocols", "port_protocols")

    def __init__(self, name: str, options: tuple[OptionSpec, ...], *, required_one_of: tuple[str, ...] = (),
                 exclusive: bool = False, protocols: frozenset[str] | None = None,
                 port_protocols: frozenset[str] | None = None) -> None:
        self.name = name
        self.options = options
        self.required_one_of = required_one_of  # at least one of these (by stored name)
        self.exclusive = exclusive  # at most one option
        self.protocols = protocols  # the rule's -p must be one of these
        self.port_protocols = port_protocols  # ... when a NAT address carries a port

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
UNSUPPORTED_TARGETS = frozenset(
    "AUDIT CHECKSUM CLASSIFY CLUSTERIP CONNMARK CONNSECMARK CT DSCP ECN HL HMARK IDLETIMER LED LOG "
    "MIRROR NETMAP NFLOG NFQUEUE NOTRACK RATEEST REDIRECT REJECT SAME SECMARK SET SYNPROXY TCPMSS "
    "TCPOPTSTRIP TEE TOS TPROXY TRACE TTL ULOG".split()
)


def canonical_options(
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
            # the canonical form of "no condition" (a 0:65535 port range): iptables-save
            # prints nothing for it; negated, the rule could never match (and would still
            # print nothing), so it is refused
            if name in negated_names:
                raise ValueError(f"{kind} {spec.name}: ! --{name} over the whole range would never match")
            continue
        kept.append((name, value))
    return tuple(kept), frozenset(negated_names)

