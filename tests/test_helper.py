"""The resident helper: same behaviour as the executables alone, and nothing lost when it is gone."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import REPO, EXTERNAL_NET, Node, node_env, request, server, wait_for

pytestmark = pytest.mark.root


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("hp") as n:
        yield n


@pytest.fixture
def helper(node: Node) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    sock = os.path.join(node.work, "helper.sock")
    proc = subprocess.Popen([sys.executable, "-m", "cni.helper", "--socket", sock], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(sock), timeout=20), "helper did not start"
        yield proc, sock
    finally:
        proc.kill()
        proc.wait()


def confs(node: Node, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    bridge = {"cniVersion": "1.0.0", "name": "hpnet", "type": "bridge", "bridge": "cni0", "isGateway": True,
              "ipMasq": True, "hairpinMode": True, "stateDir": node.state_dir,
              "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": [[{"subnet": "10.88.0.0/24"}]],
                       "routes": [{"dst": "0.0.0.0/0"}]}}
    portmap = {"cniVersion": "1.0.0", "name": "hpnet", "type": "portmap", "stateDir": node.state_dir,
               "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}}
    return bridge, portmap


def lifecycle(node: Node, ctr: str, port: int, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """ADD, CHECK, traffic; returns the result and the node's nat table while attached; then DEL."""
    bridge, portmap = confs(node, port)
    result, rc, err = node.run_plugin("bridge", "ADD", bridge, ctr, env_extra=env)
    assert rc == 0 and result is not None, err
    out, rc, err = node.run_plugin("portmap", "ADD", dict(portmap, prevResult=result), ctr, env_extra=env)
    assert rc == 0 and out == result, err
    for plugin, conf in (("bridge", bridge), ("portmap", portmap)):
        _, rc, err = node.run_plugin(plugin, "CHECK", dict(conf, prevResult=result), ctr, env_extra=env)
        assert rc == 0, err
    with server(ctr, "tcp", 80, tag="c"):
        assert request(node.external, "tcp", f"{EXTERNAL_NET}.1", port) == f"c {EXTERNAL_NET}.2"
    attached = node.save(4)
    for plugin, conf in (("portmap", portmap), ("bridge", bridge)):
        _, rc, err = node.run_plugin(plugin, "DEL", conf, ctr, env_extra=env)
        assert rc == 0, err
    return result, attached


def normalized(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what is random per attachment (veth name, MACs)."""
    out = dict(result)
    out["interfaces"] = [{k: v for k, v in i.items() if k != "mac" or i["name"] == "cni0"}
                         for i in result["interfaces"] if not i["name"].startswith("veth")]
    return out


def anonymous(save: str, container_id: str, ip: str) -> str:
    """The table with this container's names and address replaced by placeholders, lines sorted."""
    save = save.replace(ip + ":", "IP:").replace(ip + "/", "IP/")
    save = re.sub(r"CNI-DN-[0-9a-f]{21}", "CNI-DN-X", save)
    save = re.sub(r"CNI-[0-9a-f]{24}", "CNI-X", save)
    # iptables-save lists chains by name, and the hashed names sort differently per container
    return "\n".join(sorted(save.replace(container_id, "ID").splitlines()))


def test_helper_and_standalone_behave_identically(node: Node, helper: tuple[Any, str]) -> None:
    _, sock = helper
    c1, c2 = node.container("c1"), node.container("c2")
    alone, alone_nat = lifecycle(node, c1, 8080, {"PYCNI_HELPER": "0"})
    empty = node.save(4)
    via, via_nat = lifecycle(node, c2, 8080, {"PYCNI_HELPER_SOCKET": sock})
    ip_alone, ip_via = (r["ips"][0]["address"].split("/")[0] for r in (alone, via))
    assert (ip_alone, ip_via) == ("10.88.0.2", "10.88.0.3")  # round robin, one store, either way
    for r in (alone, via):
        r["ips"][0]["address"] = "IP"
    assert normalized(alone) == dict(normalized(via), interfaces=[
        dict(i, sandbox=i["sandbox"].replace(c2, c1)) if "sandbox" in i else i for i in normalized(via)["interfaces"]])
    # the same rules; only the container's names and address differ
    assert anonymous(alone_nat, c1, ip_alone) == anonymous(via_nat, c2, ip_via)
    assert node.save(4) == empty


def test_errors_come_back_unchanged_through_the_helper(node: Node, helper: tuple[Any, str]) -> None:
    _, sock = helper
    c1 = node.container("c1")
    _, portmap = confs(node, 0)
    for env in ({"PYCNI_HELPER": "0"}, {"PYCNI_HELPER_SOCKET": sock}):
        out, rc, _ = node.run_plugin("portmap", "ADD", dict(portmap, prevResult={"cniVersion": "1.0.0"}), c1,
                                     env_extra=env)
        assert rc == 1 and out is not None and out["code"] == 7 and "hostPort" in out["msg"]


def test_a_dead_helper_means_the_executable_does_the_work(node: Node, helper: tuple[Any, str]) -> None:
    proc, sock = helper
    proc.kill()
    proc.wait()
    assert os.path.exists(sock)  # a stale socket file: connecting is refused
    c1 = node.container("c1")
    lifecycle(node, c1, 8081, {"PYCNI_HELPER_SOCKET": sock})


def test_a_call_killed_inside_the_helper_is_reported_as_try_again(node: Node, helper: tuple[Any, str]) -> None:
    _, sock = helper
    c1 = node.container("c1")
    bridge, _ = confs(node, 0)
    out, rc, _ = node.run_plugin("bridge", "ADD", bridge, c1,
                                 env_extra={"PYCNI_HELPER_SOCKET": sock, "PYCNI_KILL_AT": "bridge.add.after-veth"})
    assert rc == 1 and out is not None and out["code"] == 11
    # the runtime's DEL after a failed ADD cleans up, helper or not
    _, rc, err = node.run_plugin("bridge", "DEL", bridge, c1, env_extra={"PYCNI_HELPER_SOCKET": sock})
    assert rc == 0, err
    assert node.reservations("hpnet") == [] and "CNI-" not in node.save(4)
    assert [l for l in node.links() if l.startswith("veth")] == []
