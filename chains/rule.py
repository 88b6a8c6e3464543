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

from collections.abc import Iterable, Mapping, Sequence

from chains.extensions import (
    MATCH_SPECS,
    TARGET_SPECS,
    UNSUPPORTED_TARGETS,
    ExtensionSpec,
    OptionPairs,
    canonical_options,
)
from chains.record import Record
from chains.values import (
    canonical_network,
    canonical_protocol,
    nat_address_family,
    save_string,
    truncate_comment,
    validate_chain_name,
    validate_interface,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a few ms to import; plugin execs cannot afford it
    from typing import Any

VERDICTS = frozenset({"ACCEPT", "DROP", "RETURN", "QUEUE"})
#: Fields of the IP header part that can be negated with ``!``.
HEADER_FIELDS = ("src", "dst", "in_iface", "out_iface", "protocol", "fragment")
_CONDITION_FIELDS = (*HEADER_FIELDS, "matches", "negated")

Options = Mapping[str, "str | None"] | Iterable[tuple[str, "str | None"]]


# --------------------------------------------------------------------------- model


class Match(Record):
    """``-m name [!] --option value ...``; ``negated`` names the options preceded by ``!``.

    ``options`` may be given as (name, value) pairs or a mapping, names with or without
    the leading ``--``; ``None`` is the value of a flag. They are stored canonically.
    """

    __slots__ = _fields = ("name", "options", "negated")
    name: str
    options: OptionPairs
    negated: frozenset[str]

    def __init__(self, name: str, options: Options = (), negated: Iterable[str] = frozenset()) -> None:
        spec = MATCH_SPECS.get(name)
        if spec is None:
            raise ValueError(f"unsupported match extension {name!r}")
        canonical, canonical_negated = canonical_options(spec, _pairs(options), negated, "match")
        self._set(name=name, options=canonical, negated=canonical_negated)

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)


class Target(Record):
    """``-j name [--option value ...]`` (``-g`` when ``goto``); ``""`` means no target.

    The name is a verdict (ACCEPT, DROP, RETURN, QUEUE), a supported target extension
    (:data:`TARGET_SPECS`) or a chain to jump to.
    """

    __slots__ = _fields = ("name", "options", "goto")
    name: str
    options: OptionPairs
    goto: bool

    def __init__(self, name: str, options: Options = (), goto: bool = False) -> None:
        spec = TARGET_SPECS.get(name)
        canonical: OptionPairs = ()
        if spec is not None:
            canonical, _ = canonical_options(spec, _pairs(options), (), "target")
        elif name in UNSUPPORTED_TARGETS:
            raise ValueError(f"unsupported target extension {name!r}")
        else:
            if name:
                validate_chain_name(name)
            if _pairs(options):
                raise ValueError(f"target {name or '(none)'} takes no options")
        if goto and (spec is not None or name in VERDICTS or not name):
            raise ValueError(f"-g needs a chain, not {name or '(none)'}")
        self._set(name=name, options=canonical, goto=bool(goto))

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


class Conditions(Record):
    """The part of a rule before the target: IP header fields and matches.

    This is what ``conditionsV4``/``conditionsV6`` style argument lists describe; turn it
    into a rule with :meth:`to_rule`.
    """

    __slots__ = _fields = _CONDITION_FIELDS
    src: str | None
    dst: str | None
    in_iface: str | None
    out_iface: str | None
    protocol: str | None
    fragment: bool
    matches: tuple[Match, ...]
    negated: frozenset[str]

    def __init__(self, *, src: str | None = None, dst: str | None = None, in_iface: str | None = None,
                 out_iface: str | None = None, protocol: str | int | None = None, fragment: bool = False,
                 matches: Iterable[Match] = (), negated: Iterable[str] = frozenset()) -> None:
        self._set(**_canonical_header(src, dst, in_iface, out_iface, protocol, fragment, matches, negated))

    def to_rule(self, chain: str, target: Target) -> Rule:
        return Rule(chain, target=target, **_header_values(self))

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
        return Conditions(**values)

    @property
    def family(self) -> int | None:
        return _family_of(self)


class Rule(Record):
    """One iptables rule in ``chain``: conditions, matches in order, and a target.

    ``negated`` names the header fields preceded by ``!`` (see :data:`HEADER_FIELDS`).
    """

    __slots__ = _fields = ("chain", "target", *_CONDITION_FIELDS)
    chain: str
    target: Target
    src: str | None
    dst: str | None
    in_iface: str | None
    out_iface: str | None
    protocol: str | None
    fragment: bool
    matches: tuple[Match, ...]
    negated: frozenset[str]

    def __init__(self, chain: str, *, target: Target, src: str | None = None, dst: str | None = None,
                 in_iface: str | None = None, out_iface: str | None = None, protocol: str | int | None = None,
                 fragment: bool = False, matches: Iterable[Match] = (), negated: Iterable[str] = frozenset()) -> None:
        validate_chain_name(chain)
        if not isinstance(target, Target):
            raise ValueError(f"target must be a Target, got {target!r}")
        header = _canonical_header(src, dst, in_iface, out_iface, protocol, fragment, matches, negated)
        self._set(chain=chain, target=target, **header)
        _check_target_needs(self)

    @property
    def family(self) -> int | None:
        """4 or 6 when an address pins the rule to a family, else None."""
        return _family_of(self)

    @property
    def conditions(self) -> Conditions:
        return Conditions(**_header_values(self))

    def with_chain(self, chain: str) -> Rule:
        return self.replace(chain=chain)


_HEADER_FLAGS = {"src": "-s", "dst": "-d", "in_iface": "-i", "out_iface": "-o", "protocol": "-p", "fragment": "-f"}


def _header_values(obj: Conditions | Rule) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in _CONDITION_FIELDS}


def _canonical_header(src: str | None, dst: str | None, in_iface: str | None, out_iface: str | None,
                      protocol: str | int | None, fragment: bool, matches: Iterable[Match],
                      negated: Iterable[str]) -> dict[str, object]:
    """Validated, canonical values of the condition fields."""
    negated = frozenset(negated)
    unknown = negated - set(HEADER_FIELDS)
    if unknown:
        raise ValueError(f"cannot negate {sorted(unknown)}: negatable fields are {list(HEADER_FIELDS)}")
    values: dict[str, object] = {"in_iface": in_iface, "out_iface": out_iface, "fragment": bool(fragment)}
    families = set()
    for name, address in (("src", src), ("dst", dst)):
        if address is not None:
            address, family = canonical_network(address, keep_any=name in negated)
            families.add(family)
        values[name] = address
    for iface in (in_iface, out_iface):
        if iface is not None:
            validate_interface(iface)
    values["protocol"] = None if protocol is None else canonical_protocol(protocol)
    if protocol is not None and values["protocol"] is None and "protocol" in negated:
        raise ValueError("! -p all would never match")
    for name in negated:
        if values[name] in (None, False):
            raise ValueError(f"cannot negate {_HEADER_FLAGS[name]}: it is not set")
    values["negated"] = negated
    values["matches"] = matches = tuple(matches)
    for match in matches:
        if not isinstance(match, Match):
            raise ValueError(f"matches must be Match objects, got {match!r}")
        _check_protocol(MATCH_SPECS.get(match.name), values["protocol"], negated, f"match {match.name}")
    if len(families) > 1:
        raise ValueError("rule mixes IPv4 and IPv6 addresses")
    if fragment and 6 in families:
        raise ValueError("-f exists for IPv4 only")
    return values


def _check_protocol(spec: ExtensionSpec | None, protocol: object, negated: frozenset[str], what: str) -> None:
    allowed = spec.protocols if spec else None
    if allowed is None:
        return
    if protocol not in allowed or "protocol" in negated:
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
    return Match._trusted(name=name, options=options, negated=negated)


def decoded_target(name: str, options: OptionPairs, goto: bool) -> Target:
    return Target._trusted(name=name, options=options, goto=goto)


def decoded_rule(chain: str, **values: object) -> Rule:
    defaults: dict[str, object] = {
        "src": None, "dst": None, "in_iface": None, "out_iface": None, "protocol": None,
        "fragment": False, "matches": (), "negated": frozenset(),
    }
    defaults.update(values)
    return Rule._trusted(chain=chain, **defaults)


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
                if name in UNSUPPORTED_TARGETS:
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
