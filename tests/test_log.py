"""The operator log (cni.log): one JSON line per call, details at debug, never a failed call because of it.

Plugins run as the installed executables in a node namespace (directly, and through the resident
helper); the log is the file an operator would read.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import EXTERNAL_NET, REPO, Node, node_env, ns_exec, request, server, sh, wait_for

pytestmark = pytest.mark.root

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
CALL_FIELDS = {"time", "level", "event", "plugin", "command", "network", "containerID", "ifname", "pid",
               "duration_ms", "outcome"}
DIRECT = {"PYCNI_HELPER": "0"}


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("lg") as n:
        yield n


def confs(node: Node, port: int = 8080, **log: str) -> tuple[dict[str, Any], dict[str, Any]]:
    bridge = {"cniVersion": "1.0.0", "name": "lgnet", "type": "bridge", "bridge": "cni0", "isGateway": True,
              "ipMasq": True, "stateDir": node.state_dir,
              "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": [[{"subnet": "10.88.0.0/24"}]],
                       "routes": [{"dst": "0.0.0.0/0"}]}, **log}
    portmap = {"cniVersion": "1.0.0", "name": "lgnet", "type": "portmap", "stateDir": node.state_dir,
               "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}, **log}
    return bridge, portmap


def read_log(path: str) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be one whole JSON object."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n"), data[-200:]
    return [json.loads(line) for line in data.decode().split("\n")[:-1]]


def calls(lines: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(line["plugin"], line["command"], line["outcome"]) for line in lines if line["event"] == "call"]


def run(node: Node, plugin: str, command: str, conf: dict[str, Any], ctr: str, env: dict[str, str] | None = None,
        **kw: Any) -> tuple[dict[str, Any] | None, int, str]:
    return node.run_plugin(plugin, command, conf, ctr, env_extra=dict(DIRECT, **(env or {})), **kw)


def attach(node: Node, ctr: str, bridge: dict[str, Any], portmap: dict[str, Any],
           env: dict[str, str] | None = None) -> dict[str, Any]:
    result, rc, err = run(node, "bridge", "ADD", bridge, ctr, env)
    assert rc == 0 and result is not None, err
    out, rc, err = run(node, "portmap", "ADD", dict(portmap, prevResult=result), ctr, env)
    assert rc == 0 and out == result, err
    return result


def detach(node: Node, ctr: str, bridge: dict[str, Any], portmap: dict[str, Any],
           env: dict[str, str] | None = None) -> None:
    for plugin, conf in (("portmap", portmap), ("bridge", bridge)):
        _, rc, err = run(node, plugin, "DEL", conf, ctr, env)
        assert rc == 0, err


def test_each_call_writes_one_line_with_its_fields(node: Node) -> None:
    log = os.path.join(node.work, "pycni.log")
    bridge, portmap = confs(node, logFile=log, logLevel="info")
    ctr = node.container("c1")
    result = attach(node, ctr, bridge, portmap)
    with server(ctr, "tcp", 80, tag="c1"):  # the calls did their work with logging on
        assert request(node.external, "tcp", f"{EXTERNAL_NET}.1", 8080) == f"c1 {EXTERNAL_NET}.2"
    out, rc, _ = run(node, "portmap", "ADD", dict(portmap, prevResult=None), ctr)  # a failing call
    assert rc == 1 and out is not None and out["code"] == 7
    detach(node, ctr, bridge, portmap)

    lines = read_log(log)
    assert calls(lines) == [("host-local", "ADD", "ok"), ("bridge", "ADD", "ok"), ("portmap", "ADD", "ok"),
                            ("portmap", "ADD", "error"), ("portmap", "DEL", "ok"), ("host-local", "DEL", "ok"),
                            ("bridge", "DEL", "ok")]
    for line in lines:
        assert line["event"] == "call" and line["level"] in ("info", "error"), line  # nothing below info
        assert CALL_FIELDS <= set(line), line
        assert RFC3339_MS_UTC.match(line["time"]), line["time"]
        assert (line["network"], line["containerID"], line["ifname"]) == ("lgnet", ctr, "eth0")
        assert isinstance(line["duration_ms"], (int, float)) and 0 <= line["duration_ms"] < 60_000
    failed = next(line for line in lines if line["outcome"] == "error")
    assert (failed["level"], failed["code"], failed["msg"]) == ("error", out["code"], out["msg"])
    assert "code" not in lines[0] and "msg" not in lines[0]
    # the in-process host-local call is inside bridge's, in the same process
    assert lines[0]["pid"] == lines[1]["pid"] and lines[0]["duration_ms"] <= lines[1]["duration_ms"]
    assert result["ips"][0]["address"].startswith("10.88.0.")


def test_a_del_that_finds_nothing_says_so(node: Node) -> None:
    log = os.path.join(node.work, "pycni.log")
    bridge, portmap = confs(node, logFile=log, logLevel="info")
    ctr = node.container("c1")
    attach(node, ctr, bridge, portmap)
    detach(node, ctr, bridge, portmap)
    os.truncate(log, 0)
    detach(node, ctr, bridge, portmap)  # again: no record, no reservation
    lines = read_log(log)
    nothing = [(line["plugin"], line["level"]) for line in lines if line["event"] == "nothing to remove"]
    assert nothing == [("portmap", "info"), ("bridge", "info"), ("host-local", "info")]
    assert calls(lines) == [("portmap", "DEL", "ok"), ("host-local", "DEL", "ok"), ("bridge", "DEL", "ok")]


def test_a_hostport_conflict_is_a_warning_in_the_log(node: Node) -> None:
    log = os.path.join(node.work, "pycni.log")
    bridge, portmap = confs(node, logFile=log, logLevel="warning")
    c1, c2 = node.container("c1"), node.container("c2")
    attach(node, c1, bridge, portmap)
    attach(node, c2, bridge, portmap)  # the same hostPort
    lines = read_log(log)
    assert [(line["event"], line["level"], line["containerID"]) for line in lines] == [
        ("hostPort conflict", "warning", c2)]  # warning level: no call lines of successful calls
    assert f"lgnet/{c1}/eth0" in lines[0]["msg"]
    detach(node, c2, bridge, portmap)
    detach(node, c1, bridge, portmap)


def test_debug_logs_the_rules_committed_and_the_links_and_addresses(node: Node) -> None:
    log = os.path.join(node.work, "pycni.log")
    bridge, portmap = confs(node, logFile=log, logLevel="debug")
    ctr = node.container("c1")
    result = attach(node, ctr, bridge, portmap)
    ip = result["ips"][0]["address"].split("/")[0]
    saved = node.save(4).splitlines()
    lines = read_log(log)
    # "rules committed" lines of chains.table carry the table and the iptables-save lines added/removed
    by_event = {(line["plugin"], line["event"]): line for line in lines
                if line["event"] != "rules committed" or "table" in line}

    links = by_event[("bridge", "links created")]
    assert links["hostVeth"] in node.links() and links["bridge"] == "cni0" and links["container_ifname"] == "eth0"
    assert by_event[("bridge", "addresses set")]["addresses"] == [result["ips"][0]["address"]]
    assert by_event[("host-local", "addresses reserved")]["addresses"] == [result["ips"][0]["address"]]
    assert by_event[("bridge", "gateway address")]["address"] == "10.88.0.1/24"

    masq = by_event[("bridge", "rules committed")]
    dnat = by_event[("portmap", "rules committed")]
    for committed in (masq, dnat):
        assert (committed["family"], committed["table"], committed["removed"]) == (4, "nat", [])
        for rule in committed["added"]:  # iptables-save lines, each in the table now
            assert rule in saved or rule.startswith(":") and any(s.startswith(rule + " ") for s in saved), rule
    assert any(r.startswith("-A POSTROUTING -s " + ip + "/32") for r in masq["added"])
    assert any(r.endswith(f"-j DNAT --to-destination {ip}:80") for r in dnat["added"])

    os.truncate(log, 0)
    detach(node, ctr, bridge, portmap)
    removed = [line for line in read_log(log) if line["event"] == "rules committed" and "table" in line]
    assert [(line["plugin"], line["added"]) for line in removed] == [("portmap", []), ("bridge", [])]
    assert set(removed[0]["removed"]) == set(dnat["added"]) and set(removed[1]["removed"]) == set(masq["added"])


def test_config_wins_over_the_environment(node: Node) -> None:
    from_config, from_env = os.path.join(node.work, "config.log"), os.path.join(node.work, "env.log")
    bridge, portmap = confs(node, logFile=from_config)
    ctr = node.container("c1")
    env = {"PYCNI_LOG_FILE": from_env, "PYCNI_LOG_LEVEL": "debug"}
    attach(node, ctr, bridge, portmap, env)
    assert not os.path.exists(from_env)
    assert any(line["event"] == "rules committed" for line in read_log(from_config))  # the level: from env
    detach(node, ctr, bridge, portmap, {"PYCNI_LOG_FILE": from_env})
    assert len(read_log(from_config)) > len(calls(read_log(from_config))) and not os.path.exists(from_env)
    # the environment alone turns logging on
    _, portmap_plain = confs(node)
    _, rc, _ = run(node, "portmap", "DEL", portmap_plain, ctr, {"PYCNI_LOG_FILE": from_env})
    assert rc == 0 and calls(read_log(from_env)) == [("portmap", "DEL", "ok")]


def test_fifty_plugins_at_once_write_whole_lines(node: Node) -> None:
    """50 bridge ADDs (and DELs) in parallel at debug level, each writing lines of hundreds of bytes."""
    log = os.path.join(node.work, "pycni.log")
    bridge, _ = confs(node, logFile=log, logLevel="debug")
    bridge["ipam"].pop("routes")  # 50 interfaces of one namespace: one default route could not serve them all
    ctr = node.container("c")
    count = 50

    def run_all(command: str) -> None:
        procs = []
        for i in range(count):
            env = dict(node.plugin_env(command, ctr, ifname=f"eth{i}", container_id=f"ctr-{i}"), **DIRECT)
            procs.append(subprocess.Popen(["ip", "netns", "exec", node.ns, os.path.join(node.bin_dir, "bridge")],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=env))
        for proc in procs:
            out, err = proc.communicate(json.dumps(bridge).encode(), timeout=300)
            assert proc.returncode == 0, (out, err)

    run_all("ADD")
    run_all("DEL")
    lines = read_log(log)  # every line parses: none was torn or interleaved
    for command in ("ADD", "DEL"):
        for plugin in ("bridge", "host-local"):
            seen = sorted(line["containerID"] for line in lines
                          if line["event"] == "call" and (line["plugin"], line["command"]) == (plugin, command))
            assert seen == sorted(f"ctr-{i}" for i in range(count)), (plugin, command)
    assert all(line["outcome"] == "ok" for line in lines if line["event"] == "call")
    committed = [line for line in lines if line["event"] == "rules committed" and "table" in line]
    assert len(committed) == 2 * count and max(len(json.dumps(line)) for line in committed) > 500


@pytest.mark.parametrize("where", ["directory", "read-only", "relative"])
def test_an_unwritable_log_never_fails_a_call(node: Node, where: str) -> None:
    bridge, portmap = confs(node)
    ctr = node.container("c1")
    prefix: list[str] = []
    if where == "directory":
        log = node.work  # opening a directory for writing fails (EISDIR)
    elif where == "relative":
        log = "pycni.log"  # relative to the runtime's directory, or to the helper's: refused
    else:
        ro = os.path.join(node.work, "ro")
        os.makedirs(ro)
        log = os.path.join(ro, "pycni.log")
        # a private mount namespace where the directory is a read-only bind of itself
        prefix = ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{ro}" "{ro}" && exec "$0"']
    env = dict(node.plugin_env("ADD", ctr), **DIRECT)
    conf = dict(bridge, logFile=log, logLevel="debug")
    proc = ns_exec(node.ns, *prefix, os.path.join(node.bin_dir, "bridge"), input=json.dumps(conf).encode(),
                   env=env, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 0, (proc.stdout, err)
    result = json.loads(proc.stdout)
    assert result["ips"][0]["address"] == "10.88.0.2/24"
    warnings = [line for line in err.splitlines() if line.startswith("pycni: warning:")]
    assert len(warnings) == 1 and log in warnings[0], err  # once, though host-local ran in the same process
    assert ("not an absolute path" if where == "relative" else "cannot write log file") in warnings[0]
    if where != "directory":
        assert not os.path.exists(log) and not os.path.exists(os.path.join("/", log))
    out, rc, err = run(node, "portmap", "ADD", dict(portmap, logFile=log, prevResult=result), ctr)
    assert rc == 0 and out == result, err
    detach(node, ctr, dict(bridge, logFile=log), dict(portmap, logFile=log))
    assert node.reservations("lgnet") == []


@pytest.fixture
def helper(node: Node) -> Iterator[tuple[str, str]]:
    """``cnictl helper`` as tests/test_helper.py starts it, logging by its own environment."""
    sock, log = os.path.join(node.work, "helper.sock"), os.path.join(node.work, "helper.log")
    env = dict(os.environ, PYCNI_LOG_FILE=log, PYCNI_LOG_LEVEL="debug")
    proc = subprocess.Popen([sys.executable, "-m", "cni.helper", "--socket", sock], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.exists(sock), timeout=20), "helper did not start"
        yield sock, log
    finally:
        proc.kill()
        proc.wait()


def shape(lines: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What must agree between two runs: which lines, in which order, with which keys."""
    return [(line["plugin"], line["command"], line["event"], line.get("outcome"), tuple(sorted(line)))
            for line in lines]


def test_the_helper_writes_the_same_lines(node: Node, helper: tuple[str, str]) -> None:
    sock, helper_log = helper
    direct_log = os.path.join(node.work, "direct.log")
    c1, c2 = node.container("c1"), node.container("c2")
    bridge, portmap = confs(node, logFile=direct_log, logLevel="debug")
    attach(node, c1, bridge, portmap)
    detach(node, c1, bridge, portmap)
    via_helper = {"PYCNI_HELPER_SOCKET": sock, "PYCNI_HELPER": "1"}
    plain_bridge, plain_portmap = confs(node)
    attach(node, c2, plain_bridge, plain_portmap, via_helper)
    detach(node, c2, plain_bridge, plain_portmap, via_helper)
    direct, helped = read_log(direct_log), read_log(helper_log)
    assert shape(direct) == shape(helped)
    assert {line["containerID"] for line in helped} == {c2}
    assert len({line["pid"] for line in helped}) == 4  # a worker per call, not the helper itself
    # a call's own logFile wins over the helper's
    own = os.path.join(node.work, "own.log")
    c3 = node.container("c3")
    own_bridge, own_portmap = confs(node, logFile=own)
    attach(node, c3, own_bridge, own_portmap, via_helper)
    assert calls(read_log(own)) == [("host-local", "ADD", "ok"), ("bridge", "ADD", "ok"), ("portmap", "ADD", "ok")]
    assert all(line["containerID"] != c3 for line in read_log(helper_log))
    # its level is still the helper's (debug): each setting comes from the first place that names it
    assert any(line["event"] == "rules committed" for line in read_log(own))
    detach(node, c3, own_bridge, own_portmap, via_helper)


def test_importing_the_logger_loads_nothing_else() -> None:
    code = ("import os, __future__; before = set(sys.modules); import cni.log; "
            "print(sorted(set(sys.modules) - before - {'cni', 'cni.log'}))")
    out = sh(sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {REPO!r}); {code}").stdout
    assert out.decode().strip() == "[]"
