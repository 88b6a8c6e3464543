"""The configs' pydantic-free fast path (``load_plain``) against the pydantic models it stands in for.

For any input: when the fast path returns an object, the model accepts the same input and every
attribute, property and method the plugins use gives the same value (type included: True is not 1);
when the model refuses the input, the fast path returns None (so ``load`` reports the model's error).
Inputs mix valid values with wrong types, bools for ints, numbers in strings, out-of-range values,
missing and extra keys and None.
"""
from __future__ import annotations

import copy
import ipaddress
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from bridge import config as bridge_config
from bridge.model import BridgeConf
from cni.errors import CNIError
from firewall import config as firewall_config
from firewall.model import FirewallConf
from firewall.rules import OWN_CHAINS
from portmap import apply, claims, rules
from portmap import config as portmap_config
from portmap.model import PortMapConf
from tests.netenv import REPO

EXAMPLES = 600
FASTPATH_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- comparing the two objects ------------------------------------------------------------------------------

# What the plugins read of each config (grep bridge/, portmap/, firewall/, cni/helper.py and tests/).
NETCONF_ATTRS = ("cniVersion", "name", "type")
BRIDGE_ATTRS = (*NETCONF_ATTRS, "bridge", "isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "mtu",
                "hairpinMode", "promiscMode", "vlan", "macspoofchk", "enabledad", "ipam", "dns", "stateDir",
                "runtimeConfig", "args")
PORTMAP_ATTRS = (*NETCONF_ATTRS, "snat", "markMasqBit", "externalSetMarkChain", "masqAll", "conditionsV4",
                 "conditionsV6", "backend", "stateDir", "mark")
MAPPING_ATTRS = ("hostPort", "containerPort", "protocol", "hostIP")
FIREWALL_ATTRS = (*NETCONF_ATTRS, "backend", "iptablesAdminChainName", "ingressPolicy", "stateDir", "admin_chain",
                  "isolating")
ADDRESSES = {4: ipaddress.ip_interface("10.88.0.5/16"), 6: ipaddress.ip_interface("fd00::5/64")}


def typed(value: object) -> object:
    """``value`` with every item tagged by its type, so that True != 1 and 1 != 1.0 when compared."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    return (type(value).__name__, value)


def outcome(fn: Callable[[], object]) -> object:
    """What a call returns, or which error it raises and with what message."""
    try:
        return ("returns", typed(fn()))
    except (CNIError, ValueError) as exc:
        return ("raises", type(exc).__name__, str(exc))


def attrs_view(conf: object, names: tuple[str, ...]) -> dict[str, object]:
    return {name: typed(getattr(conf, name)) for name in names}


def bridge_view(conf: Any) -> dict[str, object]:
    view = attrs_view(conf, BRIDGE_ATTRS)
    for cni_args in ({}, {"MAC": "02:00:00:00:00:01"}):
        view[f"container_mac({cni_args})"] = outcome(lambda a=cni_args: bridge_config.container_mac(conf, a))
    return view


def mapping_view(mapping: Any) -> dict[str, object]:
    view = attrs_view(mapping, MAPPING_ATTRS)
    view["host_ip_for(4)"] = typed(mapping.host_ip_for(4))
    view["host_ip_for(6)"] = typed(mapping.host_ip_for(6))
    return view


def portmap_view(conf: Any) -> dict[str, object]:
    view = attrs_view(conf, PORTMAP_ATTRS)
    view["conditions(4)"] = typed(conf.conditions(4))
    view["conditions(6)"] = typed(conf.conditions(6))
    view["mappings"] = [mapping_view(m) for m in conf.mappings]
    view["runtimeConfig.portMappings"] = [mapping_view(m) for m in conf.runtimeConfig.portMappings]
    # and what the plugin builds from them
    view["claims.keys"] = typed(claims.keys([4, 6], conf.mappings))
    view["apply.validate"] = outcome(lambda: apply.validate(conf, "net", "ctr", ADDRESSES))
    for family, address in ADDRESSES.items():
        view[f"entry_rules({family})"] = outcome(lambda f=family: rules.entry_rules(conf, "net", "ctr", f))
        view[f"dnat_body({family})"] = outcome(lambda f=family, a=address: rules.dnat_body(conf, f, a))
        view[f"udp_host_ports({family})"] = typed(rules.udp_host_ports(conf, family))
    return view


def firewall_view(conf: Any) -> dict[str, object]:
    return attrs_view(conf, FIREWALL_ATTRS)


def compare(load_plain: Callable[[Any], object | None], model: type[BaseModel], view: Callable[[Any], object],
            config: Any, tally: Counter[str]) -> None:
    before = copy.deepcopy(config)
    plain = load_plain(config)
    assert config == before, "the fast path changed its input"
    try:
        expected = model.model_validate(config)
    except ValidationError as err:
        assert plain is None, f"the fast path accepted what the model refuses: {err}"
        tally["refused by both"] += 1
        return
    if plain is None:
        tally["accepted by the model only (coerced or not sure)"] += 1
        return
    tally["fast path"] += 1
    assert view(plain) == view(expected)


def assert_both_sides_seen(tally: Counter[str]) -> None:
    """The properties are only worth something when both outcomes happened often enough."""
    print(dict(tally))
    assert tally["fast path"] >= EXAMPLES // 10, tally
    assert tally["refused by both"] >= EXAMPLES // 10, tally


# --- inputs -----------------------------------------------------------------------------------------------------

SURROGATES = ["\udcff", "a\ud800b"]
TEXT = st.one_of(st.text(max_size=10), st.text(st.characters(exclude_categories=()), max_size=6),
                 st.sampled_from(["", " ", "x", "é", "\x00", "\n", *SURROGATES]))
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=False), TEXT)
ANYTHING = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)
NOT_STR = st.sampled_from([None, 0, 5, True, False, 1.5, b"bytes", ["a"], {"a": 1}, ("a",)])
CHAOS = st.sampled_from([0, 0, 3, 15, 40])  # percent of values drawn from the odd side, per example
EXTRA_KEYS = st.one_of(TEXT, st.sampled_from(
    ["prevResult", "capabilities", "cni.dev/valid-attachments", "mark", "mappings", "conditions", "host_ip_for",
     "admin_chain", "isolating", "model_config", "model_fields", "model_dump", "_private", "__class__",
     "__dict__", "__slots__"]))
NON_STR_KEYS = st.sampled_from([1, None, 2.5, b"k", ("t",), True])


@st.composite
def pick(draw: st.DrawFn, chaos: int, valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    if chaos and draw(st.integers(0, 99)) < chaos:
        return draw(odd)
    return draw(valid)


def bools(chaos: int) -> st.SearchStrategy[Any]:
    return pick(chaos, st.booleans(),
                st.one_of(st.sampled_from([0, 1, 2, -1, "true", "false", "True", "1", "0", "", "yes", None, 1.0, 0.0,
                                           [], {}]), NOT_STR))


def ints(chaos: int, low: int, high: int) -> st.SearchStrategy[Any]:
    edges = [low, high, low + 1, high - 1]
    odd = st.one_of(st.sampled_from([low - 1, high + 1, -1, 2 ** 63, 2 ** 64, True, False, None, str(low), str(high),
                                     f" {high} ", float(low), float(high), high + 0.5, "x", "0x10", [low], {}]),
                    st.integers(), NOT_STR)
    return pick(chaos, st.one_of(st.integers(low, high), st.sampled_from(edges)), odd)


def optional_ints(chaos: int, low: int, high: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), ints(chaos, low, high))


def strs(chaos: int, valid: st.SearchStrategy[str] = TEXT) -> st.SearchStrategy[Any]:
    return pick(chaos, valid, NOT_STR)


def optional_strs(chaos: int, valid: st.SearchStrategy[str] = TEXT) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strs(chaos, valid))


def str_dicts(chaos: int, valid: st.SearchStrategy[dict[str, Any]] | None = None) -> st.SearchStrategy[Any]:
    plain = st.dictionaries(TEXT, ANYTHING, max_size=3)
    odd = st.one_of(st.sampled_from([None, [], "x", 5, True, {1: "a"}, {"a": 1, 2: "b"}, {None: 1}, (("a", 1),)]),
                    st.lists(ANYTHING, max_size=2))
    return pick(chaos, st.one_of(plain, valid) if valid is not None else plain, odd)


def str_lists(chaos: int, max_length: int, words: st.SearchStrategy[str] = TEXT) -> st.SearchStrategy[Any]:
    valid = st.one_of(st.lists(words, max_size=4), st.just(["-s"] * max_length), st.none())
    odd = st.one_of(st.just(["-s"] * (max_length + 1)),
                    st.sampled_from(["-s 10.0.0.0/8", [1], ["a", None], ("a",), ["a", b"b"], [True], {"a": 1}, 5]))
    return pick(chaos, valid, odd)


@st.composite
def with_keys(draw: st.DrawFn, chaos: int, required: dict[str, st.SearchStrategy[Any]],
              optional: dict[str, st.SearchStrategy[Any]], extra_values: st.SearchStrategy[Any] = ANYTHING) -> Any:
    """A dict with the required keys (each missing only under chaos), some optional ones, some extra."""
    out: dict[Any, Any] = {}
    for key, strategy in required.items():
        if not (chaos and draw(st.integers(0, 99)) < chaos // 2):
            out[key] = draw(strategy)
    for key, strategy in optional.items():
        if draw(st.booleans()):
            out[key] = draw(strategy)
    for key, value in draw(st.dictionaries(EXTRA_KEYS, extra_values, max_size=2)).items():
        out.setdefault(key, value)
    if chaos and draw(st.integers(0, 99)) < chaos // 4:
        out[draw(NON_STR_KEYS)] = draw(LEAF)
    return out


def netconf_fields(chaos: int) -> dict[str, st.SearchStrategy[Any]]:
    return {"cniVersion": strs(chaos, st.one_of(st.sampled_from(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]), TEXT)),
            "type": strs(chaos),
            # cni.log's keys: read by the skeleton, never refused by a config (a log never fails a call)
            "logFile": optional_strs(chaos, st.sampled_from(["/var/log/pycni.log", "", "relative.log"])),
            "logLevel": optional_strs(chaos, st.sampled_from(["error", "info", "debug", "DEBUG", "verbose", "x"]))}


BRIDGE_NAMES = st.one_of(
    st.sampled_from(["cni0", "br0", "rhbr-1", "a" * 15, "é" * 7 + "a", "x.y", "a@b"]), TEXT)  # some are not valid
MACS = st.one_of(st.sampled_from(["02:00:00:00:00:07", "02:AB:cd:00:00:08", "02:00:00:00:00:07\n", "zz:00:00:00:00:00",
                                  "02-00-00-00-00-07", "", "02:00:00:00:00:0"]), TEXT, NOT_STR)


@st.composite
def bridge_configs(draw: st.DrawFn) -> Any:
    chaos = draw(CHAOS)
    optional: dict[str, st.SearchStrategy[Any]] = {
        **netconf_fields(chaos),
        "bridge": strs(chaos, BRIDGE_NAMES),
        **{key: bools(chaos) for key in ("isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "hairpinMode",
                                         "promiscMode", "macspoofchk", "enabledad")},
        "mtu": ints(chaos, 0, 65535), "vlan": ints(chaos, 0, 4094),
        "ipam": str_dicts(chaos, st.just({"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]})),
        "dns": st.one_of(st.none(), str_dicts(chaos, st.just({"nameservers": ["192.0.2.1"]}))),
        "stateDir": optional_strs(chaos),
        "runtimeConfig": str_dicts(chaos, st.builds(lambda mac: {"mac": mac}, MACS)),
        "args": str_dicts(chaos, st.builds(lambda mac: {"cni": {"mac": mac}}, MACS)),
    }
    return draw(with_keys(chaos, {"name": strs(chaos)}, optional))


PROTOCOLS = st.sampled_from(["tcp", "udp", "sctp", "TCP", "Udp", "SCTP"])
ODD_PROTOCOLS = st.one_of(st.sampled_from(["icmp", "", " tcp", "tcp ", "tcp\n", "all"]), TEXT, NOT_STR)
HOST_IPS = st.sampled_from(["", "10.0.0.1", "0.0.0.0", "::", "::1", "fd00::5", "fe80::1%eth0", "::ffff:10.0.0.1"])
ODD_HOST_IPS = st.one_of(st.sampled_from(["1.2.3", "010.0.0.1", "10.0.0.1/24", " 10.0.0.1", "fe80::1%", "localhost",
                                          "256.0.0.1"]), TEXT, NOT_STR)


def mappings(chaos: int) -> st.SearchStrategy[Any]:
    entry = with_keys(chaos, {"hostPort": ints(chaos, 1, 65535), "containerPort": ints(chaos, 1, 65535)},
                      {"protocol": pick(chaos, PROTOCOLS, ODD_PROTOCOLS), "hostIP": pick(chaos, HOST_IPS, ODD_HOST_IPS)},
                      extra_values=LEAF)
    return pick(chaos, entry, st.one_of(ANYTHING, st.just({"hostPort": 80}), st.just({"containerPort": 80})))


def runtime_configs(chaos: int) -> st.SearchStrategy[Any]:
    too_many = [{"hostPort": 1, "containerPort": 1}] * (portmap_config.MAX_MAPPINGS + 1)
    valid = with_keys(chaos, {}, {"portMappings": pick(chaos, st.lists(mappings(chaos), max_size=4),
                                                       st.sampled_from([None, "x", {}, 5, too_many]))},
                      extra_values=LEAF)
    return pick(chaos, valid, st.sampled_from([None, [], "x", 5, {"portMappings": None}]))


CHAIN_NAMES = st.sampled_from(["KUBE-MARK-MASQ", "RH-MARK", "x" * 28, "é", "a.b"])
ODD_CHAIN_NAMES = st.one_of(st.sampled_from(["", "-x", "!x", "a b", "x" * 29, 'a"b', "a'b", "a\\b", "\x00", "a\u2028",
                                             "a\tb", *SURROGATES]), TEXT, NOT_STR)
CONDITION_WORDS = st.one_of(st.sampled_from(["-s", "10.0.0.0/8", "!", "-d", "fd00::/8", "-m", "comment", "-j"]), TEXT)


@st.composite
def portmap_configs(draw: st.DrawFn) -> Any:
    chaos = draw(CHAOS)
    optional = {
        **netconf_fields(chaos),
        "snat": st.one_of(st.none(), bools(chaos)),
        "markMasqBit": optional_ints(chaos, 0, 31),
        "externalSetMarkChain": st.one_of(st.none(), pick(chaos, CHAIN_NAMES, ODD_CHAIN_NAMES)),
        "masqAll": bools(chaos),
        "conditionsV4": str_lists(chaos, portmap_config.MAX_CONDITION_ARGS, CONDITION_WORDS),
        "conditionsV6": str_lists(chaos, portmap_config.MAX_CONDITION_ARGS, CONDITION_WORDS),
        "backend": pick(chaos, st.sampled_from([None, "iptables"]),
                        st.one_of(st.sampled_from(["nftables", "", "IPTABLES", "iptables "]), NOT_STR)),
        "stateDir": optional_strs(chaos),
        "runtimeConfig": runtime_configs(chaos),
    }
    return draw(with_keys(chaos, {"name": strs(chaos)}, optional))


@st.composite
def firewall_configs(draw: st.DrawFn) -> Any:
    chaos = draw(CHAOS)
    optional = {
        **netconf_fields(chaos),
        "backend": pick(chaos, st.sampled_from([None, "", "iptables"]),
                        st.one_of(st.sampled_from(["firewalld", "IPTABLES", "nftables"]), NOT_STR)),
        "iptablesAdminChainName": pick(
            chaos, st.sampled_from(["CNI-ADMIN", "RH-ADMIN", "", "x" * 28, "a.b_c-d", "_x", "9"]),
            st.one_of(st.sampled_from(["bad name", "DROP", "ACCEPT", "RETURN", "QUEUE", "INPUT", "FORWARD",
                                       "POSTROUTING", *OWN_CHAINS, "x" * 29, "-x", ".x", "é", "a+b", "x\n"]),
                      TEXT, NOT_STR)),
        "ingressPolicy": pick(chaos, st.sampled_from(["open", "same-bridge", "isolated", ""]),
                              st.one_of(st.sampled_from(["strict", "OPEN", "isolated "]), TEXT, NOT_STR)),
        "stateDir": optional_strs(chaos),
        "firewalldZone": strs(chaos),
    }
    return draw(with_keys(chaos, {"name": strs(chaos)}, optional))


# --- the properties ---------------------------------------------------------------------------------------------

def test_bridge_fast_path_agrees_with_the_model() -> None:
    tally: Counter[str] = Counter()

    @FASTPATH_SETTINGS
    @given(config=bridge_configs())
    def run(config: Any) -> None:
        compare(bridge_config.load_plain, BridgeConf, bridge_view, config, tally)

    run()
    assert_both_sides_seen(tally)


def test_portmap_fast_path_agrees_with_the_model() -> None:
    tally: Counter[str] = Counter()

    @FASTPATH_SETTINGS
    @given(config=portmap_configs())
    def run(config: Any) -> None:
        compare(portmap_config.load_plain, PortMapConf, portmap_view, config, tally)

    run()
    assert_both_sides_seen(tally)


def test_firewall_fast_path_agrees_with_the_model() -> None:
    tally: Counter[str] = Counter()

    @FASTPATH_SETTINGS
    @given(config=firewall_configs())
    def run(config: Any) -> None:
        compare(firewall_config.load_plain, FirewallConf, firewall_view, config, tally)

    run()
    assert_both_sides_seen(tally)


@pytest.mark.parametrize("load_plain", [bridge_config.load_plain, portmap_config.load_plain,
                                        firewall_config.load_plain])
@pytest.mark.parametrize("config", [None, [], "x", 5, [("name", "n")]])
def test_a_config_that_is_not_an_object_goes_to_the_model(load_plain: Callable[[Any], object], config: Any) -> None:
    assert load_plain(config) is None


@given(text=st.one_of(st.text(st.sampled_from("0123456789abcdefABCDEFgG:\n -"), max_size=19), MACS.filter(
    lambda m: isinstance(m, str))))
@settings(max_examples=300, deadline=None, database=None)
def test_the_hand_written_mac_check_is_the_pattern(text: str) -> None:
    assert bridge_config._is_mac(text) == (re.match(bridge_config._MAC_PATTERN, text) is not None)


# --- typical configs take the fast path; others still get the model's answer ------------------------------------

TYPICAL_BRIDGE = {"cniVersion": "1.0.0", "name": "mynet", "type": "bridge", "bridge": "cni0", "isGateway": True,
                  "ipMasq": True, "hairpinMode": True, "mtu": 1500,
                  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                           "routes": [{"dst": "0.0.0.0/0"}]}}
TYPICAL_PORTMAP = {"cniVersion": "1.0.0", "name": "mynet", "type": "portmap", "capabilities": {"portMappings": True},
                   "snat": True, "runtimeConfig": {"portMappings": [
                       {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                       {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "0.0.0.0"}]},
                   "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]}}
TYPICAL_FIREWALL = {"cniVersion": "1.0.0", "name": "mynet", "type": "firewall", "backend": "iptables",
                    "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]}}


def test_typical_configs_take_the_fast_path() -> None:
    assert type(bridge_config.load(TYPICAL_BRIDGE)) is bridge_config.PlainBridgeConf
    assert type(portmap_config.load(TYPICAL_PORTMAP)) is portmap_config.PlainPortMapConf
    assert type(firewall_config.load(TYPICAL_FIREWALL)) is firewall_config.PlainFirewallConf
    # and what the helper warms up with
    assert type(bridge_config.load({"cniVersion": "1.0.0", "name": "warm"})) is bridge_config.PlainBridgeConf
    assert type(portmap_config.load({"cniVersion": "1.0.0", "name": "warm", "runtimeConfig": {"portMappings": [
        {"hostPort": 1, "containerPort": 1}]}})) is portmap_config.PlainPortMapConf


@pytest.mark.parametrize("load,typical,plain", [
    (bridge_config.load, TYPICAL_BRIDGE, bridge_config.PlainBridgeConf),
    (portmap_config.load, TYPICAL_PORTMAP, portmap_config.PlainPortMapConf),
    (firewall_config.load, TYPICAL_FIREWALL, firewall_config.PlainFirewallConf),
])
def test_log_keys_keep_a_config_on_the_fast_path(load: Callable[[Any], object], typical: dict[str, Any],
                                                 plain: type) -> None:
    """``logFile``/``logLevel`` (examples/*.conflist set them) are the skeleton's: both readers accept them."""
    config = dict(typical, logFile="/var/log/pycni.log", logLevel="info")
    assert type(load(config)) is plain


@pytest.mark.parametrize("count", [portmap_config.MAX_MAPPINGS, portmap_config.MAX_MAPPINGS + 1])
def test_the_mapping_limit_is_the_models(count: int) -> None:
    config = {"name": "n", "runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 2}] * count}}
    tally: Counter[str] = Counter()
    compare(portmap_config.load_plain, PortMapConf, lambda c: [mapping_view(m) for m in c.mappings], config, tally)
    assert tally["fast path" if count == portmap_config.MAX_MAPPINGS else "refused by both"] == 1


@pytest.mark.parametrize("load,load_plain,config,coerced", [
    (bridge_config.load, bridge_config.load_plain, {"name": "n", "mtu": "1500", "isGateway": "true", "vlan": True},
     {"mtu": 1500, "isGateway": True, "vlan": 1}),
    (bridge_config.load, bridge_config.load_plain, {"name": b"n", "mtu": 1500.0, "ipMasq": 1},
     {"name": "n", "mtu": 1500, "ipMasq": True}),
    (portmap_config.load, portmap_config.load_plain, {"name": b"n", "conditionsV4": ("-s", "10.0.0.0/8")},
     {"name": "n", "conditionsV4": ["-s", "10.0.0.0/8"]}),
    (portmap_config.load, portmap_config.load_plain,
     {"name": "n", "runtimeConfig": {"portMappings": ({"hostPort": 1, "containerPort": 2, "protocol": b"UDP"},)}},
     {"mappings": [("1", "2", "udp")]}),
    (firewall_config.load, firewall_config.load_plain, {"name": "n", "ingressPolicy": b"isolated"},
     {"ingressPolicy": "isolated", "isolating": True}),
])
def test_values_pydantic_coerces_are_still_coerced(load: Callable[[Any], Any], load_plain: Callable[[Any], object],
                                                   config: dict[str, Any], coerced: dict[str, Any]) -> None:
    assert load_plain(config) is None
    conf = load(config)
    assert isinstance(conf, BaseModel)
    for key, value in coerced.items():
        got = getattr(conf, key)
        if key == "mappings":
            got = [(str(m.hostPort), str(m.containerPort), m.protocol) for m in got]
        assert typed(got) == typed(value), key


@pytest.mark.parametrize("load,config,message", [
    (portmap_config.load, {"name": "n", "runtimeConfig": {"portMappings": [{"hostPort": 70000, "containerPort": 80}]}},
     "invalid portmap config: runtimeConfig.portMappings.0.hostPort: Input should be less than or equal to 65535 "
     "(got 70000)"),
    (portmap_config.load, {"name": "n", "markMasqBit": 3, "externalSetMarkChain": "X"},
     "invalid portmap config: Cannot specify externalSetMarkChain and markMasqBit"),
    (bridge_config.load, {"name": "n", "hairpinMode": True, "promiscMode": True},
     "invalid bridge config: cannot set hairpin mode and promiscuous mode at the same time"),
    (bridge_config.load, {"name": "n", "bridge": "a b"},
     "invalid bridge config: bridge: invalid bridge name: interface name contains / or : or whitespace characters "
     "(got 'a b')"),
    (firewall_config.load, {"name": "n", "ingressPolicy": "strict"},
     "invalid firewall config: ingressPolicy: unknown ingress policy, expected one of open, same-bridge, isolated "
     "(got 'strict')"),
    (bridge_config.load, {"type": "bridge"}, "invalid bridge config: name: Field required (got {'type': 'bridge'})"),
])
def test_refused_configs_get_the_models_message(load: Callable[[Any], object], config: dict[str, Any],
                                                message: str) -> None:
    with pytest.raises(CNIError) as err:
        load(config)
    assert (err.value.code, err.value.msg) == (7, message)


def test_the_models_are_still_importable_from_the_config_modules() -> None:
    from bridge.config import BridgeConf as bridge_model  # noqa: PLC0415
    from firewall.config import FirewallConf as firewall_model  # noqa: PLC0415
    from portmap.config import PortMapConf, PortMapping, RuntimeConfig  # noqa: PLC0415

    for model in (bridge_model, firewall_model, PortMapConf, PortMapping, RuntimeConfig):
        assert issubclass(model, BaseModel)
    with pytest.raises(AttributeError):
        portmap_config.NoSuchThing  # noqa: B018


# --- no pydantic in a fresh process -----------------------------------------------------------------------------

@pytest.mark.parametrize("plugin,typical,also_absent", [
    ("bridge", TYPICAL_BRIDGE, ("typing", "dataclasses", "re")),
    ("portmap", TYPICAL_PORTMAP, ("typing", "dataclasses", "re")),
    ("firewall", TYPICAL_FIREWALL, ("typing", "dataclasses")),  # its rules need re (chains.values) anyway
])
def test_loading_a_typical_config_does_not_import_pydantic(plugin: str, typical: dict[str, Any],
                                                           also_absent: tuple[str, ...]) -> None:
    """As an installed plugin runs (-I -S, the import roots appended): import the config module, load."""
    site_packages = [p for p in sys.path if p.endswith("-packages") and os.path.isdir(os.path.join(p, "pydantic"))]
    code = (f"import sys; sys.path[:0] = [{REPO!r}]; sys.path += {site_packages!r}\n"
            f"import cni.skel, {plugin}.config\n"
            f"conf = {plugin}.config.load({typical!r})\n"
            f"print(type(conf).__name__, [m for m in ('pydantic', *{also_absent!r}) if m in sys.modules])")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, cwd="/",
                         check=True).stdout
    assert out.split(" ", 1)[1].strip() == "[]", out
    assert out.startswith("Plain"), out
