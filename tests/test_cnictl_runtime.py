"""cnictl.runtime and the cnictl CLI against fake plugin executables (no kernel needed).

Each fake plugin is a small Python script in a temporary CNI_PATH that logs its command, CNI_*
environment and stdin config as one JSON line, then answers like a chained plugin: on ADD it
passes prevResult on (or starts a result) with one interface named after itself appended; a
``fakeFail`` key in its config makes it print that error object for the named command.
"""
from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnictl import cache, cli, config
from cnictl.errors import CnictlError, GCError, PluginError
from cnictl.runtime import Attachment, Runtime, build_request, runtime_config

FAKE_PLUGIN = """#!{python} -IS
import json, os, sys
name = os.path.basename(sys.argv[0])
command = os.environ.get("CNI_COMMAND", "")
raw = sys.stdin.read()
conf = json.loads(raw) if raw else {{}}
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(os.environ["CTL_FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"plugin": name, "command": command, "env": env, "stdin": conf}}) + "\\n")
failure = (conf.get("fakeFail") or {{}}).get(command)
if failure:
    print(json.dumps(failure))
    sys.exit(1)
if command == "ADD":
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"],
                                         "ips": [{{"address": "10.99.0.5/24", "gateway": "10.99.0.1"}}]}}
    result["interfaces"] = result.get("interfaces", []) + [{{"name": name}}]
    print(json.dumps(result))
"""

ADD_RESULT_KEYS = ["kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs",
                   "capabilityArgs", "result"]


class Fakes:
    """A CNI_PATH of fake plugins and the log they write."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        self.cache_dir = root / "cache"

    def plugin(self, name: str, script: str | None = None) -> Path:
        path = self.bin / name
        path.write_text(script if script is not None else FAKE_PLUGIN.format(python=sys.executable))
        path.chmod(0o755)
        return path

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def order(self) -> list[tuple[str, str]]:
        return [(c["command"], c["plugin"]) for c in self.calls()]

    def runtime(self, notes: list[str] | None = None) -> Runtime:
        sink = notes.append if notes is not None else (lambda _msg: None)
        return Runtime([str(self.bin)], str(self.cache_dir), notify=sink)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    f = Fakes(tmp_path)
    monkeypatch.setenv("CTL_FAKE_LOG", str(f.log))
    for name in ("ctl-first", "ctl-second", "ctl-third"):
        f.plugin(name)
    yield f


def network(version: str = "1.0.0", plugins: list[dict[str, Any]] | None = None, **extra: Any) -> config.NetworkList:
    data = {"cniVersion": version, "name": "ctl-net", **extra,
            "plugins": plugins if plugins is not None else [
                {"type": "ctl-first", "bridge": "ctl0"},
                {"type": "ctl-second", "capabilities": {"portMappings": True, "bandwidth": False}},
                {"type": "ctl-third", "capabilities": {"ips": True, "mac": True}},
            ]}
    return config.parse_list(json.dumps(data, indent=2).encode(), "ctl-test")


ATTACHMENT = Attachment("ctl-ctr1", "/run/netns/ctl-ns1", "eth0", [("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")],
                        {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                         "bandwidth": {"rate": 1}, "ips": ["10.99.0.9/24"]})


# --- request building ---------------------------------------------------------------------------

def test_runtime_config_has_only_declared_and_supplied_capabilities() -> None:
    plugin = {"type": "x", "capabilities": {"portMappings": True, "bandwidth": False, "mac": True}}
    supplied = {"portMappings": [1], "bandwidth": {"rate": 1}, "ips": ["10.0.0.1/24"]}
    assert runtime_config(plugin, supplied) == {"portMappings": [1]}
    assert runtime_config({"type": "x"}, supplied) == {}


def test_build_request_injects_name_version_prev_result_and_runtime_config() -> None:
    net = network(plugins=[{"type": "ctl-first", "name": "stale", "cniVersion": "0.1.0",
                            "runtimeConfig": {"keep": 1}},
                           {"type": "ctl-second", "capabilities": {"portMappings": True}}])
    caps = {"portMappings": [{"hostPort": 1, "containerPort": 2}], "other": 3}
    first = build_request(net, 0, None, caps)
    assert first == {"type": "ctl-first", "name": "ctl-net", "cniVersion": "1.0.0", "runtimeConfig": {"keep": 1}}
    second = build_request(net, 1, {"cniVersion": "1.0.0"}, caps)
    assert second == {"type": "ctl-second", "capabilities": {"portMappings": True}, "name": "ctl-net",
                      "cniVersion": "1.0.0", "prevResult": {"cniVersion": "1.0.0"},
                      "runtimeConfig": {"portMappings": caps["portMappings"]}}
    assert "runtimeConfig" not in build_request(net, 1, None, {"other": 3})
    assert net.plugins[0]["name"] == "stale"  # the list itself is never modified


# --- ADD ----------------------------------------------------------------------------------------

def test_add_runs_plugins_in_order_chaining_prev_result(fakes: Fakes) -> None:
    net = network()
    result = fakes.runtime().add(net, ATTACHMENT)
    assert [i["name"] for i in result["interfaces"]] == ["ctl-first", "ctl-second", "ctl-third"]
    calls = fakes.calls()
    assert fakes.order() == [("ADD", "ctl-first"), ("ADD", "ctl-second"), ("ADD", "ctl-third")]
    assert "prevResult" not in calls[0]["stdin"]
    assert [i["name"] for i in calls[1]["stdin"]["prevResult"]["interfaces"]] == ["ctl-first"]
    assert [i["name"] for i in calls[2]["stdin"]["prevResult"]["interfaces"]] == ["ctl-first", "ctl-second"]
    assert "runtimeConfig" not in calls[0]["stdin"]
    assert calls[1]["stdin"]["runtimeConfig"] == {"portMappings": ATTACHMENT.capability_args["portMappings"]}
    assert calls[2]["stdin"]["runtimeConfig"] == {"ips": ["10.99.0.9/24"]}
    assert all(c["stdin"]["name"] == "ctl-net" and c["stdin"]["cniVersion"] == "1.0.0" for c in calls)


def test_add_sets_the_cni_environment(fakes: Fakes) -> None:
    fakes.runtime().add(network(), ATTACHMENT)
    env = fakes.calls()[0]["env"]
    assert env["CNI_COMMAND"] == "ADD"
    assert env["CNI_CONTAINERID"] == "ctl-ctr1"
    assert env["CNI_NETNS"] == "/run/netns/ctl-ns1"
    assert env["CNI_IFNAME"] == "eth0"
    assert env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"
    assert env["CNI_PATH"] == str(fakes.bin)


def test_add_writes_the_libcni_cache_entry(fakes: Fakes) -> None:
    net = network()
    result = fakes.runtime().add(net, ATTACHMENT)
    path = fakes.cache_dir / "results" / "ctl-net-ctl-ctr1-eth0"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = path.read_bytes()
    assert b": " not in raw and b", " not in raw  # compact, like Go's json.Marshal
    data = json.loads(raw)
    assert list(data) == ADD_RESULT_KEYS
    assert data["kind"] == "cniCacheV1"
    assert data["containerId"] == "ctl-ctr1"
    assert base64.b64decode(data["config"]) == net.raw
    assert data["ifName"] == "eth0"
    assert data["networkName"] == "ctl-net"
    assert data["netns"] == "/run/netns/ctl-ns1"
    assert data["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]]
    assert data["capabilityArgs"] == ATTACHMENT.capability_args
    assert data["result"] == result
    assert [n for n in os.listdir(path.parent)] == ["ctl-net-ctl-ctr1-eth0"]  # no temporary left behind


def test_cache_entry_omits_empty_fields_like_go(fakes: Fakes) -> None:
    fakes.runtime().add(network(), Attachment("ctl-ctr2", "", "eth1"))
    data = json.loads((fakes.cache_dir / "results" / "ctl-net-ctl-ctr2-eth1").read_bytes())
    assert list(data) == ["kind", "containerId", "config", "ifName", "networkName", "result"]


def test_add_stops_at_the_first_failing_plugin_and_caches_nothing(fakes: Fakes) -> None:
    error = {"cniVersion": "1.0.0", "code": 7, "msg": "bad bridge", "details": "bridge ctl0 is a veth"}
    net = network(plugins=[{"type": "ctl-first"}, {"type": "ctl-second", "fakeFail": {"ADD": error}},
                           {"type": "ctl-third"}])
    with pytest.raises(PluginError) as err:
        fakes.runtime().add(net, ATTACHMENT)
    assert (err.value.code, err.value.msg, err.value.details) == (7, "bad bridge", "bridge ctl0 is a veth")
    where = (err.value.plugin_type, err.value.position, err.value.count, err.value.command)
    assert where == ("ctl-second", 2, 3, "ADD")
    text = str(err.value)
    assert 'ADD failed in plugin "ctl-second" (2 of 3 in network "ctl-net")' in text
    assert "code:    7 (invalid network config)" in text
    assert "msg:     bad bridge" in text and "details: bridge ctl0 is a veth" in text
    assert fakes.order() == [("ADD", "ctl-first"), ("ADD", "ctl-second")]
    assert not (fakes.cache_dir / "results" / "ctl-net-ctl-ctr1-eth0").exists()


def test_plugin_failing_without_an_error_object(fakes: Fakes) -> None:
    fakes.plugin("ctl-crash", "#!/bin/sh\necho 'Traceback: boom'\nexit 3\n")
    with pytest.raises(PluginError) as err:
        fakes.runtime().add(network(plugins=[{"type": "ctl-crash"}]), ATTACHMENT)
    assert err.value.code is None
    assert err.value.msg == "exited with status 3 without printing an error object"
    assert err.value.details == "Traceback: boom"


def test_plugin_printing_garbage_on_add(fakes: Fakes) -> None:
    fakes.plugin("ctl-garbage", "#!/bin/sh\ncat >/dev/null\necho '[1]'\n")
    with pytest.raises(PluginError, match="printed a result that is not a JSON object"):
        fakes.runtime().add(network(plugins=[{"type": "ctl-garbage"}]), ATTACHMENT)
    fakes.plugin("ctl-silent", "#!/bin/sh\ncat >/dev/null\n")
    with pytest.raises(PluginError, match="succeeded but printed no result"):
        fakes.runtime().add(network(plugins=[{"type": "ctl-silent"}]), ATTACHMENT)


def test_result_without_version_gets_the_list_version(fakes: Fakes) -> None:
    fakes.plugin("ctl-bare", '#!/bin/sh\ncat >/dev/null\necho \'{"ips": [{"address": "10.99.0.7/24"}]}\'\n')
    result = fakes.runtime().add(network(version="1.1.0", plugins=[{"type": "ctl-bare"}]), ATTACHMENT)
    assert result["cniVersion"] == "1.1.0"


def test_missing_plugin_is_reported_with_the_search_path(fakes: Fakes) -> None:
    with pytest.raises(PluginError, match=f"executable not found in CNI_PATH {fakes.bin}"):
        fakes.runtime().add(network(plugins=[{"type": "ctl-absent"}]), ATTACHMENT)


@pytest.mark.parametrize(("attachment", "message"), [
    (Attachment("bad id", "/x", "eth0"), 'invalid container ID "bad id"'),
    (Attachment("ctl-ctr1", "/x", "a-very-long-interface-name"), "interface name is too long"),
    (Attachment("ctl-ctr1", "/x", "eth/0"), "contains / or :"),
])
def test_invalid_attachment_is_refused_before_anything_runs(fakes: Fakes, attachment: Attachment,
                                                            message: str) -> None:
    with pytest.raises(CnictlError, match=message):
        fakes.runtime().add(network(), attachment)
    assert fakes.calls() == []


# --- DEL ----------------------------------------------------------------------------------------

def test_del_runs_in_reverse_with_the_cached_result_and_removes_the_cache(fakes: Fakes) -> None:
    rt = fakes.runtime()
    net = network()
    result = rt.add(net, ATTACHMENT)
    fakes.log.unlink()
    rt.delete(net, ATTACHMENT)
    assert fakes.order() == [("DEL", "ctl-third"), ("DEL", "ctl-second"), ("DEL", "ctl-first")]
    assert all(c["stdin"]["prevResult"] == result for c in fakes.calls())
    assert not (fakes.cache_dir / "results" / "ctl-net-ctl-ctr1-eth0").exists()


def test_del_reuses_cached_args_and_capabilities_when_none_are_given(fakes: Fakes) -> None:
    rt = fakes.runtime()
    net = network()
    rt.add(net, ATTACHMENT)
    fakes.log.unlink()
    rt.delete(net, Attachment("ctl-ctr1", "/run/netns/ctl-ns1", "eth0"))
    by_plugin = {c["plugin"]: c for c in fakes.calls()}
    assert by_plugin["ctl-first"]["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"
    mappings = ATTACHMENT.capability_args["portMappings"]
    assert by_plugin["ctl-second"]["stdin"]["runtimeConfig"] == {"portMappings": mappings}


def test_del_prefers_args_the_caller_gives(fakes: Fakes) -> None:
    rt = fakes.runtime()
    net = network()
    rt.add(net, ATTACHMENT)
    fakes.log.unlink()
    rt.delete(net, Attachment("ctl-ctr1", "/run/netns/ctl-ns1", "eth0", [("K8S_POD_NAME", "q")], {}))
    by_plugin = {c["plugin"]: c for c in fakes.calls()}
    assert by_plugin["ctl-first"]["env"]["CNI_ARGS"] == "K8S_POD_NAME=q"
    assert "runtimeConfig" not in by_plugin["ctl-second"]["stdin"]


def test_del_without_cache_sends_no_prev_result(fakes: Fakes) -> None:
    fakes.runtime().delete(network(), ATTACHMENT)
    assert len(fakes.calls()) == 3
    assert all("prevResult" not in c["stdin"] for c in fakes.calls())


def test_del_with_corrupt_cache_warns_and_continues_without_prev_result(fakes: Fakes) -> None:
    results = fakes.cache_dir / "results"
    results.mkdir(parents=True)
    (results / "ctl-net-ctl-ctr1-eth0").write_text("{truncated")
    notes: list[str] = []
    fakes.runtime(notes).delete(network(), ATTACHMENT)
    assert len(fakes.calls()) == 3
    assert all("prevResult" not in c["stdin"] for c in fakes.calls())
    assert len(notes) == 1 and "is not valid JSON" in notes[0] and "continues without prevResult" in notes[0]
    assert not (results / "ctl-net-ctl-ctr1-eth0").exists()


def test_corrupt_cache_is_removed_even_when_del_then_fails(fakes: Fakes) -> None:
    results = fakes.cache_dir / "results"
    results.mkdir(parents=True)
    (results / "ctl-net-ctl-ctr1-eth0").write_text('{"kind": "somethingElse"}')
    net = network(plugins=[{"type": "ctl-first", "fakeFail": {"DEL": {"code": 5, "msg": "io"}}}])
    notes: list[str] = []
    with pytest.raises(PluginError):
        fakes.runtime(notes).delete(net, ATTACHMENT)
    assert "has kind 'somethingElse', expected 'cniCacheV1'" in notes[0]
    assert not (results / "ctl-net-ctl-ctr1-eth0").exists()


def test_del_converts_the_cached_result_to_the_list_version(fakes: Fakes) -> None:
    rt = fakes.runtime()
    rt.add(network("1.0.0"), ATTACHMENT)
    fakes.log.unlink()
    rt.delete(network("0.4.0"), ATTACHMENT)  # the config was changed while the container ran
    prev = fakes.calls()[0]["stdin"]["prevResult"]
    assert prev["cniVersion"] == "0.4.0"
    assert prev["ips"] == [{"version": "4", "address": "10.99.0.5/24", "gateway": "10.99.0.1"}]


def test_del_below_0_4_0_sends_no_prev_result_but_still_removes_the_cache(fakes: Fakes) -> None:
    rt = fakes.runtime()
    rt.add(network("1.0.0"), ATTACHMENT)
    fakes.log.unlink()
    rt.delete(network("0.3.1"), ATTACHMENT)
    assert all("prevResult" not in c["stdin"] for c in fakes.calls())
    assert not (fakes.cache_dir / "results" / "ctl-net-ctl-ctr1-eth0").exists()


def test_legacy_cache_file_with_a_bare_result_is_used(fakes: Fakes) -> None:
    results = fakes.cache_dir / "results"
    results.mkdir(parents=True)
    bare = {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.8/24"}]}
    (results / "ctl-net-ctl-ctr1-eth0").write_text(json.dumps(bare))
    fakes.runtime().delete(network(), ATTACHMENT)
    assert fakes.calls()[0]["stdin"]["prevResult"] == bare


def test_failed_del_keeps_the_cache(fakes: Fakes) -> None:
    rt = fakes.runtime()
    net = network(plugins=[{"type": "ctl-first", "fakeFail": {"DEL": {"code": 11, "msg": "busy"}}}])
    rt.add(net, ATTACHMENT)
    with pytest.raises(PluginError, match="try again later"):
        rt.delete(net, ATTACHMENT)
    assert (fakes.cache_dir / "results" / "ctl-net-ctl-ctr1-eth0").exists()


# --- CHECK --------------------------------------------------------------------------------------

def test_check_runs_in_order_with_the_cached_result(fakes: Fakes) -> None:
    rt = fakes.runtime()
    net = network()
    result = rt.add(net, ATTACHMENT)
    fakes.log.unlink()
    assert rt.check(net, Attachment("ctl-ctr1", "/run/netns/ctl-ns1", "eth0")) is True
    assert fakes.order() == [("CHECK", "ctl-first"), ("CHECK", "ctl-second"), ("CHECK", "ctl-third")]
    assert all(c["stdin"]["prevResult"] == result for c in fakes.calls())
    assert fakes.calls()[0]["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"  # from the cache


def test_check_is_skipped_when_disabled(fakes: Fakes) -> None:
    rt = fakes.runtime()
    rt.add(network(), ATTACHMENT)
    fakes.log.unlink()
    assert rt.check(network(disableCheck="true"), ATTACHMENT) is False
    assert fakes.calls() == []


def test_check_needs_0_4_0_and_a_prior_add(fakes: Fakes) -> None:
    with pytest.raises(CnictlError, match='configuration version "0.3.1" does not support the CHECK command'):
        fakes.runtime().check(network("0.3.1"), ATTACHMENT)
    with pytest.raises(CnictlError, match="no cached ADD result .* CHECK needs a completed ADD"):
        fakes.runtime().check(network(), ATTACHMENT)
    assert fakes.calls() == []


# --- GC and STATUS ------------------------------------------------------------------------------

def _cache_entry(fakes: Fakes, network_name: str, container_id: str, ifname: str) -> None:
    cache.write(str(fakes.cache_dir), cache.CacheEntry(
        network_name, container_id, ifname, b"{}", f"/run/netns/{container_id}", [("K", container_id)],
        {"portMappings": [{"hostPort": 1, "containerPort": 1}]}, {"cniVersion": "1.1.0"}))


def test_gc_deletes_stale_attachments_then_sends_gc_with_the_valid_ones(fakes: Fakes) -> None:
    for container_id in ("ctl-keep", "ctl-stale"):
        _cache_entry(fakes, "ctl-net", container_id, "eth0")
    _cache_entry(fakes, "ctl-othernet", "ctl-stale", "eth0")
    notes: list[str] = []
    assert fakes.runtime(notes).gc(network("1.1.0"), [("ctl-keep", "eth0")]) is True
    calls = fakes.calls()
    assert [(c["command"], c["plugin"]) for c in calls] == [
        ("DEL", "ctl-third"), ("DEL", "ctl-second"), ("DEL", "ctl-first"),
        ("GC", "ctl-first"), ("GC", "ctl-second"), ("GC", "ctl-third")]
    stale_del = calls[0]
    assert stale_del["env"]["CNI_CONTAINERID"] == "ctl-stale"
    assert stale_del["env"]["CNI_NETNS"] == "/run/netns/ctl-stale"
    assert stale_del["env"]["CNI_ARGS"] == "K=ctl-stale"
    assert calls[1]["stdin"]["runtimeConfig"] == {"portMappings": [{"hostPort": 1, "containerPort": 1}]}
    gc_call = calls[3]
    assert gc_call["stdin"]["cni.dev/valid-attachments"] == [{"containerID": "ctl-keep", "ifname": "eth0"}]
    assert gc_call["env"]["CNI_CONTAINERID"] == "" and gc_call["env"]["CNI_IFNAME"] == ""
    assert "prevResult" not in gc_call["stdin"]
    remaining = sorted(os.listdir(fakes.cache_dir / "results"))
    assert remaining == ["ctl-net-ctl-keep-eth0", "ctl-othernet-ctl-stale-eth0"]
    assert notes == ["GC: deleting stale attachment container ctl-stale interface eth0"]


def test_gc_below_1_1_0_only_deletes_stale_attachments(fakes: Fakes) -> None:
    _cache_entry(fakes, "ctl-net", "ctl-stale", "eth0")
    fakes.runtime().gc(network("1.0.0"))
    assert [c["command"] for c in fakes.calls()] == ["DEL", "DEL", "DEL"]


def test_gc_does_nothing_when_disabled(fakes: Fakes) -> None:
    _cache_entry(fakes, "ctl-net", "ctl-stale", "eth0")
    assert fakes.runtime().gc(network("1.1.0", disableGC=True)) is False
    assert fakes.calls() == []


def test_gc_collects_errors_and_keeps_going(fakes: Fakes) -> None:
    net = network("1.1.0", plugins=[{"type": "ctl-first", "fakeFail": {"GC": {"code": 5, "msg": "disk"}}},
                                    {"type": "ctl-second", "fakeFail": {"GC": {"code": 999, "msg": "bug"}}},
                                    {"type": "ctl-third"}])
    with pytest.raises(GCError) as err:
        fakes.runtime().gc(net)
    assert len(err.value.failures) == 2
    assert "msg:     disk" in err.value.failures[0] and "msg:     bug" in err.value.failures[1]
    assert fakes.order() == [("GC", "ctl-first"), ("GC", "ctl-second"), ("GC", "ctl-third")]


def test_status_asks_every_plugin_and_stops_at_the_first_not_ready(fakes: Fakes) -> None:
    rt = fakes.runtime()
    assert rt.status(network("1.1.0")) is True
    assert fakes.order() == [("STATUS", "ctl-first"), ("STATUS", "ctl-second"), ("STATUS", "ctl-third")]
    fakes.log.unlink()
    net = network("1.1.0", plugins=[{"type": "ctl-first", "fakeFail": {"STATUS": {"code": 50, "msg": "no IPs"}}},
                                    {"type": "ctl-second"}])
    with pytest.raises(PluginError, match=r"code:    50 \(plugin not available\)"):
        rt.status(net)
    assert fakes.order() == [("STATUS", "ctl-first")]
    fakes.log.unlink()
    assert rt.status(network("1.0.0")) is False
    assert fakes.calls() == []


# --- the CLI end to end -------------------------------------------------------------------------

@pytest.fixture
def cli_env(fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NETCONFPATH with ctl-net, CNI_PATH with the fakes, a cache dir; returns a file posing as a netns."""
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-ctl.conflist").write_text(json.dumps({
        "cniVersion": "1.1.0", "name": "ctl-net",
        "plugins": [{"type": "ctl-first"}, {"type": "ctl-second", "capabilities": {"portMappings": True}}]}))
    for var in ("CAP_ARGS", "CNI_ARGS", "CNI_IFNAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETCONFPATH", str(conf_dir))
    monkeypatch.setenv("CNI_PATH", str(fakes.bin))
    monkeypatch.setenv("CNI_CACHE_DIR", str(fakes.cache_dir))
    netns = tmp_path / "ctl-netns"
    netns.touch()
    return netns


def test_cli_add_prints_the_result_and_del_cleans_up(fakes: Fakes, cli_env: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["add", "ctl-net", str(cli_env), "--publish", "8080:80/udp@127.0.0.1",
                     "--args", "IgnoreUnknown=1"]) == 0
    out = capsys.readouterr().out
    assert [i["name"] for i in json.loads(out)["interfaces"]] == ["ctl-first", "ctl-second"]
    assert out.startswith('{\n    "')  # indented like the Go result printer
    container_id = cli.derive_container_id(str(cli_env))
    add = fakes.calls()[1]
    assert add["env"]["CNI_CONTAINERID"] == container_id
    assert add["env"]["CNI_NETNS"] == str(cli_env)
    assert add["env"]["CNI_ARGS"] == "IgnoreUnknown=1"
    assert add["stdin"]["runtimeConfig"] == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "127.0.0.1"}]}
    cached = fakes.cache_dir / "results" / f"ctl-net-{container_id}-eth0"
    assert cached.exists()

    fakes.log.unlink()
    assert cli.main(["check", "ctl-net", str(cli_env)]) == 0
    assert cli.main(["del", "ctl-net", str(cli_env)]) == 0
    assert fakes.order() == [("CHECK", "ctl-first"), ("CHECK", "ctl-second"),
                             ("DEL", "ctl-second"), ("DEL", "ctl-first")]
    assert fakes.calls()[-1]["env"]["CNI_ARGS"] == "IgnoreUnknown=1"  # reused from the cache
    assert not cached.exists()


def test_cli_reports_plugin_errors_on_stderr_and_exits_1(fakes: Fakes, cli_env: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    error = {"code": 4, "msg": "missing CNI_NETNS", "details": "details here"}
    (tmp_path / "net.d" / "20-bad.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "ctl-bad", "plugins": [{"type": "ctl-first", "fakeFail": {"ADD": error}}]}))
    assert cli.main(["add", "ctl-bad", str(cli_env)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith('cnictl: ADD failed in plugin "ctl-first" (1 of 1 in network "ctl-bad")\n')
    assert "code:    4 (invalid environment variables)" in captured.err
    assert "msg:     missing CNI_NETNS" in captured.err
    assert "details: details here" in captured.err
    assert f"`cnictl del ctl-bad {cli_env}`" in captured.err


def test_cli_refuses_a_missing_netns_by_name(fakes: Fakes, cli_env: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["add", "ctl-net", "ctl-no-such-ns"]) == 1
    err = capsys.readouterr().err
    assert "network namespace /run/netns/ctl-no-such-ns does not exist (create it with: ip netns add" in err
    assert fakes.calls() == []


def test_cli_capabilities_from_cap_args_env_and_cap_flags(fakes: Fakes, cli_env: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAP_ARGS", json.dumps({"portMappings": [{"hostPort": 1, "containerPort": 2}], "x": 1}))
    assert cli.main(["add", "ctl-net", str(cli_env), "--ifname", "net1", "--container-id", "ctl-explicit",
                     "--cap", 'x={"y": 2}']) == 0
    add = fakes.calls()[1]
    assert add["stdin"]["runtimeConfig"] == {"portMappings": [{"hostPort": 1, "containerPort": 2}]}
    assert add["env"]["CNI_IFNAME"] == "net1" and add["env"]["CNI_CONTAINERID"] == "ctl-explicit"
    cached = json.loads((fakes.cache_dir / "results" / "ctl-net-ctl-explicit-net1").read_text())
    assert cached["capabilityArgs"] == {"portMappings": [{"hostPort": 1, "containerPort": 2}], "x": {"y": 2}}


def test_cli_gc_and_status(fakes: Fakes, cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _cache_entry(fakes, "ctl-net", "ctl-a", "eth0")
    _cache_entry(fakes, "ctl-net", "ctl-b", "eth0")
    assert cli.main(["gc", "ctl-net", "--valid", "ctl-a/eth0"]) == 0
    assert sorted(os.listdir(fakes.cache_dir / "results")) == ["ctl-net-ctl-a-eth0"]
    gc_calls = [c for c in fakes.calls() if c["command"] == "GC"]
    assert gc_calls[0]["stdin"]["cni.dev/valid-attachments"] == [{"containerID": "ctl-a", "ifname": "eth0"}]
    assert cli.main(["status", "ctl-net"]) == 0
    assert capsys.readouterr().out == "ctl-net: ready\n"
