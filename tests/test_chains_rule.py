"""Pure tests of the rule model: canonical forms, iptables-save text, argument parsing."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.rule import (
    Conditions,
    Match,
    Rule,
    Target,
    canonical_network,
    comment,
    parse_args,
    parse_conditions,
    render,
    save_string,
    to_args,
    truncate_comment,
)

DN = "CNI-DN-e30d516c8208bc6dd27ee"
MASQ_CHAIN = "CNI-e30d516c8208bc6dd27ee420"

# (chain, argument list as a plugin builds it, the line iptables-legacy-save prints: reference.md §2.4)
REFERENCE_LINES = [
    ("PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
     "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"),
    ("OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
     "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"),
    ("POSTROUTING", ["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"],
     '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ'),
    ("POSTROUTING", ["-s", "10.88.0.5", "-m", "comment", "--comment", 'name: "refnet" id: "ctr1"', "-j", MASQ_CHAIN],
     f'-A POSTROUTING -s 10.88.0.5/32 -m comment --comment "name: \\"refnet\\" id: \\"ctr1\\"" -j {MASQ_CHAIN}'),
    (DN, ["-p", "tcp", "--dport", "8080", "-s", "10.88.0.5/16", "-j", "CNI-HOSTPORT-SETMARK"],
     f"-A {DN} -s 10.88.0.0/16 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
    (DN, ["-p", "tcp", "--dport", "8080", "-s", "127.0.0.1", "-j", "CNI-HOSTPORT-SETMARK"],
     f"-A {DN} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
    (DN, ["-p", "tcp", "--dport", "8080", "-j", "DNAT", "--to-destination", "10.88.0.5:80"],
     f"-A {DN} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80"),
    ("CNI-HOSTPORT-DNAT",
     ["-m", "comment", "--comment", 'dnat name: "refnet" id: "ctr1"', "-m", "multiport", "-p", "tcp",
      "--destination-ports", "8080", "-j", DN],
     f'-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"refnet\\" id: \\"ctr1\\"" '
     f"-m multiport --dports 8080 -j {DN}"),
    ("CNI-HOSTPORT-MASQ", ["-m", "mark", "--mark", "0x2000/0x2000", "-j", "MASQUERADE"],
     "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE"),
    ("CNI-HOSTPORT-SETMARK",
     ["-m", "comment", "--comment", "CNI portfwd masquerade mark", "-j", "MARK", "--set-xmark", "0x2000/0x2000"],
     '-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000'),
    (MASQ_CHAIN, ["-d", "10.88.0.0/16", "-m", "comment", "--comment", 'name: "refnet" id: "ctr1"', "-j", "ACCEPT"],
     f'-A {MASQ_CHAIN} -d 10.88.0.0/16 -m comment --comment "name: \\"refnet\\" id: \\"ctr1\\"" -j ACCEPT'),
    (MASQ_CHAIN,
     ["!", "-d", "224.0.0.0/4", "-m", "comment", "--comment", 'name: "refnet" id: "ctr1"', "-j", "MASQUERADE"],
     f'-A {MASQ_CHAIN} ! -d 224.0.0.0/4 -m comment --comment "name: \\"refnet\\" id: \\"ctr1\\"" -j MASQUERADE'),
    ("FORWARD", ["-m", "comment", "--comment", "CNI firewall plugin rules", "-j", "CNI-FORWARD"],
     '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD'),
    ("CNI-FORWARD", ["-d", "10.88.0.5/32", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
     "-A CNI-FORWARD -d 10.88.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    ("CNI-FORWARD", ["-s", "10.88.0.5/32", "-j", "ACCEPT"], "-A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT"),
]


@pytest.mark.parametrize(("chain", "args", "line"), REFERENCE_LINES)
def test_reference_lines_render_exactly(chain: str, args: list[str], line: str) -> None:
    assert render(parse_args(chain, args)) == line


def test_reference_conditions_v4_and_large_port_list() -> None:
    ports = ",".join(str(p) for p in range(6001, 6016))
    rule = parse_args("CNI-HOSTPORT-DNAT", [
        "-m", "comment", "--comment", "dnat", "-m", "multiport", "-p", "tcp", "--destination-ports", ports,
        *["!", "-s", "10.0.0.0/8"], "-j", "CNI-DN-x"])
    assert render(rule) == (f"-A CNI-HOSTPORT-DNAT ! -s 10.0.0.0/8 -p tcp -m comment --comment dnat "
                            f"-m multiport --dports {ports} -j CNI-DN-x")


def test_ipv6_lines() -> None:
    hairpin = parse_args("X", ["-p", "tcp", "--dport", "9090", "-d", "fd00:77::1", "-s", "fd00:88::2/64",
                               "-j", "CNI-HOSTPORT-SETMARK"])
    dnat = parse_args("X", ["-p", "tcp", "--dport", "9090", "-d", "fd00:77::1", "-j", "DNAT",
                            "--to-destination", "[fd00:88::2]:90"])
    masq = parse_args("X", ["!", "-d", "ff00::/8", "-j", "MASQUERADE"])
    assert render(hairpin) == "-A X -s fd00:88::/64 -d fd00:77::1/128 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK"
    assert render(dnat) == "-A X -d fd00:77::1/128 -p tcp -m tcp --dport 9090 -j DNAT --to-destination [fd00:88::2]:90"
    assert render(masq) == "-A X ! -d ff00::/8 -j MASQUERADE"
    assert hairpin.family == dnat.family == 6
    assert Target("DNAT", (("to-destination", "[fd00:88::2]"),)).options == (("to-destination", "fd00:88::2"),)


@pytest.mark.parametrize(("given", "stored"), [
    ("10.88.0.5/16", "10.88.0.0/16"),
    ("10.88.0.5", "10.88.0.5/32"),
    ("10.88.0.5/32", "10.88.0.5/32"),
    ("10.0.0.0/255.255.0.0", "10.0.0.0/16"),
    ("fd00:88::2/64", "fd00:88::/64"),
    ("FD00:0000::0001", "fd00::1/128"),
    ("::ffff:1.2.3.4", "::ffff:1.2.3.4/128"),
    ("0.0.0.0/0", None),
    ("10.1.2.3/0", None),
    ("::/0", None),
])
def test_networks_are_stored_masked_with_prefix(given: str, stored: str | None) -> None:
    assert canonical_network(given)[0] == stored


def test_negated_any_address_is_kept() -> None:
    assert render(Rule("X", src="0.0.0.0/0", negated=frozenset({"src"}), target=Target("RETURN"))) == \
        "-A X ! -s 0.0.0.0/0 -j RETURN"


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "10.0.0.0/255.0.255.0", "host.example", "10.0.0", "fd00::/129", ""])
def test_unrepresentable_networks_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        canonical_network(bad)


@pytest.mark.parametrize(("args", "line"), [
    (["-p", "udp", "--dport", "80:80", "-j", "ACCEPT"], "-A X -p udp -m udp --dport 80 -j ACCEPT"),
    (["-p", "udp", "--dport", "80:", "-j", "ACCEPT"], "-A X -p udp -m udp --dport 80:65535 -j ACCEPT"),
    (["-p", "tcp", "--dport", "0:65535", "-j", "ACCEPT"], "-A X -p tcp -m tcp -j ACCEPT"),
    (["-p", "tcp", "!", "--dport", "8080", "!", "--sport", "1:2", "-j", "ACCEPT"],
     "-A X -p tcp -m tcp ! --sport 1:2 ! --dport 8080 -j ACCEPT"),
    (["-p", "6", "-j", "ACCEPT"], "-A X -p tcp -j ACCEPT"),
    (["-p", "TCP", "-m", "tcp", "--destination-port", "http", "-j", "ACCEPT"], "-A X -p tcp -m tcp --dport 80 -j ACCEPT"),
    (["-p", "all", "-j", "ACCEPT"], "-A X -j ACCEPT"),
    (["-m", "mark", "--mark", "8192/0x2000", "-j", "ACCEPT"], "-A X -m mark --mark 0x2000/0x2000 -j ACCEPT"),
    (["-m", "mark", "!", "--mark", "0x1/0xffffffff", "-j", "ACCEPT"], "-A X -m mark ! --mark 0x1 -j ACCEPT"),
    (["-m", "addrtype", "!", "--dst-type", "local,unicast", "--src-type", "LOCAL", "--limit-iface-in", "-j", "RETURN"],
     "-A X -m addrtype --src-type LOCAL ! --dst-type UNICAST,LOCAL --limit-iface-in -j RETURN"),
    (["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED,NEW,INVALID,UNTRACKED,SNAT,DNAT", "-j", "RETURN"],
     "-A X -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED,SNAT,DNAT -j RETURN"),
    (["-j", "MARK", "--set-mark", "0x2000"], "-A X -j MARK --set-xmark 0x2000/0xffffffff"),
    (["-j", "MARK", "--set-mark", "0x2000/0x2000"], "-A X -j MARK --set-xmark 0x2000/0x2000"),
    (["-j", "MARK", "--set-xmark", "0x1"], "-A X -j MARK --set-xmark 0x1/0xffffffff"),
    (["!", "-s", "10.0.0.0/8", "-d", "1.2.3.4", "!", "-i", "eth+", "-o", "veth0", "-p", "6", "-j", "ACCEPT"],
     "-A X ! -s 10.0.0.0/8 -d 1.2.3.4/32 ! -i eth+ -o veth0 -p tcp -j ACCEPT"),
    (["-f", "-j", "DROP"], "-A X -f -j DROP"),
    (["!", "-f", "-j", "DROP"], "-A X ! -f -j DROP"),
    (["-j", "MASQUERADE", "--random"], "-A X -j MASQUERADE --random"),
    (["-p", "tcp", "-j", "SNAT", "--to-source", "1.2.3.4:1000"], "-A X -p tcp -j SNAT --to-source 1.2.3.4:1000"),
    (["-p", "tcp", "-m", "multiport", "!", "--ports", "1,2:5", "-j", "RETURN"],
     "-A X -p tcp -m multiport ! --ports 1,2:5 -j RETURN"),
    (["-g", "OTHER"], "-A X -g OTHER"),
    (["-s", "10.0.0.1"], "-A X -s 10.0.0.1/32"),
])
def test_canonical_text_matches_what_iptables_save_prints(args: list[str], line: str) -> None:
    # every expected line was observed from iptables-legacy-save 1.8.9 for the same arguments
    assert render(parse_args("X", args)) == line


@pytest.mark.parametrize(("text", "quoted"), [
    ("simple_name-1", "simple_name-1"),
    ("", '""'),
    ("two words", '"two words"'),
    ('it\'s a "test" with \\ back', '"it\\\'s a \\"test\\" with \\\\ back"'),
    ("a.b", '"a.b"'),
])
def test_save_string_quotes_like_xtables_save_string(text: str, quoted: str) -> None:
    assert save_string(text) == quoted


def test_comment_cannot_become_rule_fragments() -> None:
    hostile = 'x" -j ACCEPT -m comment --comment "y'
    rule = parse_args("X", ["-m", "comment", "--comment", hostile, "-j", "DROP"])
    assert rule.matches == (Match("comment", (("comment", hostile),)),)
    assert rule.target == Target("DROP")
    assert render(rule) == '-A X -m comment --comment "x\\" -j ACCEPT -m comment --comment \\"y" -j DROP'
    spaced = parse_args("X", ["-m", "comment", "--comment", "-j ACCEPT", "-j", "DROP"])
    assert spaced.target == Target("DROP")
    assert spaced.matches[0].option("comment") == "-j ACCEPT"


def test_comment_control_characters_are_blanked() -> None:
    assert comment("line1\nline2\r\t!").option("comment") == "line1 line2  !"


def test_comment_starting_with_bang_is_a_value() -> None:
    assert parse_args("X", ["-m", "comment", "--comment", "!x", "-j", "DROP"]).matches[0].negated == frozenset()


def test_long_comments_are_cut_to_255_bytes() -> None:
    assert truncate_comment("a" * 255) == "a" * 255
    assert truncate_comment("b" * 256) == "b" * 252 + "..."
    cut = truncate_comment("é" * 200)
    assert len(cut.encode()) <= 255 and cut.endswith("...") and cut[:-3] == "é" * 126
    assert comment("c" * 300).option("comment") == "c" * 252 + "..."


@pytest.mark.parametrize(("args", "message"), [
    (["-m", "set", "--match-set", "x", "src", "-j", "DROP"], "unsupported match extension 'set'"),
    (["-m", "tcp", "--tcp-flags", "SYN", "SYN", "-j", "DROP"], "unsupported or unknown option --tcp-flags"),
    (["-j", "REJECT"], "unsupported target extension 'REJECT'"),
    (["-j", "LOG", "--log-prefix", "x"], "unsupported target extension 'LOG'"),
    (["--dport", "80", "-j", "DROP"], "unknown option --dport"),
    (["-p", "icmp", "--dport", "80", "-j", "DROP"], "unknown option --dport"),
    (["!", "-p", "tcp", "--dport", "80", "-j", "DROP"], "unknown option --dport"),
    (["-m", "multiport", "--dports", "1,2", "-j", "DROP"], "match multiport needs"),
    (["-p", "icmp", "-m", "tcp", "--dport", "1", "-j", "DROP"], "match tcp needs -p tcp"),
    (["-j", "DNAT", "--to-destination", "1.2.3.4:80"], "DNAT with a port needs"),
    (["-s", "1.2.3.4", "-s", "1.2.3.5", "-j", "DROP"], "multiple -s flags"),
    (["-s", "!", "1.2.3.4", "-j", "DROP"], "negation after the option"),
    (["!", "-m", "comment", "--comment", "x"], "'!' cannot be applied to -m"),
    (["-m", "comment", "--comment"], "option --comment needs a value"),
    (["-m", "comment", "!", "--comment", "x"], "cannot be negated"),
    (["-j", "ACCEPT", "extra"], "unexpected argument 'extra'"),
    (["-A", "X"], "unsupported iptables option '-A'"),
    (["-j", "ACCEPT", "-j", "DROP"], "more than one -j"),
    (["-j", "bad chain"], "invalid chain name"),
    (["-j", "ACCEPT", "--to-destination", "1.2.3.4"], "unknown option --to-destination"),
    (["-s", "10.0.0.1", "-d", "fd00::1", "-j", "DROP"], "mixes IPv4 and IPv6"),
    (["-p", "tcp", "--dport", "70000", "-j", "DROP"], "out of range"),
    (["-p", "tcp", "-m", "multiport", "--dports", ",".join(str(p) for p in range(1, 17)), "-j", "DROP"],
     "at most 15"),
    (["-i", "a-very-long-interface-name", "-j", "DROP"], "invalid interface name"),
    (["-m", "mark", "--mark", "0x1", "--mark", "0x2", "-j", "DROP"], "given more than once"),
    (["-g", "ACCEPT"], "-g needs a chain"),
    (["-p", "tcp", "!", "--dport", "0:65535", "-j", "DROP"], "would never match"),
    (["!"], "'!' must be followed by an option"),
    (["-m", "comment", "--comment", "", "-j", "DROP"], "comment must not be empty"),
])
def test_unrepresentable_arguments_raise_clear_errors(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_args("X", args)


def test_conditions_v4_become_model_parts() -> None:
    conditions = parse_conditions(["!", "-s", "10.0.0.0/8"])
    assert conditions == Conditions(src="10.0.0.0/8", negated=frozenset({"src"}))
    with pytest.raises(ValueError, match="must not contain -j"):
        parse_conditions(["-j", "ACCEPT"])
    base = parse_conditions(["-p", "tcp", "-m", "comment", "--comment", "c"])
    combined = base.extended(conditions)
    assert render(combined.to_rule("X", Target("Y"))) == "-A X ! -s 10.0.0.0/8 -p tcp -m comment --comment c -j Y"
    with pytest.raises(ValueError, match="-s twice"):
        combined.extended(parse_conditions(["-s", "1.2.3.4"]))


def test_model_objects_are_canonical_values() -> None:
    built = Rule("X", src="10.88.0.5/16", protocol="TCP",
                 matches=(Match("tcp", {"destination-port": "8080"}),), target=Target("ACCEPT"))
    parsed = parse_args("X", ["-s", "10.88.0.0/16", "-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", "ACCEPT"])
    assert built == parsed and hash(built) == hash(parsed)
    assert built.with_chain("Y").chain == "Y"
    assert built.conditions.to_rule("X", Target("ACCEPT")) == built


def test_no_target_means_fallthrough() -> None:
    rule = parse_args("X", ["-s", "10.0.0.1"])
    assert rule.target == Target("") and to_args(rule) == ["-s", "10.0.0.1/32"]


# --------------------------------------------------------------------------- properties

_ports = st.integers(min_value=1, max_value=65535)
_comment_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        min_size=1, max_size=300)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    """Random rules inside the supported model (IPv4)."""
    protocol = draw(st.sampled_from([None, "tcp", "udp"]))
    matches: list[Match] = []
    if draw(st.booleans()):
        matches.append(Match("comment", (("comment", draw(_comment_text)),)))
    if protocol and draw(st.booleans()):
        low = draw(_ports)
        high = draw(st.integers(min_value=low, max_value=65535))
        matches.append(Match(protocol, (("dport", f"{low}:{high}"),),
                             frozenset({"dport"}) if draw(st.booleans()) else frozenset()))
    if protocol and draw(st.booleans()):
        ports = draw(st.lists(_ports, min_size=1, max_size=15))
        matches.append(Match("multiport", (("dports", ",".join(map(str, ports))),)))
    if draw(st.booleans()):
        states = draw(st.sets(st.sampled_from(["NEW", "ESTABLISHED", "RELATED", "INVALID"]), min_size=1))
        matches.append(Match("conntrack", (("ctstate", ",".join(states)),)))
    if draw(st.booleans()):
        matches.append(Match("mark", (("mark", f"{draw(_ports):#x}/{draw(_ports):#x}"),)))
    address = st.builds(lambda a, p: f"10.{a >> 8 & 255}.{a & 255}.{a >> 3 & 255}/{p}",
                        st.integers(0, 65535), st.integers(1, 32))
    src = draw(st.none() | address)
    dst = draw(st.none() | address)
    negated = {name for name, value in (("src", src), ("dst", dst)) if value and draw(st.booleans())}
    target = draw(st.sampled_from([
        Target("ACCEPT"), Target("RETURN"), Target("MASQUERADE"), Target("OTHER-CHAIN"),
        Target("MARK", (("set-xmark", "0x2000/0x2000"),)),
        Target("DNAT", (("to-destination", "10.1.2.3"),)),
    ]))
    return Rule("X", src=src, dst=dst, protocol=protocol, matches=tuple(matches),
                negated=frozenset(negated), target=target)


@settings(max_examples=200, deadline=None)
@given(rules())
def test_argument_list_round_trip(rule: Rule) -> None:
    assert parse_args(rule.chain, to_args(rule)) == rule
