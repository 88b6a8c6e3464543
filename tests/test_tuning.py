"""tuning chained after bridge, as installed executables in throw-away namespaces.

What the plugins did is read back through pyroute2 (tests/witness.py) and from /proc/sys inside
the container; traffic shows the container still works with its tuned interface.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cni import types
from cni.errors import CNIError
from tests import witness
from tests.netenv import Node, node_env, ns_exec, request, server
from tuning import config as tuning_config

pytestmark = pytest.mark.root

TUNED_MAC = "02:aa:bb:cc:dd:01"
SOMAXCONN = "net.core.somaxconn"


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("tu", external=False) as n:
        yield n


def bridge_conf(node: Node, version: str = "1.0.0") -> dict[str, Any]:
    return {"cniVersion": version, "name": "tunet", "type": "bridge", "bridge": "tu0", "isGateway": True,
            "ipMasq": False, "stateDir": node.state_dir,
            "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": [[{"subnet": "10.66.0.0/24"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}


def tuning_conf(node: Node, prev: dict[str, Any] | None, version: str = "1.0.0", **fields: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": version, "name": "tunet", "type": "tuning", "stateDir": node.state_dir,
                            **fields}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


ALL_FIELDS: dict[str, Any] = {
    "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", SOMAXCONN: "512",
               "net.ipv4.tcp_rmem": "4096 65536 1048576"},
    "mac": TUNED_MAC, "mtu": 1400, "promisc": True, "allmulti": True, "txQLen": 500,
}


def bridge_add(node: Node, ctr: str) -> dict[str, Any]:
    out, rc, err = node.run_plugin("bridge", "ADD", bridge_conf(node), ctr)
    assert rc == 0 and out is not None, (out, err)
    return out


def tuning_run(node: Node, command: str, conf: dict[str, Any], ctr: str, **kw: Any
               ) -> tuple[dict[str, Any] | None, int, str]:
    return node.run_plugin("tuning", command, conf, ctr, **kw)


def tuning_add(node: Node, ctr: str, prev: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out, rc, err = tuning_run(node, "ADD", tuning_conf(node, prev, **fields), ctr)
    assert rc == 0 and out is not None, (out, err)
    return out


def records(node: Node) -> list[str]:
    base = os.path.join(node.state_dir, "tuning")
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs)


def container_state(ctr: str, ifname: str = "eth0") -> dict[str, Any]:
    """Everything tuning may change in a container, as the witness sees it."""
    return {"link": witness.link(ctr, ifname),
            "sysctl": {key: witness.sysctl(ctr, key.replace("IFNAME", ifname)) for key in ALL_FIELDS["sysctl"]}}


def ip_of(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


# --- integration: chained after bridge ----------------------------------------------------------


def test_values_are_applied_in_the_container_and_traffic_still_flows(node: Node) -> None:
    c1, c2 = node.container("c1"), node.container("c2")
    prev1, prev2 = bridge_add(node, c1), bridge_add(node, c2)
    node_somaxconn = witness.sysctl(node.ns, SOMAXCONN)
    out = tuning_add(node, c1, prev1, **ALL_FIELDS)

    expected = json.loads(json.dumps(prev1))
    expected["interfaces"][2]["mac"] = TUNED_MAC
    assert out == expected  # prevResult passed through, with the new MAC
    link = witness.link(c1, "eth0")
    assert link is not None and link.kind == "veth"
    assert (link.mac, link.mtu, link.promisc, link.allmulti, link.txqlen) == (TUNED_MAC, 1400, True, True, 500)
    assert witness.sysctl(c1, "net.ipv4.conf.eth0.arp_filter") == "1"
    assert witness.sysctl(c1, SOMAXCONN) == "512"
    assert witness.sysctl(c1, "net.ipv4.tcp_rmem") == "4096 65536 1048576"
    assert witness.sysctl(node.ns, SOMAXCONN) == node_somaxconn  # the node's own namespace is untouched
    untuned = witness.link(c2, "eth0")
    assert untuned is not None and untuned.mtu == 1500 and not untuned.promisc

    ip1, ip2 = ip_of(prev1), ip_of(prev2)
    with server(c1, "tcp", 7500, tag="c1"):
        assert request(c2, "tcp", ip1, 7500) == f"c1 {ip2}"
        assert request(node.ns, "tcp", ip1, 7500) == "c1 10.66.0.1"
    with server(c2, "udp", 7501, tag="c2"):
        assert request(c1, "udp", ip2, 7501) == f"c2 {ip1}"
    _, rc, err = tuning_run(node, "CHECK", tuning_conf(node, out, **ALL_FIELDS), c1)
    assert rc == 0, err
    _, rc, err = node.run_plugin("bridge", "CHECK", dict(bridge_conf(node), prevResult=out), c1)
    assert rc == 0, err  # the bridge agrees with the MAC tuning reported


def test_del_restores_every_value_and_removes_the_record(node: Node) -> None:
    c1 = node.container("c1")
    prev = bridge_add(node, c1)
    before = container_state(c1)
    tuning_add(node, c1, prev, **ALL_FIELDS)
    assert container_state(c1) != before and len(records(node)) == 1
    out, rc, err = tuning_run(node, "DEL", tuning_conf(node, prev, **ALL_FIELDS), c1)
    assert rc == 0 and out is None, err
    assert container_state(c1) == before
    assert records(node) == []
    out, rc, err = tuning_run(node, "DEL", tuning_conf(node, prev, **ALL_FIELDS), c1)  # again: nothing to do
    assert rc == 0 and out is None, err
    assert container_state(c1) == before
    _, rc, err = node.run_plugin("bridge", "DEL", bridge_conf(node), c1)
    assert rc == 0, err


def test_repeated_add_keeps_the_original_values_for_del(node: Node) -> None:
    c1 = node.container("c1")
    prev = bridge_add(node, c1)
    somaxconn = witness.sysctl(c1, SOMAXCONN)
    tuning_add(node, c1, prev, mtu=1400, sysctl={SOMAXCONN: "600"})
    tuning_add(node, c1, prev, mtu=1300, sysctl={SOMAXCONN: "700"})
    assert witness.link(c1, "eth0").mtu == 1300 and witness.sysctl(c1, SOMAXCONN) == "700"
    _, rc, err = tuning_run(node, "DEL", tuning_conf(node, prev), c1)
    assert rc == 0, err
    assert witness.link(c1, "eth0").mtu == 1500 and witness.sysctl(c1, SOMAXCONN) == somaxconn


def test_check_names_every_difference(node: Node) -> None:
    c1 = node.container("c1")
    prev = bridge_add(node, c1)
    fields = {"mtu": 1400, "promisc": True, "sysctl": {SOMAXCONN: "512"}}
    out = tuning_add(node, c1, prev, **fields)
    check = tuning_conf(node, out, **fields)
    _, rc, err = tuning_run(node, "CHECK", check, c1)
    assert rc == 0, err
    ns_exec(c1, "ip", "link", "set", "eth0", "mtu", "1500", "promisc", "off")
    ns_exec(c1, "sysctl", "-qw", f"{SOMAXCONN}=128")
    failed, rc, _ = tuning_run(node, "CHECK", check, c1)
    assert rc == 1 and failed is not None and failed["code"] == 999
    assert "mtu of eth0 is 1500, configured 1400" in failed["msg"]
    assert "promisc of eth0 is false, configured true" in failed["msg"]
    assert f"sysctl {SOMAXCONN} is '128', configured '512'" in failed["msg"]
    ns_exec(c1, "ip", "link", "del", "eth0")
    failed, rc, _ = tuning_run(node, "CHECK", check, c1)
    assert rc == 1 and failed is not None and "Cannot find container link eth0" in failed["msg"]
    missing, rc, _ = tuning_run(node, "CHECK", tuning_conf(node, None, **fields), c1)
    assert rc == 1 and missing is not None and missing["code"] == 7 and missing["msg"] == "Required prevResult missing"


def test_del_with_the_namespace_gone_or_empty(node: Node) -> None:
    c1, c2 = node.container("c1"), node.container("c2")
    for ctr in (c1, c2):
        tuning_add(node, ctr, bridge_add(node, ctr), **ALL_FIELDS)
    assert len(records(node)) == 2
    node.namespaces.remove(c1)
    out, rc, err = tuning_run(node, "DEL", tuning_conf(node, None, **ALL_FIELDS), c1)
    assert rc == 0 and out is None, err
    out, rc, err = tuning_run(node, "DEL", tuning_conf(node, None, **ALL_FIELDS), c2, env_extra={"CNI_NETNS": ""})
    assert rc == 0 and out is None, err
    assert records(node) == []


def test_del_with_the_interface_gone_still_restores_namespace_sysctls(node: Node) -> None:
    c1 = node.container("c1")
    prev = bridge_add(node, c1)
    somaxconn = witness.sysctl(c1, SOMAXCONN)
    tuning_add(node, c1, prev, **ALL_FIELDS)
    ns_exec(c1, "ip", "link", "del", "eth0")
    out, rc, err = tuning_run(node, "DEL", tuning_conf(node, prev, **ALL_FIELDS), c1)
    assert rc == 0 and out is None, err
    assert witness.sysctl(c1, SOMAXCONN) == somaxconn
    assert records(node) == []


def test_capability_runtime_config_and_args_set_the_mac_in_the_reference_order(node: Node) -> None:
    c1 = node.container("c1")
    prev = bridge_add(node, c1)
    cases = [  # (config fields, CNI_ARGS, the MAC expected on eth0)
        ({"mac": "02:00:00:00:00:01"}, "", "02:00:00:00:00:01"),
        ({"mac": "02:00:00:00:00:01"}, "MAC=02:00:00:00:00:02", "02:00:00:00:00:02"),
        ({"mac": "02:00:00:00:00:01", "runtimeConfig": {"mac": "02:00:00:00:00:03"}},
         "MAC=02:00:00:00:00:02", "02:00:00:00:00:03"),
        ({"runtimeConfig": {"mac": "02:00:00:00:00:03"}, "args": {"cni": {"mac": "02:00:00:00:00:04", "mtu": 1450}}},
         "IgnoreUnknown=1;K8S_POD_NAME=x", "02:00:00:00:00:04"),
    ]
    original = witness.link(c1, "eth0")
    for fields, cni_args, mac in cases:
        out, rc, err = tuning_run(node, "ADD", tuning_conf(node, prev, **fields), c1, cni_args=cni_args)
        assert rc == 0 and out is not None, (out, err)
        assert witness.link(c1, "eth0").mac == mac and out["interfaces"][2]["mac"] == mac
        _, rc, err = tuning_run(node, "DEL", tuning_conf(node, prev, **fields), c1)
        assert rc == 0, err
        assert witness.link(c1, "eth0") == original


def test_failed_sysctl_write_puts_back_what_was_written(node: Node) -> None:
    c1 = node.container("c1")
    prev = bridge_add(node, c1)
    before = container_state(c1)
    fields = {"sysctl": {SOMAXCONN: "777", "net.ipv4.conf.IFNAME.arp_filter": "not-a-number"}, "mtu": 1400}
    out, rc, _ = tuning_run(node, "ADD", tuning_conf(node, prev, **fields), c1)
    assert rc == 1 and out is not None and out["code"] == 7
    assert "failed to set sysctl net.ipv4.conf.eth0.arp_filter" in out["msg"]
    assert container_state(c1) == before  # somaxconn was written first, and put back
    assert records(node) == []


def test_failed_link_change_puts_back_what_was_changed(node: Node) -> None:
    """A macvlan's MTU cannot exceed its lower device's: the kernel refuses after the sysctls and the MAC
    were changed, and both are put back."""
    c1 = node.container("c1")
    ns_exec(c1, "ip", "link", "add", "low0", "type", "veth", "peer", "name", "low1")
    ns_exec(c1, "ip", "link", "add", "mv0", "link", "low0", "type", "macvlan", "mode", "bridge")
    before = container_state(c1, "mv0")
    fields = {"sysctl": {SOMAXCONN: "777", "net.ipv4.conf.IFNAME.arp_filter": "1"}, "mac": TUNED_MAC, "mtu": 9000}
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "mv0", "sandbox": f"/run/netns/{c1}"}]}
    out, rc, _ = tuning_run(node, "ADD", tuning_conf(node, prev, **fields), c1, ifname="mv0")
    assert rc == 1 and out is not None and out["code"] == 7 and "failed to set mtu of mv0 to 9000" in out["msg"], out
    assert container_state(c1, "mv0") == before
    assert records(node) == []


# --- bad input: one case each, code and message, nothing left behind ---------------------------

BAD_INPUTS: dict[str, tuple[dict[str, Any], str, int, str]] = {
    # case: (tuning fields, CNI_ARGS, code, message part)
    "sysctl-outside-net": ({"sysctl": {"kernel.domainname": "x"}}, "", 7, "only keys under net. are allowed"),
    "sysctl-dotdot": ({"sysctl": {"net.ipv4..conf.all.forwarding": "1"}}, "", 7, "empty component"),
    "sysctl-climbs-out": ({"sysctl": {"net.core.....kernel.domainname": "x"}}, "", 7, "empty component"),
    "sysctl-slash": ({"sysctl": {"net/core/somaxconn": "1"}}, "", 7, "without \"/\""),
    "sysctl-absolute": ({"sysctl": {"/proc/sys/net/core/somaxconn": "1"}}, "", 7, "without \"/\""),
    "sysctl-other-interface": ({"sysctl": {"net.ipv4.conf.lo.arp_filter": "1"}}, "", 7, "names interface lo, not eth0"),
    "sysctl-missing-key": ({"sysctl": {"net.core.no_such_setting": "1"}}, "", 7, "does not exist"),
    "sysctl-value-not-string": ({"sysctl": {SOMAXCONN: 512}}, "", 7, "is not a string"),
    "sysctl-value-refused": ({"sysctl": {SOMAXCONN: "lots"}}, "", 7, "failed to set sysctl net.core.somaxconn"),
    "mac-malformed": ({"mac": "02:aa:bb:cc:dd"}, "", 7, "invalid MAC address"),
    "mac-multicast": ({"mac": "01:00:5e:00:00:01"}, "", 7, "multicast"),
    "mac-from-cni-args": ({}, "MAC=zz:zz:zz:zz:zz:zz", 7, "invalid MAC address in CNI_ARGS"),
    "mac-from-runtime-config": ({"runtimeConfig": {"mac": "nope"}}, "", 7, "invalid MAC address in runtimeConfig"),
    "mtu-too-small": ({"mtu": 10}, "", 7, "invalid mtu"),
    "mtu-not-integer": ({"mtu": "1500"}, "", 7, "is not an integer"),
    "promisc-not-bool": ({"promisc": "yes"}, "", 7, "is not true or false"),
    "allmulti-not-bool": ({"allmulti": 1}, "", 7, "is not true or false"),
    "txqlen-negative": ({"txQLen": -1}, "", 7, "invalid txQLen"),
    "args-cni-bad-mtu": ({"args": {"cni": {"mtu": 70000}}}, "", 7, "invalid mtu in args.cni"),
    "unknown-cni-args": ({"mtu": 1400}, "FOO=bar", 4, "unknown args"),
    "no-prev-result": ({"mtu": 1400, "prevResult": None}, "", 7, "Required prevResult missing"),
}


def expect_add_error(node: Node, ctr: str, stdin: bytes, code: int, part: str, cni_args: str = "",
                     env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    before = container_state(ctr)
    env = node.plugin_env("ADD", ctr, cni_args=cni_args)
    env.update(env_extra or {})
    proc = subprocess.run(["ip", "netns", "exec", node.ns, os.path.join(node.bin_dir, "tuning")], input=stdin,
                          env=env, capture_output=True, check=False)
    assert proc.returncode == 1, proc.stdout
    out = json.loads(proc.stdout)
    assert out["code"] == code and part in out["msg"] + out.get("details", ""), out
    assert "Traceback" not in proc.stderr.decode()
    assert container_state(ctr) == before
    assert records(node) == []
    return out


@pytest.fixture
def bridged(node: Node) -> tuple[str, dict[str, Any]]:
    ctr = node.container("c1")
    return ctr, bridge_add(node, ctr)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(node: Node, bridged: tuple[str, dict[str, Any]], case: str) -> None:
    fields, cni_args, code, part = BAD_INPUTS[case]
    ctr, prev = bridged
    fields = dict(fields)
    chained = None if fields.pop("prevResult", prev) is None else prev  # None: send no prevResult at all
    conf = tuning_conf(node, chained, **fields)
    expect_add_error(node, ctr, json.dumps(conf).encode(), code, part, cni_args)


def test_bad_input_duplicated_sysctl_key(node: Node, bridged: tuple[str, dict[str, Any]]) -> None:
    ctr, prev = bridged
    stdin = ('{"cniVersion": "1.0.0", "name": "tunet", "type": "tuning", "stateDir": %s, "prevResult": %s, '
             '"sysctl": {"net.core.somaxconn": "600", "net.core.somaxconn": "700"}}'
             % (json.dumps(node.state_dir), json.dumps(prev))).encode()
    expect_add_error(node, ctr, stdin, 7, "duplicated sysctl keys are not allowed")


def test_bad_input_missing_interface(node: Node, bridged: tuple[str, dict[str, Any]]) -> None:
    ctr, prev = bridged
    stdin = json.dumps(tuning_conf(node, prev, mtu=1400)).encode()
    expect_add_error(node, ctr, stdin, 999, "failed to get 'eth9'", env_extra={"CNI_IFNAME": "eth9"})


def test_bad_input_missing_netns(node: Node, bridged: tuple[str, dict[str, Any]]) -> None:
    ctr, prev = bridged
    stdin = json.dumps(tuning_conf(node, prev, mtu=1400)).encode()
    expect_add_error(node, ctr, stdin, 3, "failed to open netns", env_extra={"CNI_NETNS": "/run/netns/no-such"})


# --- versions, through cnictl --------------------------------------------------------------------

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize("version", VERSIONS)
def test_conflist_bridge_then_tuning_at_every_version(node: Node, version: str) -> None:
    bridge = bridge_conf(node, version)
    del bridge["cniVersion"], bridge["name"]
    tuning = {"type": "tuning", "stateDir": node.state_dir, "capabilities": {"mac": True},
              "mtu": 1400, "txQLen": 300, "sysctl": {"net.ipv4.conf.IFNAME.arp_ignore": "1"}}
    conflist = {"cniVersion": version, "name": "tunet", "plugins": [bridge, tuning]}
    with open(os.path.join(node.netconf_dir, "50-tuning.conflist"), "w") as f:
        json.dump(conflist, f)
    ctr = node.container("v")
    result = json.loads(node.cnictl("add", "tunet", ctr, "--cap", f'mac="{TUNED_MAC}"').stdout)
    assert result["cniVersion"] == version
    types.validate_result(result, version)
    assert [i.get("mac") for i in result["interfaces"] if i["name"] == "eth0"] == [TUNED_MAC]
    link = witness.link(ctr, "eth0")
    assert (link.mac, link.mtu, link.txqlen) == (TUNED_MAC, 1400, 300)
    assert witness.sysctl(ctr, "net.ipv4.conf.eth0.arp_ignore") == "1"
    with server(ctr, "tcp", 7600, tag=version):
        assert request(node.ns, "tcp", ip_of(result), 7600) == f"{version} 10.66.0.1"
    if version >= "0.4.0":
        node.cnictl("check", "tunet", ctr)
    node.cnictl("del", "tunet", ctr)
    assert records(node) == [] and node.reservations("tunet") == []
    assert witness.link(ctr, "eth0") is None


# --- many at once --------------------------------------------------------------------------------


def test_parallel_add_and_del(node: Node) -> None:
    """20 containers tuned and restored at once (veth pairs made by hand: the point is tuning's concurrency)."""
    containers = []
    for i in range(20):
        ctr = node.container(f"p{i}")
        ns_exec(ctr, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        containers.append(ctr)
    originals = {ctr: container_state(ctr) for ctr in containers}

    def prev_of(ctr: str) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": f"/run/netns/{ctr}"}]}

    def add(ctr: str) -> int:
        n = containers.index(ctr)
        fields = dict(ALL_FIELDS, mac=f"02:00:00:00:01:{n:02x}", mtu=1300 + n)
        return tuning_run(node, "ADD", tuning_conf(node, prev_of(ctr), **fields), ctr)[1]

    def delete(ctr: str) -> int:
        return tuning_run(node, "DEL", tuning_conf(node, prev_of(ctr), **ALL_FIELDS), ctr)[1]

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(add, containers)) == [0] * 20
        for n, ctr in enumerate(containers):
            link = witness.link(ctr, "eth0")
            assert (link.mac, link.mtu, link.txqlen) == (f"02:00:00:00:01:{n:02x}", 1300 + n, 500)
        assert len(records(node)) == 20
        assert list(pool.map(delete, containers)) == [0] * 20
    assert {ctr: container_state(ctr) for ctr in containers} == originals
    assert records(node) == []


def test_gc_drops_records_the_runtime_no_longer_lists(node: Node) -> None:
    c1, c2 = node.container("c1"), node.container("c2")
    for ctr in (c1, c2):
        tuning_add(node, ctr, bridge_add(node, ctr), mtu=1400)
    assert len(records(node)) == 2
    gc = tuning_conf(node, None, "1.1.0", **{"cni.dev/valid-attachments": [{"containerID": c2, "ifname": "eth0"}]})
    out, rc, err = tuning_run(node, "GC", gc, "")
    assert rc == 0 and out is None, err
    assert [os.path.basename(os.path.dirname(r)) for r in records(node)] == [c2]


# --- pure logic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "path"), [
    ("net.core.somaxconn", "net/core/somaxconn"),
    ("net.ipv4.conf.IFNAME.arp_filter", "net/ipv4/conf/eth0.100/arp_filter"),
    ("net.ipv4.conf.eth0.100.arp_filter", None),  # a dotted name must be written IFNAME
    ("net.ipv6.conf.all.forwarding", "net/ipv6/conf/all/forwarding"),
    ("net.ipv4.neigh.default.gc_thresh1", "net/ipv4/neigh/default/gc_thresh1"),
    ("net.ipv6.neigh.lo.retrans_time_ms", None),
    ("net", None),
    ("net.", None),
    (".net.core.somaxconn", None),
    ("netfilter.x", None),
    ("net.core.somaxconn ", None),
])
def test_sysctl_path(key: str, path: str | None) -> None:
    if path is None:
        with pytest.raises(CNIError) as caught:
            tuning_config.sysctl_path(key, "eth0.100")
        assert caught.value.code == 7
    else:
        assert tuning_config.sysctl_path(key, "eth0.100") == path


def test_allowlist_matches_like_the_reference() -> None:
    patterns = [r"^net\.ipv4\.conf\.IFNAME\.[a-z_]*$", r"^net\.core\.somaxconn$"]
    keys = ["net.ipv4.conf.IFNAME.arp_filter", "net.core.somaxconn", "net.ipv4.ip_forward"]
    assert tuning_config.not_allowed(keys, patterns) == ["net.ipv4.ip_forward"]
    with pytest.raises(CNIError):
        tuning_config.not_allowed(keys, ["("])
