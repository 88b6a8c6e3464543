"""firewall's pure parts: prevResult reading, config validation, rule texts, records. No kernel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from cni.errors import CNIError
from cni.records import Attachment, RecordStore
from cni.skel import Request
from firewall import config, ownership, plugin, prevresult, rules
from firewall.ownership import Holdings
from tests.netenv import REPO

SANDBOX = "/run/netns/c1"


def result(*ips: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.1.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": SANDBOX},
                           {"name": "eth1", "sandbox": SANDBOX}],
            "ips": list(ips)}


# --- prevResult ---------------------------------------------------------------------------------------------

def test_only_the_containers_own_interface_counts() -> None:
    prev = result({"interface": 0, "address": "10.88.0.1/16"},      # the bridge
                  {"interface": 1, "address": "10.99.0.1/24"},      # the host side of the veth
                  {"interface": 2, "address": "10.88.0.5/16"},      # eth0: ours
                  {"interface": 3, "address": "10.77.0.5/16"},      # eth1: another attachment's
                  {"interface": 9, "address": "10.66.0.5/16"},      # no such interface
                  {"address": "fd00:88::5/64"})                     # no index: the container's
    assert prevresult.container_addresses(prev, "eth0") == {4: ["10.88.0.5"], 6: ["fd00:88::5"]}
    assert prevresult.container_addresses(prev, "eth1") == {4: ["10.77.0.5"], 6: ["fd00:88::5"]}


def test_addresses_are_canonical_and_unique() -> None:
    prev = result({"address": "FD00:0088:0000::0005/64"}, {"address": "fd00:88::5/128"}, {"address": "10.88.0.5"})
    assert prevresult.container_addresses(prev, "eth0") == {6: ["fd00:88::5"], 4: ["10.88.0.5"]}
    assert prevresult.container_addresses({"cniVersion": "1.0.0"}, "eth0") == {}


@pytest.mark.parametrize("address", ["10.88.0.500/16", "", "bogus", "10.88.0/16"])
def test_a_malformed_address_is_a_config_error(address: str) -> None:
    with pytest.raises(CNIError) as err:
        prevresult.container_addresses(result({"address": address}), "eth0")
    assert err.value.code == 7 and "invalid prevResult: ips" in err.value.msg


@pytest.mark.parametrize("prev", [{"ips": 5}, {"ips": "10.0.0.1"}, {"interfaces": "cni0", "ips": []}])
def test_a_malformed_result_shape_is_a_config_error(prev: dict[str, Any]) -> None:
    with pytest.raises(CNIError) as err:
        prevresult.container_addresses(prev, "eth0")
    assert err.value.code == 7 and "must be a list" in err.value.msg


def test_odd_interface_indexes_are_not_the_containers() -> None:
    prev = result({"interface": True, "address": "10.0.0.1/24"}, {"interface": "2", "address": "10.0.0.2/24"},
                  {"interface": -1, "address": "10.0.0.3/24"})
    prev["interfaces"][1] = "veth1"
    assert prevresult.container_addresses(prev, "eth0") == {}


@pytest.mark.parametrize("interfaces,part", [
    ([], 'interface needs to be set for ingress policy "same-bridge"'),
    ([{"mac": "00:11:22:33:44:55"}], "got empty bridge name"),
    ([{"name": "br+"}], "not a bridge name"),
    ([{"name": "a-very-long-bridge-name"}], "not a bridge name"),
    ([{"name": "br 0"}], "not a bridge name"),
])
def test_bridge_name_problems(interfaces: list[dict[str, str]], part: str) -> None:
    with pytest.raises(CNIError) as err:
        prevresult.bridge_name({"interfaces": interfaces}, "same-bridge")
    assert err.value.code == 7 and part in err.value.msg
    assert prevresult.bridge_name({"interfaces": [{"name": "cni0"}]}, "isolated") == "cni0"


# --- config ---------------------------------------------------------------------------------------------------

def test_defaults_follow_the_reference() -> None:
    conf = config.load({"name": "n", "type": "firewall"})
    assert (conf.admin_chain, conf.ingressPolicy, conf.isolating) == ("CNI-ADMIN", "open", False)
    conf = config.load({"name": "n", "iptablesAdminChainName": "", "ingressPolicy": "", "backend": "",
                        "firewalldZone": "public"})
    assert (conf.admin_chain, conf.ingressPolicy) == ("CNI-ADMIN", "open")
    assert config.load({"name": "n", "ingressPolicy": "isolated"}).isolating


@pytest.mark.parametrize("key,value,message", [
    ("iptablesAdminChainName", "bad name",
     "iptablesAdminChainName: invalid chain name 'bad name': 1-28 characters of A-Z a-z 0-9 _ . -, "
     "not starting with . or - (got 'bad name')"),
    ("iptablesAdminChainName", "DROP", "iptablesAdminChainName: must be a chain of its own, not a built-in "
                                       "chain, a verdict or one of the plugin's (got 'DROP')"),
    ("iptablesAdminChainName", "CNI-FORWARD", "(got 'CNI-FORWARD')"),
    ("iptablesAdminChainName", 7, "iptablesAdminChainName: Input should be a valid string (got 7)"),
    ("ingressPolicy", "strict", "ingressPolicy: unknown ingress policy, expected one of open, same-bridge, "
                                "isolated (got 'strict')"),
    ("backend", "firewalld", "backend: unrecognized backend 'firewalld': expected one of iptables, nftables (got 'firewalld')"),
])
def test_bad_values_name_field_and_value(key: str, value: object, message: str) -> None:
    with pytest.raises(CNIError) as err:
        config.load({"name": "n", key: value})
    assert err.value.code == 7
    assert err.value.msg.startswith("invalid firewall config: ") and message in err.value.msg


# --- rules ----------------------------------------------------------------------------------------------------

def test_rule_texts_are_the_references() -> None:
    assert [rules.args_text(r) for r in rules.container_rules("10.55.0.2")] == [
        "[-d 10.55.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT]", "[-s 10.55.0.2/32 -j ACCEPT]"]
    assert rules.args_text(rules.forward_jump()) == "[-m comment --comment CNI firewall plugin rules -j CNI-FORWARD]"
    assert [r.family for r in rules.container_rules("fd00::2")] == [6, 6]


def test_isolated_drops_within_the_bridge_first() -> None:
    same, isolated = rules.stage1_rules("br0", "same-bridge"), rules.stage1_rules("br0", "isolated")
    assert len(same) == 1 and isolated[1].target.name == rules.STAGE2 and isolated[0].target.name == "DROP"
    assert same[0] != isolated[1]  # the comment names the policy: the two never share a stage-1 rule
    assert rules.stage2_drop("br0") in rules.isolation_rules("br0", "same-bridge")
    assert rules.stage2_drop("br0") in rules.isolation_rules("br0", "isolated")


def test_rule_classifiers() -> None:
    assert rules.is_admin_jump(rules.admin_jump("MY-ADMIN"))
    assert not rules.is_admin_jump(rules.forward_jump())
    assert not any(rules.is_admin_jump(r) for r in rules.container_rules("10.0.0.1"))
    assert all(rules.is_own_isolation_rule(r) for r in rules.isolation_rules("br0", "isolated"))
    assert not rules.is_own_isolation_rule(rules.admin_jump("CNI-ADMIN"))
    assert [rules.is_stage_return(r) for r in rules.stage_returns()] == [True, True]


# --- records ---------------------------------------------------------------------------------------------------

def test_holdings_arithmetic() -> None:
    old = Holdings(["10.0.0.1", "10.0.0.2"], [("br0", "same-bridge")])
    new = Holdings(["10.0.0.2"], [("br0", "isolated")])
    assert (old - new) == Holdings(["10.0.0.1"], [("br0", "same-bridge")])
    both = old | new
    assert both.addresses == ["10.0.0.1", "10.0.0.2"] and len(both.pairs) == 2 and both.complete
    assert not (old | Holdings(complete=False)).complete
    assert not Holdings() and Holdings(pairs=[("b", "isolated")])


def test_records_round_trip_and_report_corruption(tmp_path: Any) -> None:
    store = RecordStore(str(tmp_path), "firewall")
    att = Attachment("net", "c1", "eth0")
    held = {4: Holdings(["10.0.0.1"], [("br0", "same-bridge")]), 6: Holdings()}
    ownership.save(store, att, held)
    assert ownership.load(store, att) == held
    with open(store.path(att), "w") as f:
        json.dump({"format": 1, "families": {"5": {}}}, f)
    with pytest.raises(CNIError) as err:
        ownership.load(store, att)
    assert err.value.code == 5 and "corrupt ownership record" in err.value.msg
    ownership.save(store, att, ownership.empty())  # nothing held: no record
    assert ownership.load(store, att) is None and list(store.attachments()) == []


def test_claims_of_the_others(tmp_path: Any) -> None:
    store = RecordStore(str(tmp_path), "firewall")
    me, other, broken = (Attachment("n1", "me", "eth0"), Attachment("n2", "other", "eth0"),
                         Attachment("n1", "broken", "eth0"))
    ownership.save(store, me, {4: Holdings(["10.0.0.1"]), 6: Holdings()})
    ownership.save(store, other, {4: Holdings(["10.0.0.2"], [("br0", "isolated")]), 6: Holdings(["fd00::2"])})
    claimed = ownership.claims(store, {me}, 4)
    assert claimed == Holdings(["10.0.0.2"], [("br0", "isolated")])
    assert ownership.claims(store, {me, other}, 6) == Holdings()
    os.makedirs(os.path.dirname(store.path(broken)))
    with open(store.path(broken), "w") as f:
        f.write("{")
    assert not ownership.claims(store, {me}, 4).complete


# --- in-process command paths ----------------------------------------------------------------------------------

def test_status_reports_an_unusable_table_as_code_50(monkeypatch: pytest.MonkeyPatch) -> None:
    from chains import table

    def broken(*_: object) -> None:
        raise OSError("can't initialize iptables table `filter'")

    monkeypatch.setattr(table, "read", broken)
    with pytest.raises(CNIError) as err:
        plugin.cmd_status(Request("STATUS", config={"name": "n", "cniVersion": "1.1.0"}))
    assert err.value.code == 50 and "filter table is not usable" in err.value.msg


def test_del_without_record_or_prev_result_touches_nothing(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chains import table

    monkeypatch.setattr(table, "apply", lambda *_: pytest.fail("DEL had nothing to remove"))
    plugin.cmd_del(Request("DEL", container_id="c1", ifname="eth0",
                           config={"name": "n", "stateDir": str(tmp_path)}))


def test_plugin_import_stays_cheap() -> None:
    """The executable imports firewall.plugin for every call: no pydantic, libiptc or rule model up front."""
    code = ("import sys, firewall.plugin; "
            "print([m for m in ('pydantic', 'iptc', 'chains.table', 'chains.rule', 'firewall.config') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO)).stdout
    assert out.strip() == b"[]"


def test_supported_versions() -> None:
    assert plugin.PLUGIN.versions == ("0.4.0", "1.0.0", "1.1.0")
