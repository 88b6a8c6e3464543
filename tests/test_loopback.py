"""loopback as the installed executable, in throw-away namespaces, checked with traffic and pyroute2."""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cni import types
from tests import witness
from tests.netenv import PYTHON, REPO, Node, node_env, ns_exec, request, server

pytestmark = pytest.mark.root

ALL_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("lo", external=False) as n:
        yield n


def lo_conf(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "lonet", "type": "loopback", **extra}


def fresh_container(node: Node, suffix: str) -> str:
    """A container namespace whose lo is down, as a runtime hands it over (netenv brings lo up)."""
    ctr = node.container(suffix)
    ns_exec(ctr, "ip", "link", "set", "lo", "down")
    assert not witness.link(ctr, "lo").up
    return ctr


def run(node: Node, command: str, conf: dict[str, Any], ctr: str, **kw: Any) -> tuple[dict[str, Any] | None, int, str]:
    # CNI_IFNAME is ignored by loopback; runtimes pass "lo".
    return node.run_plugin("loopback", command, conf, ctr, ifname="lo", **kw)


def test_add_brings_lo_up_and_reports_its_addresses(node: Node) -> None:
    ctr = fresh_container(node, "c1")
    assert request(ctr, "tcp", "127.0.0.1", 7400, timeout=1).startswith(("ERROR", "TIMEOUT"))
    out, rc, err = run(node, "ADD", lo_conf(), ctr)
    assert rc == 0, (out, err)
    assert out == {"cniVersion": "1.0.0",
                   "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": f"/run/netns/{ctr}"}],
                   "ips": [{"interface": 0, "address": "127.0.0.1/8"}, {"interface": 0, "address": "::1/128"}]}
    seen = witness.link(ctr, "lo")
    assert seen is not None and seen.up and seen.kind is None
    assert sorted(witness.addresses(ctr, "lo")) == ["127.0.0.1/8", "::1/128"]
    with server(ctr, "tcp", 7400, tag="lo4"):
        assert request(ctr, "tcp", "127.0.0.1", 7400) == "lo4 127.0.0.1"
    with server(ctr, "tcp", 7401, family=6, tag="lo6"):
        assert request(ctr, "tcp", "::1", 7401) == "lo6 ::1"


def test_del_takes_lo_down_and_is_repeatable(node: Node) -> None:
    ctr = fresh_container(node, "c1")
    _, rc, err = run(node, "ADD", lo_conf(), ctr)
    assert rc == 0, err
    with server(ctr, "tcp", 7402, tag="lo"):
        assert request(ctr, "tcp", "127.0.0.1", 7402) == "lo 127.0.0.1"
        out, rc, err = run(node, "DEL", lo_conf(), ctr)
        assert rc == 0 and out is None, err
        assert not witness.link(ctr, "lo").up
        assert request(ctr, "tcp", "127.0.0.1", 7402, timeout=1).startswith(("ERROR", "TIMEOUT"))
    out, rc, err = run(node, "DEL", lo_conf(), ctr)
    assert rc == 0 and out is None, err


def test_del_with_the_namespace_gone_or_empty_succeeds(node: Node) -> None:
    ctr = fresh_container(node, "c1")
    _, rc, err = run(node, "ADD", lo_conf(), ctr)
    assert rc == 0, err
    node.namespaces.remove(ctr)
    out, rc, err = run(node, "DEL", lo_conf(), ctr)
    assert rc == 0 and out is None, err
    out, rc, err = run(node, "DEL", lo_conf(), ctr, env_extra={"CNI_NETNS": ""})
    assert rc == 0 and out is None, err


def test_del_with_a_stale_netns_file_succeeds(node: Node) -> None:
    """An unmounted /run/netns entry (a plain file now) is a namespace that is gone."""
    stale = os.path.join(node.work, "stale-netns")
    open(stale, "w").close()
    out, rc, err = run(node, "DEL", lo_conf(), "", container_id="x", env_extra={"CNI_NETNS": stale})
    assert rc == 0 and out is None, err


def test_check_passes_while_lo_is_up_and_fails_when_it_is_down(node: Node) -> None:
    ctr = fresh_container(node, "c1")
    out, rc, _ = run(node, "CHECK", lo_conf(), ctr)
    assert rc == 1 and out is not None and out["code"] == 999 and out["msg"] == "loopback interface is down"
    _, rc, err = run(node, "ADD", lo_conf(), ctr)
    assert rc == 0, err
    out, rc, err = run(node, "CHECK", lo_conf(), ctr)
    assert rc == 0 and out is None, (out, err)
    ns_exec(ctr, "ip", "link", "set", "lo", "down")
    out, rc, _ = run(node, "CHECK", lo_conf(), ctr)
    assert rc == 1 and out is not None and out["msg"] == "loopback interface is down"


def test_ipv6_disabled_reports_only_ipv4(node: Node) -> None:
    ctr = fresh_container(node, "c1")
    ns_exec(ctr, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.lo.disable_ipv6=1")
    out, rc, err = run(node, "ADD", lo_conf(), ctr)
    assert rc == 0, err
    assert out is not None and out["ips"] == [{"interface": 0, "address": "127.0.0.1/8"}]
    assert witness.addresses(ctr, "lo") == ["127.0.0.1/8"]


def test_prev_result_is_passed_through(node: Node) -> None:
    ctr = fresh_container(node, "c1")
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": f"/run/netns/{ctr}"}],
            "ips": [{"address": "10.1.2.3/24", "interface": 0}]}
    out, rc, err = run(node, "ADD", lo_conf(prevResult=prev), ctr)
    assert rc == 0, err
    assert out == prev
    assert witness.link(ctr, "lo").up


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_version_matrix(node: Node, version: str) -> None:
    ctr = fresh_container(node, "c1")
    out, rc, err = run(node, "ADD", lo_conf(version), ctr)
    assert rc == 0, err
    assert out is not None
    if version in ("0.1.0", "0.2.0"):
        # The spec's 0.2.0 shape (Debian's 1.1.1 binary prints the 1.0.0 shape labelled 0.2.0).
        assert out == {"cniVersion": version, "ip4": {"ip": "127.0.0.1/8"}, "ip6": {"ip": "::1/128"}}
    else:
        types.validate_result(out, version)
        assert out["interfaces"][0]["sandbox"] == f"/run/netns/{ctr}"
        assert [ip["address"] for ip in out["ips"]] == ["127.0.0.1/8", "::1/128"]
    if version >= "0.4.0":
        _, rc, err = run(node, "CHECK", lo_conf(version, prevResult=out), ctr)
        assert rc == 0, err
    _, rc, err = run(node, "DEL", lo_conf(version), ctr)
    assert rc == 0, err
    assert not witness.link(ctr, "lo").up


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_conflist_through_cnictl(node: Node, version: str) -> None:
    conflist = {"cniVersion": version, "name": "lonet", "plugins": [{"type": "loopback"}]}
    with open(os.path.join(node.netconf_dir, "99-loopback.conflist"), "w") as f:
        json.dump(conflist, f)
    ctr = fresh_container(node, "c1")
    result = json.loads(node.cnictl("add", "lonet", ctr, "--ifname", "lo").stdout)
    assert result["cniVersion"] == version
    types.validate_result(result, version)
    assert witness.link(ctr, "lo").up
    if version >= "0.4.0":
        node.cnictl("check", "lonet", ctr, "--ifname", "lo")
    node.cnictl("del", "lonet", ctr, "--ifname", "lo")
    assert not witness.link(ctr, "lo").up


BAD_INPUTS: dict[str, tuple[dict[str, Any] | None, dict[str, str], str, int, str]] = {
    # case: (config or None for non-JSON stdin, env overrides, command, code, message part)
    "missing-netns": (lo_conf(), {"CNI_NETNS": "/run/netns/no-such-netns"}, "ADD", 3, "failed to open netns"),
    "not-json": (None, {}, "ADD", 6, "error unmarshall network config"),
    "unknown-version": (lo_conf("9.9.9"), {}, "ADD", 1, "incompatible CNI versions"),
    "check-at-0.3.1": (lo_conf("0.3.1"), {}, "CHECK", 1, "config version does not allow CHECK"),
    "missing-name": ({"cniVersion": "1.0.0", "type": "loopback"}, {}, "ADD", 7, "missing network name"),
    "check-missing-netns": (lo_conf(), {"CNI_NETNS": "/run/netns/no-such-netns"}, "CHECK", 3, "failed to open netns"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(node: Node, case: str) -> None:
    conf, env, command, code, part = BAD_INPUTS[case]
    ctr = fresh_container(node, "c1")
    env_vars = node.plugin_env(command, ctr, "lo")
    env_vars.update(env)
    stdin = b"{not json" if conf is None else json.dumps(conf).encode()
    proc = subprocess.run([os.path.join(node.bin_dir, "loopback")], input=stdin, env=env_vars,
                          capture_output=True, check=False)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["code"] == code and part in out["msg"] + out.get("details", ""), out
    assert "Traceback" not in proc.stderr.decode()
    assert not witness.link(ctr, "lo").up  # nothing changed


def test_parallel_add_and_del(node: Node) -> None:
    containers = [fresh_container(node, f"p{i}") for i in range(20)]

    def lifecycle(ctr: str) -> tuple[bool, bool]:
        _, rc_add, err = run(node, "ADD", lo_conf(), ctr)
        assert rc_add == 0, err
        up_after_add = witness.link(ctr, "lo").up
        _, rc_del, err = run(node, "DEL", lo_conf(), ctr)
        assert rc_del == 0, err
        return up_after_add, witness.link(ctr, "lo").up

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(lifecycle, containers))
    assert outcomes == [(True, False)] * 20


_IMPORT_PROBE = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from cni import skel
import loopback.plugin
env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x", "CNI_NETNS": sys.argv[2], "CNI_IFNAME": "lo", "CNI_PATH": "/x"}
out, code = skel.execute(loopback.plugin.PLUGIN, env, b'{"cniVersion": "1.0.0", "name": "n", "type": "loopback"}')
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_add_imports_only_what_it_needs(node: Node) -> None:
    """The cheapest exec of the suite: no ipaddress, typing, pydantic, records or iptables on its path."""
    ctr = fresh_container(node, "c1")
    proc = subprocess.run([PYTHON, "-I", "-S", "-c", _IMPORT_PROBE, REPO, f"/run/netns/{ctr}"],
                          capture_output=True, check=True)
    report = json.loads(proc.stdout)
    assert report["code"] == 0
    loaded = set(report["modules"])
    assert {"netlink.rtnl", "loopback.plugin"} <= loaded
    assert not loaded & {"ipaddress", "typing", "dataclasses", "pydantic", "iptc", "pyroute2", "cni.records", "ctypes",
                         "cni.files", "socket", "threading"}, loaded
    assert witness.link(ctr, "lo").up
