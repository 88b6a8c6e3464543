"""Hostile input: property-based tests (hypothesis) of every plugin's config, runtimeConfig, prevResult,
CNI_ARGS and environment.

Every input must end in a valid result or a CNI error object with a well-known code on stdout, never a
traceback or anything else on stdout, never a hang, and never a partial change to the node: after an
input that failed the node is exactly as before; after one that succeeded, a DEL with the same input
brings it back exactly.

Every test runs once per netfilter backend (``[iptables]``, ``[nftables]``): the valid configs put
portmap's, bridge's ipMasq and the firewall's rules on that backend (hostile inputs may name the other
one, or anything else), and "the node" compared holds both legacy families and ``nft list ruleset``.
host-local writes no netfilter rule: its property runs on the iptables bench only.

The plugins run in-process through ``cni.skel.execute`` in a long-lived worker inside a throw-away node
namespace: each input is run in a fresh fork of the warm worker (so a hang can be killed, a crash is
seen, and stdout is captured at the file-descriptor level), and the worker also reads the node's
tables, links and state files after each input.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni import version as cni_versions
from tests.netenv import REPO, Node, node_env
from tests.test_resilience_common import BACKENDS, backend_options, firewall_available, report, state_diff, touch_tables

pytestmark = pytest.mark.root

FIREWALL = firewall_available()
# The spec's codes, plus 8 (the skeleton's "netns is the plugin's own", as the Go skeleton reports it).
WELL_KNOWN = {1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, 999}
CONTAINER = "ctr"  # suffix of the one container namespace every bridge input may use
FIGURES: dict[str, Counter[str]] = {}
MESSAGES: dict[str, Counter[str]] = {}  # "code: message" of every error, for the report

# --- the worker ------------------------------------------------------------------------------------

_WORKER = r"""
import base64, json, os, select, signal, subprocess, sys, tempfile, time, importlib, re
sys.path.insert(0, sys.argv[1])
STATE_DIR, DATA_DIR, CONTAINER_NS = sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["PYCNI_STATE_DIR"] = STATE_DIR
os.environ["PYCNI_HELPER"] = "0"
from cni import skel
PLUGINS = {}
for name, module in (("bridge", "bridge.plugin"), ("portmap", "portmap.plugin"),
                     ("host-local", "hostlocal.plugin"), ("firewall", "firewall.plugin")):
    try:
        PLUGINS[name] = importlib.import_module(module).PLUGIN
    except Exception:
        pass
# warm what ADD imports lazily, so that every fork starts warm
for module in ("bridge.config", "bridge.links", "bridge.ipmasq", "portmap.config", "portmap.apply", "portmap.rules",
               "portmap.claims", "portmap.host", "hostlocal.config", "cni.invoke", "cni.result", "cni.types",
               "chains.table", "chains.owned", "netlink.rtnl", "firewall.config", "firewall.rules",
               "bridge.ipmasq_iptables", "bridge.ipmasq_nft", "portmap.nft", "firewall.nft", "firewall.apply",
               "chains.nft.tx", "chains.nft.session", "chains.nft.expr", "chains.nft.conditions"):
    try:
        importlib.import_module(module)
    except Exception:
        pass

def tree(root):
    # Kept on purpose, not compared: the first level of directories (one per plugin in the state
    # directory, one per network in host-local's), host-local's lock and round-robin cursors.
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if name == "lock" or name.startswith("last_reserved_ip."):
                continue
            if os.sep not in rel and os.path.isdir(path) and not os.path.islink(path):
                continue
            if os.path.islink(path):
                out[rel] = "link " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = "%o %s" % (st.st_mode, f.read()[:200].decode(errors="replace"))
            else:
                out[rel] = "%o" % st.st_mode
    return out

def save(tool):
    text = subprocess.run([tool], capture_output=True).stdout.decode()
    return "\n".join(re.sub(r"\[\d+:\d+\]$", "[0:0]", l) for l in text.splitlines() if not l.startswith("#"))

def links(ns=None):
    cmd = ["ip", "-j"] + (["-n", ns] if ns else []) + ["link", "show"]
    return sorted(l["ifname"] for l in json.loads(subprocess.run(cmd, capture_output=True).stdout or b"[]"))

def state():
    return {"v4": save("iptables-legacy-save"), "v6": save("ip6tables-legacy-save"), "links": links(),
            "container": links(CONTAINER_NS), "state": tree(STATE_DIR), "data": tree(DATA_DIR),
            "nft": subprocess.run(["nft", "--stateless", "list", "ruleset"], capture_output=True).stdout.decode()}

def bridges():
    data = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show", "type", "bridge"],
                                     capture_output=True).stdout or b"[]")
    return sorted(l["ifname"] for l in data)

def run(req):
    r, w = os.pipe()
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(out_f.fileno(), 1)
        os.dup2(err_f.fileno(), 2)
        try:
            out, code = skel.execute(PLUGINS[req["plugin"]], req["env"], base64.b64decode(req["stdin"]))
            payload = {"out": base64.b64encode(out).decode(), "code": code}
        except BaseException as exc:
            payload = {"raised": repr(exc)[:2000]}
        data = json.dumps(payload).encode()
        while data:
            data = data[os.write(w, data):]
        os._exit(0)
    os.close(w)
    chunks, deadline, hung = [], time.monotonic() + req.get("timeout", 30), False
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            hung = True
            os.kill(pid, signal.SIGKILL)
            break
        chunk = os.read(r, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    out_f.seek(0); err_f.seek(0)
    try:
        reply = json.loads(b"".join(chunks) or b"{}")
    except ValueError:  # killed half-way through its answer
        reply = {"raised": "no complete answer: %r" % b"".join(chunks)[:200]}
    reply.update(hung=hung, status=status, extra_stdout=out_f.read().decode(errors="replace")[:2000],
                 stderr=err_f.read().decode(errors="replace")[-3000:])
    return reply

def cleanup(req):
    removed = [b for b in bridges() if b not in req["keep"]]
    for b in removed:
        subprocess.run(["ip", "link", "del", b], capture_output=True)
    return {"removed": removed}

print(json.dumps({"ready": sorted(PLUGINS)}), flush=True)
import traceback
for line in sys.stdin:
    req = json.loads(line)
    op = req.pop("op")
    try:
        reply = run(req) if op == "run" else state() if op == "state" else cleanup(req) if op == "cleanup" else {}
    except Exception:
        reply = {"worker_error": traceback.format_exc()}
    print(json.dumps(reply), flush=True)
"""


class Worker:
    """The warm plugin runner inside the node namespace."""

    def __init__(self, node: Node, container: str) -> None:
        self.node = node
        self.container = container
        self.log = os.path.join(node.work, "worker.log")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", node.ns, sys.executable, "-c", _WORKER, REPO, node.state_dir, node.data_dir,
             container], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "wb"))
        ready = self._read()
        self.plugins: list[str] = ready["ready"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            with open(self.log, "rb") as f:
                raise AssertionError(f"the worker died ({self.proc.wait()}): {f.read()[-3000:].decode(errors='replace')}")
        reply = json.loads(line)
        assert "worker_error" not in reply, reply["worker_error"]
        return reply

    def call(self, op: str, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(dict(req, op=op)).encode() + b"\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, plugin: str, env: dict[str, str], stdin: bytes, timeout: float = 30) -> dict[str, Any]:
        return self.call("run", plugin=plugin, env=env, stdin=base64.b64encode(stdin).decode(), timeout=timeout)

    def state(self) -> dict[str, Any]:
        return self.call("state")

    def remove_new_bridges(self, keep: list[str]) -> list[str]:
        return self.call("cleanup", keep=keep)["removed"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Bench:
    """The node, the worker and the baseline every input is compared against."""

    def __init__(self, node: Node, worker: Worker, container_ns: str, backend: str) -> None:
        self.node = node
        self.backend = backend
        self.worker = worker
        self.container_ns = container_ns
        self.baseline = worker.state()
        self.bridges = list(self.baseline["links"])

    def env(self, command: str = "ADD", **overrides: str) -> dict[str, str]:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "rh-ctr", "CNI_NETNS": f"/run/netns/{self.container_ns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": self.node.bin_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update(overrides)
        return env


@pytest.fixture(scope="module", params=BACKENDS)
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    with node_env("rh", external=False) as node:
        touch_tables(node)
        container = node.container(CONTAINER)
        os.makedirs(node.state_dir)
        os.makedirs(node.data_dir)
        with open(os.path.join(node.work, "resolv.conf"), "w") as f:
            f.write("nameserver 192.0.2.53\nsearch example.test\n")
        worker = Worker(node, container)
        try:
            yield Bench(node, worker, container, request.param)
        finally:
            worker.close()
    lines = []
    for plugin, counts in list(FIGURES.items()):
        FIGURES.pop(plugin)
        total = sum(v for k, v in counts.items() if k.startswith("code ") or k == "ok")
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        lines.append(f"{plugin}: {total} inputs ({outcomes})")
        messages = MESSAGES.get(plugin, Counter())
        shown = messages.most_common(4) + [(m, n) for m, n in messages.items() if m.startswith("999")]
        for msg, n in dict(shown).items():
            lines.append(f"    x{n} {msg}")
    report(request.config, f"resilience-hostile [{request.param}]", lines)
    MESSAGES.clear()


# --- checking one input ---------------------------------------------------------------------------

def _reject_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def strict_json(data: bytes) -> Any:
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON, whatever Python's json accepts."""
    return json.loads(data, parse_constant=_reject_constant)


def encode(conf: Any) -> bytes:
    return json.dumps(conf, allow_nan=True).encode()


def check_input(bench: Bench, plugin: str, env: dict[str, str], stdin: bytes, *, counts_as: str | None = None,
                validate: bool = False) -> dict[str, Any]:
    """Run one input and check every property; returns the parsed output (or {})."""
    tally = FIGURES.setdefault(counts_as or plugin, Counter())  # one bench (backend) at a time
    reply = bench.worker.run(plugin, env, stdin)
    context = f"{plugin} {env.get('CNI_COMMAND')} env={env!r} stdin={stdin[:600]!r}"
    assert not reply["hung"], f"hang: {context}"
    assert "raised" not in reply, f"execute raised {reply.get('raised')}: {context}"
    assert reply["status"] == 0, f"the run died ({reply['status']}): {context}"
    assert reply["extra_stdout"] == "", f"printed to stdout: {reply['extra_stdout']!r}: {context}"
    raw = base64.b64decode(reply["out"])
    code = reply["code"]
    assert "Traceback" not in raw.decode(errors="replace"), context
    out: Any = None
    if raw:
        try:
            out = strict_json(raw)
        except ValueError as exc:
            raise AssertionError(f"stdout is not JSON ({exc}): {raw[:400]!r}: {context}") from None
    if code == 0:
        tally["ok"] += 1
        _check_success(bench, plugin, env, stdin, out, validate, context)
    else:
        assert code == 1, context
        assert isinstance(out, dict) and isinstance(out.get("code"), int) and isinstance(out.get("msg"), str), \
            f"not an error object: {out!r}: {context}"
        assert out["code"] in WELL_KNOWN, f"unknown code {out['code']}: {context}"
        tally[f"code {out['code']}"] += 1
        MESSAGES.setdefault(counts_as or plugin, Counter())[f"{out['code']}: {out['msg'][:110]}"] += 1
        if "Traceback" in reply["stderr"]:
            tally["traceback on stderr"] += 1
    removed = bench.worker.remove_new_bridges(bench.bridges)  # bridges stay by design, like the reference's
    if removed:
        tally["bridges created"] += 1
    now = bench.worker.state()
    diff = state_diff(bench.baseline, now)
    assert not diff, f"node changed after {'DEL' if code == 0 else 'a failed call'}:\n" + "\n".join(diff) + \
        f"\n{context}\nstdout={raw[:400]!r}\nstderr={reply['stderr'][-1500:]}"
    return out if isinstance(out, dict) else {}


def _check_success(bench: Bench, plugin: str, env: dict[str, str], stdin: bytes, out: Any, validate: bool,
                   context: str) -> None:
    command = env.get("CNI_COMMAND")
    if command == "ADD":
        assert isinstance(out, dict) and isinstance(out.get("cniVersion"), str), f"not a result: {out!r}: {context}"
        if validate:
            from cni import types  # noqa: PLC0415

            types.validate_result(out, out["cniVersion"])
        undo = bench.worker.run(plugin, dict(env, CNI_COMMAND="DEL"), stdin)
        assert undo.get("code") == 0 and not undo["hung"], \
            f"DEL of a successful ADD failed: {base64.b64decode(undo.get('out', '')).decode()!r} " \
            f"{undo.get('stderr', '')[-800:]}: {context}"
    elif command in ("DEL", "GC", "STATUS", "CHECK"):
        assert out is None, f"{command} printed {out!r}: {context}"


# --- strategies ------------------------------------------------------------------------------------
#
# Each input first draws how hostile it is: ``odds`` 0 means every field is valid (so inputs reach the
# kernel), otherwise each field is replaced by something hostile with probability 1/odds.

NASTY = ['"', "'", '"; -j ACCEPT', "-j ACCEPT", "x -j ACCEPT", "a b", "a\nb", "\n-A INPUT -j ACCEPT\n", "$(id)",
         "`id`", ";", "&& reboot", "|", "..", "../..", "/", "/etc/passwd", "\\", "\t", "\r\n", "\u202e", "é",
         "日本", "🙂", "\x7f", "-", "!", "--", "CNI-HOSTPORT-DNAT", "POSTROUTING", "ACCEPT", "%s%n", "{}", "null",
         "x" * 300, "a" * 5000, "0x10", "1e5", "-1", " 80", "80 "]
TEXT = st.one_of(st.sampled_from(NASTY), st.text(max_size=24), st.text(min_size=200, max_size=700))
NUMBERS = st.one_of(st.integers(-3, 70000), st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 65535, 65536, 2 ** 31, 2 ** 63, 1e308, 0.5]))
SCALAR = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
ANYTHING = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                        max_leaves=10)
NAME = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,140}", fullmatch=True)
VERSIONS = st.one_of(st.sampled_from(cni_versions.ALL_VERSIONS), st.sampled_from(["", "9.9.9", "1.0", "v1.0.0"]), TEXT)
ENV_TEXT = TEXT.map(lambda s: s.replace("\0", "").encode("utf-8", "replace").decode("utf-8"))
ODDS = st.sampled_from([0, 0, 0, 12, 4])  # how hostile one input is (see above)


def sometimes(odds: int, valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any] = ANYTHING
              ) -> st.SearchStrategy[Any]:
    """``valid``, or with probability 1/odds (never when odds is 0) ``hostile``."""
    if odds == 0:
        return valid
    return st.integers(0, odds - 1).flatmap(lambda i: hostile if i == 0 else valid)


def optional_keys(draw: st.DrawFn, conf: dict[str, Any], optional: dict[str, st.SearchStrategy[Any]],
                  one_in: int = 3) -> None:
    for key, strategy in optional.items():
        if draw(st.integers(0, one_in - 1)) == 0:
            conf[key] = draw(strategy)


@st.composite
def cni_args(draw: st.DrawFn, odds: int) -> str:
    good = st.one_of(
        st.sampled_from(["IgnoreUnknown=1", "IgnoreUnknown=true", "K8S_POD_NAME=p", "K8S_POD_NAMESPACE=ns"]),
        st.builds(lambda ip: f"IP={ip}", st.sampled_from(["10.77.0.9", "10.77.0.9,fd00:77::9", "10.99.0.1",
                                                         "fd00:77::9/64", "x", ""])),
        st.builds(lambda mac: f"MAC={mac}", st.sampled_from(["02:00:00:00:00:09", "zz", ""])))
    pairs = draw(st.lists(sometimes(odds, good, ENV_TEXT), max_size=3))
    if draw(st.booleans()):  # without it, keys a plugin does not know are an error (as in the reference)
        pairs.insert(0, "IgnoreUnknown=1")
    return ";".join(pairs)


@st.composite
def environment(draw: st.DrawFn, bench: Bench) -> dict[str, str]:
    odds = draw(ODDS)
    command = draw(sometimes(odds, st.sampled_from(["ADD"] * 12 + ["DEL", "CHECK", "GC", "STATUS"]),
                             st.sampled_from(["VERSION", "add", "BOGUS", ""])))
    overrides = {
        "CNI_CONTAINERID": draw(sometimes(odds, st.one_of(st.just("rh-ctr"), NAME), ENV_TEXT)),
        "CNI_IFNAME": draw(sometimes(odds, st.sampled_from(["eth0", "eth0", "net1"]), ENV_TEXT)),
        "CNI_NETNS": draw(sometimes(odds, st.just(f"/run/netns/{bench.container_ns}"),
                                    st.sampled_from(["", "/nonexistent", "/proc/self/ns/net", "/etc/hostname"]))),
    }
    env = bench.env(command, **overrides)
    if draw(st.integers(0, 2)) == 0:
        env["CNI_ARGS"] = draw(cni_args(odds))
    if odds and draw(st.integers(0, odds)) == 0:
        env.pop(draw(st.sampled_from(["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])))
    return env


def version_for(odds: int, supported: list[str]) -> st.SearchStrategy[Any]:
    return sometimes(odds, st.sampled_from(supported), VERSIONS)


def network_name(odds: int) -> st.SearchStrategy[Any]:
    return sometimes(odds, st.one_of(st.just("rhnet"), st.just("rhnet"), NAME), TEXT)


def mapping(odds: int) -> st.SearchStrategy[dict[str, Any]]:
    port = sometimes(odds, st.integers(1, 65535), st.one_of(NUMBERS, TEXT))
    protocol = sometimes(odds, st.sampled_from(["tcp", "udp", "sctp", "TCP", "Udp"]),
                         st.one_of(st.sampled_from(["icmp", "", "all"]), TEXT))
    host_ip = sometimes(odds, st.sampled_from(["", "0.0.0.0", "::", "198.51.100.1", "2001:db8::1", "127.0.0.1", "::1"]),
                        TEXT)
    extra = {"extra": ANYTHING} if odds else {}
    return st.fixed_dictionaries({"hostPort": port, "containerPort": port},
                                 optional={"protocol": protocol, "hostIP": host_ip, **extra})


CONDITION_WORDS = st.sampled_from(["-s", "10.0.0.0/8", "!", "-d", "192.0.2.0/24", "-i", "eth0", "-m", "comment",
                                   "--comment", "x" * 300, "-j", "ACCEPT", "-p", "tcp", "--dport", "80", "-o", "-g",
                                   "DROP", "--set-mark", "1", "-m", "addrtype", "--src-type", "LOCAL"])
VALID_CONDITIONS = st.sampled_from([[], ["-s", "10.0.0.0/8"], ["!", "-d", "192.0.2.0/24"], ["-i", "eth0"],
                                    ["-m", "comment", "--comment", "x" * 300]])
# nftables conditions (chains.nft.conditions): per family, and the words they are made of
VALID_NFT_CONDITIONS = {
    4: st.sampled_from([[], ["ip saddr 10.0.0.0/8"], ["ip", "daddr", "!=", "192.0.2.0/24"], ['iifname "eth0"'],
                        ["meta mark 0x10"], ["ip saddr 10.0.0.0/8", "oifname != eth1"]]),
    6: st.sampled_from([[], ["ip6 saddr fd00::/8"], ["ip6 daddr != 2001:db8::/32"], ["mark 16"]])}
NFT_CONDITION_WORDS = st.sampled_from(["ip", "ip6", "saddr", "daddr", "!=", "10.0.0.0/8", "fd00::/8", "meta", "mark",
                                       "0x10", "iifname", "oifname", '"eth0"', "tcp", "dport", "80", "accept", "drop",
                                       "jump", "counter", "ip saddr 10.0.0.0/8 drop", "{", "}", ";", "@set"])


@st.composite
def prev_result(draw: st.DrawFn, odds: int, version: Any) -> Any:
    if odds and draw(st.integers(0, odds)) == 0:
        return draw(ANYTHING)
    v4 = draw(sometimes(odds, st.sampled_from(["10.77.0.5/24", "10.77.0.5/32", "0.0.0.0/0"]), TEXT))
    ips: list[Any] = [{"address": v4, "interface": draw(sometimes(odds, st.just(2), NUMBERS)),
                       "gateway": draw(sometimes(odds, st.just("10.77.0.1"), TEXT))}]
    if draw(st.booleans()):
        ips.append({"address": draw(sometimes(odds, st.just("fd00:77::5/64"), TEXT)), "interface": 2})
    interfaces = [{"name": "rhbr0"}, {"name": "veth0"}, {"name": "eth0", "sandbox": "/run/netns/x"}]
    prev: dict[str, Any] = {"cniVersion": draw(sometimes(odds, st.just(version), VERSIONS)),
                            "interfaces": draw(sometimes(odds, st.just(interfaces))),
                            "ips": draw(sometimes(odds, st.just(ips)))}
    if draw(st.booleans()):
        prev["routes"] = draw(sometimes(odds, st.just([{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}])))
    if odds and draw(st.booleans()):
        prev[draw(TEXT)] = draw(ANYTHING)
    return prev


def other_backend(backend: str) -> str:
    return BACKENDS[1 - BACKENDS.index(backend)]


def backend_key(draw: st.DrawFn, odds: int, conf: dict[str, Any], plugin: str, backend: str) -> None:
    """The key putting ``plugin`` on ``backend``: always there on nftables (without it the default is
    iptables), optional on iptables; hostile inputs name the other backend or anything else."""
    for key, value in backend_options(plugin, backend).items():
        if backend == "iptables" and draw(st.integers(0, 2)) != 0:
            continue
        conf[key] = draw(sometimes(odds, st.just(value), st.one_of(st.just(other_backend(backend)), ANYTHING)))


@st.composite
def portmap_config(draw: st.DrawFn, backend: str) -> Any:
    odds = draw(ODDS)
    version = draw(version_for(odds, ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]))
    conf: dict[str, Any] = {"cniVersion": version, "name": draw(network_name(odds)), "type": "portmap"}
    mappings = draw(sometimes(odds, st.lists(mapping(odds), max_size=12)))
    conf["runtimeConfig"] = draw(sometimes(odds, st.just({"portMappings": mappings})))
    conf["prevResult"] = draw(prev_result(odds, version))
    backend_key(draw, odds, conf, "portmap", backend)
    words = st.one_of(CONDITION_WORDS if backend == "iptables" else NFT_CONDITION_WORDS, TEXT)
    valid = {4: VALID_CONDITIONS, 6: VALID_CONDITIONS} if backend == "iptables" else VALID_NFT_CONDITIONS
    optional: dict[str, st.SearchStrategy[Any]] = {
        "snat": sometimes(odds, st.booleans()), "masqAll": sometimes(odds, st.booleans()),
        "conditionsV4": sometimes(odds, valid[4], st.lists(words, max_size=6)),
        "conditionsV6": sometimes(odds, valid[6], st.lists(words, max_size=6)),
        "stateDir": sometimes(odds, st.just(""), st.sampled_from(["relative/state", 5, None]))}
    if backend == "iptables" or odds:  # iptables-only options: on nftables refused by name (code 7)
        optional.update({
            "markMasqBit": sometimes(odds, st.integers(0, 31), NUMBERS),
            "externalSetMarkChain": sometimes(odds, st.sampled_from(["RH-MARK", "KUBE-MARK-MASQ"]), TEXT)})
    optional_keys(draw, conf, optional)
    if odds and draw(st.integers(0, odds)) == 0:
        conf[draw(TEXT)] = draw(ANYTHING)
    return conf


def subnet(odds: int) -> st.SearchStrategy[Any]:
    return sometimes(odds, st.sampled_from(["10.77.0.0/24", "10.77.0.0/16", "10.77.0.0/30", "fd00:77::/64"]),
                     st.one_of(st.sampled_from(["10.77.0.0/31", "10.77.0.5/24", "fd00:77::/127", "10.77.0.0/33",
                                                "::/0", "0.0.0.0/0"]), TEXT))


def ip_text(odds: int) -> st.SearchStrategy[Any]:
    return sometimes(odds, st.sampled_from(["10.77.0.10", "10.77.0.20", "10.77.0.250"]),
                     st.one_of(st.sampled_from(["10.78.0.1", "fd00:77::5", "::", "255.255.255.255", "10.77.0.0"]),
                               TEXT))


def a_range(odds: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"subnet": subnet(odds)}, optional={"rangeStart": ip_text(odds),
                                                                     "rangeEnd": ip_text(odds)})


def ranges(odds: int) -> st.SearchStrategy[list[list[dict[str, Any]]]]:
    """Mostly one range set (two overlapping sets are refused), sometimes an IPv4 and an IPv6 one."""
    one_set = a_range(odds).map(lambda r: [[r]])
    dual = st.tuples(a_range(odds), st.just({"subnet": "fd00:77::/64"})).map(lambda p: [[p[0]], [p[1]]])
    several = st.lists(st.lists(a_range(odds), min_size=1, max_size=2), min_size=1, max_size=2)
    return st.one_of(one_set, one_set, one_set, dual, several)


@st.composite
def ipam_section(draw: st.DrawFn, odds: int, bench: Bench) -> Any:
    if odds and draw(st.integers(0, odds)) == 0:
        hostile = draw(ANYTHING)
        if isinstance(hostile, dict):
            hostile["dataDir"] = bench.node.data_dir  # the default (/var/lib/cni/networks) is the machine's
        return hostile
    ipam: dict[str, Any] = {
        "type": "host-local",
        "dataDir": draw(sometimes(odds, st.just(bench.node.data_dir), st.sampled_from(["relative/dir", 5, "a\0b"]))),
        "ranges": draw(sometimes(odds, ranges(odds)))}
    route = st.fixed_dictionaries(
        {"dst": sometimes(odds, st.sampled_from(["0.0.0.0/0", "::/0", "192.0.2.0/24"]), TEXT)},
        optional={"gw": ip_text(odds), "priority": sometimes(odds, st.integers(0, 100), ANYTHING)})
    optional_keys(draw, ipam, {
        "routes": sometimes(odds, st.lists(route, max_size=3)),
        "resolvConf": sometimes(odds, st.just(os.path.join(bench.node.work, "resolv.conf")),
                                st.sampled_from([os.path.join(bench.node.work, "missing"), bench.node.work, 5])),
        "subnet": subnet(odds)})
    return ipam


@st.composite
def hostlocal_config(draw: st.DrawFn, bench: Bench) -> Any:
    odds = draw(ODDS)
    conf: dict[str, Any] = {"cniVersion": draw(version_for(odds, ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])),
                            "name": draw(network_name(odds)), "type": "host-local",
                            "ipam": draw(ipam_section(odds, bench))}
    ips = sometimes(odds, st.lists(ip_text(odds), max_size=2))
    optional_keys(draw, conf, {
        "args": sometimes(odds, st.builds(lambda v: {"cni": {"ips": v}}, ips)),
        "runtimeConfig": sometimes(odds, st.fixed_dictionaries({}, optional={
            "ips": ips, "ipRanges": sometimes(odds, st.lists(st.lists(a_range(odds), min_size=1, max_size=2),
                                                             max_size=2))}))}, one_in=4)
    if odds and draw(st.integers(0, odds)) == 0:
        conf["cni.dev/valid-attachments"] = draw(ANYTHING)
    return conf


@st.composite
def bridge_config(draw: st.DrawFn, bench: Bench) -> Any:
    odds = draw(ODDS)
    conf: dict[str, Any] = {"cniVersion": draw(version_for(odds, ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])),
                            "name": draw(network_name(odds)), "type": "bridge",
                            "bridge": draw(sometimes(odds, st.just("rhbr0"), TEXT)),
                            "ipam": draw(ipam_section(odds, bench))}
    mac = sometimes(odds, st.sampled_from(["02:00:00:00:00:07", "02:AB:00:00:00:08"]), TEXT)
    optional_keys(draw, conf, {
        "isGateway": sometimes(odds, st.booleans()), "isDefaultGateway": sometimes(odds, st.booleans()),
        "ipMasq": sometimes(odds, st.booleans()), "mtu": sometimes(odds, st.integers(1280, 9000), NUMBERS),
        "hairpinMode": sometimes(odds, st.booleans()), "promiscMode": sometimes(odds, st.booleans()),
        "vlan": sometimes(odds, st.integers(0, 4094), NUMBERS), "enabledad": sometimes(odds, st.booleans()),
        "dns": sometimes(odds, st.just({"nameservers": ["192.0.2.1"]})),
        "args": sometimes(odds, st.builds(lambda m: {"cni": {"mac": m}}, mac)),
        "runtimeConfig": sometimes(odds, st.builds(lambda m: {"mac": m}, mac)),
        "stateDir": sometimes(odds, st.just(""), st.sampled_from(["relative/state", 5, None]))})
    backend_key(draw, odds, conf, "bridge", bench.backend)
    return conf


@st.composite
def firewall_config(draw: st.DrawFn, backend: str) -> Any:
    odds = draw(ODDS)
    version = draw(version_for(odds, ["0.4.0", "1.0.0", "1.1.0"]))
    conf: dict[str, Any] = {"cniVersion": version, "name": draw(network_name(odds)), "type": "firewall",
                            "prevResult": draw(prev_result(odds, version))}
    if backend == "nftables" or draw(st.booleans()):
        others = st.sampled_from([other_backend(backend), "firewalld"])
        conf["backend"] = draw(sometimes(odds, st.just(backend), others))
    optional_keys(draw, conf, {
        "iptablesAdminChainName": sometimes(odds, st.sampled_from(["CNI-ADMIN", "RH-ADMIN"]), TEXT),
        "ingressPolicy": sometimes(odds, st.sampled_from(["open", "same-bridge", "isolated", ""]), TEXT),
        "stateDir": sometimes(odds, st.just(""), st.sampled_from(["relative/state", 5, None]))})
    return conf


@st.composite
def stdin_for(draw: st.DrawFn, config: st.SearchStrategy[Any]) -> bytes:
    """Mostly the JSON of a config; sometimes not JSON at all, or JSON cut short, or another shape."""
    kind = draw(st.sampled_from(["config"] * 27 + ["bytes", "cut", "anything"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "cut":
        text = encode(draw(config))
        return text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    if kind == "anything":
        return encode(draw(ANYTHING))
    return encode(draw(config))


def hostile_settings(plugin: str) -> settings:
    return settings(max_examples=EXAMPLES[plugin], deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


EXAMPLES = {"portmap": 300, "bridge": 200, "host-local": 250, "firewall": 200}


# --- the properties --------------------------------------------------------------------------------

def test_portmap_hostile_inputs(bench: Bench) -> None:
    @hostile_settings("portmap")
    @given(env=environment(bench), stdin=stdin_for(portmap_config(bench.backend)))
    def run(env: dict[str, str], stdin: bytes) -> None:
        check_input(bench, "portmap", env, stdin)

    run()
    assert sum(FIGURES["portmap"][k] for k in FIGURES["portmap"] if k == "ok") > 0  # some inputs got all the way


def test_bridge_hostile_inputs(bench: Bench) -> None:
    @hostile_settings("bridge")
    @given(env=environment(bench), stdin=stdin_for(bridge_config(bench)))
    def run(env: dict[str, str], stdin: bytes) -> None:
        check_input(bench, "bridge", env, stdin, validate=True)

    run()
    assert FIGURES["bridge"]["ok"] > 0


def test_hostlocal_hostile_inputs(bench: Bench) -> None:
    if bench.backend != "iptables":
        pytest.skip("host-local writes no netfilter rule: the iptables bench covers it")

    @hostile_settings("host-local")
    @given(env=environment(bench), stdin=stdin_for(hostlocal_config(bench)))
    def run(env: dict[str, str], stdin: bytes) -> None:
        check_input(bench, "host-local", env, stdin, validate=True)

    run()
    assert FIGURES["host-local"]["ok"] > 0


@pytest.mark.skipif(not FIREWALL, reason="no firewall plugin yet")
def test_firewall_hostile_inputs(bench: Bench) -> None:
    @hostile_settings("firewall")
    @given(env=environment(bench), stdin=stdin_for(firewall_config(bench.backend)))
    def run(env: dict[str, str], stdin: bytes) -> None:
        check_input(bench, "firewall", env, stdin)

    run()
    assert FIGURES["firewall"]["ok"] > 0


# --- targeted cases --------------------------------------------------------------------------------

METACHARACTER_NAMES = ['a"b', "a'b", "a b", "x -j ACCEPT", "x\n-A INPUT -j ACCEPT", "a;b", "a$(id)", "-j",
                       "a\tb", "a/b", "..", "日本", "a" + "\u202e"]


@pytest.mark.parametrize("plugin", ["portmap", "bridge", "host-local"] + (["firewall"] if FIREWALL else []))
def test_metacharacters_in_names_never_become_rule_fragments(bench: Bench, plugin: str) -> None:
    """Network names and container IDs with quotes, spaces, ``-j ACCEPT`` or newlines are refused, for
    every command, before anything is written (the iptables comments could otherwise carry them)."""
    conf = _valid_conf(bench, plugin)
    tried = 0
    for bad in METACHARACTER_NAMES:
        for command in ("ADD", "DEL", "CHECK"):
            out = check_input(bench, plugin, bench.env(command, CNI_CONTAINERID=bad), encode(conf),
                              counts_as="names")
            assert out.get("code") == 4, out
            out = check_input(bench, plugin, bench.env(command), encode(dict(conf, name=bad)), counts_as="names")
            assert out.get("code") == 7, out
            tried += 2
    assert tried == len(METACHARACTER_NAMES) * 6


def _valid_conf(bench: Bench, plugin: str) -> dict[str, Any]:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "rhbr0"}, {"name": "veth0"},
                                                   {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.77.0.5/24", "interface": 2, "gateway": "10.77.0.1"}]}
    ipam = {"type": "host-local", "dataDir": bench.node.data_dir, "ranges": [[{"subnet": "10.77.0.0/24"}]]}
    conf: dict[str, Any] = {
        "portmap": {"cniVersion": "1.0.0", "name": "rhnet", "type": "portmap", "prevResult": prev,
                    "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80}]}},
        "bridge": {"cniVersion": "1.0.0", "name": "rhnet", "type": "bridge", "bridge": "rhbr0", "isGateway": True,
                   "ipMasq": True, "ipam": ipam},
        "host-local": {"cniVersion": "1.0.0", "name": "rhnet", "type": "host-local", "ipam": ipam},
        "firewall": {"cniVersion": "1.0.0", "name": "rhnet", "type": "firewall", "prevResult": prev},
    }[plugin]
    return dict(conf, **backend_options(plugin, bench.backend))


def test_long_names_make_comments_over_255_bytes_that_are_cut(bench: Bench) -> None:
    """Names the spec allows, long enough that the rule comments would pass the kernel's 255 bytes."""
    network, container_id = "n" * 120, "c" * 140
    tried = 0
    for plugin in ("portmap", "bridge"):
        conf = dict(_valid_conf(bench, plugin), name=network)
        env = bench.env("ADD", CNI_CONTAINERID=container_id)
        reply = bench.worker.run(plugin, env, encode(conf))
        assert reply["code"] == 0, (base64.b64decode(reply["out"]), reply["stderr"][-1500:])
        state = bench.worker.state()
        if bench.backend == "iptables":
            comments = [c for c in _comments(state["v4"]) if "nnnn" in c]
        else:
            comments = [c for c in re.findall(r'comment "([^"]*)"', state["nft"]) if "nnnn" in c]
        if bench.backend == "nftables" and plugin == "bridge":
            # ipMasq on nftables names no container in its table: the container is its address's elements
            address = json.loads(base64.b64decode(reply["out"]))["ips"][0]["address"].split("/")[0]
            assert re.search(rf"(?<![\d.]){re.escape(address)}(?!\d)", state["nft"]), state["nft"]
        else:
            assert comments and all(len(c.encode()) <= 255 for c in comments), comments
        check_input(bench, plugin, dict(env, CNI_COMMAND="DEL"), encode(conf), counts_as="long names")
        tried += 1
    assert tried == 2


def _comments(save: str) -> list[str]:
    import shlex  # noqa: PLC0415

    out = []
    for line in save.splitlines():
        if "--comment" in line:
            words = shlex.split(line)
            out += [words[i + 1] for i, w in enumerate(words) if w == "--comment"]
    return out


@pytest.mark.parametrize("count", [3000, 4097])
def test_thousands_of_port_mappings(bench: Bench, count: int) -> None:
    """3000 mappings work and come out again whole; more than the limit (4096) is a config error."""
    conf = _valid_conf(bench, "portmap")
    conf["runtimeConfig"] = {"portMappings": [
        {"hostPort": 20000 + i, "containerPort": 80, "protocol": ("tcp", "udp")[i % 2] if i < 40 else "tcp"}
        for i in range(count)]}
    out = check_input(bench, "portmap", bench.env("ADD"), encode(conf), counts_as="many mappings")
    if count > 4096:
        assert out.get("code") == 7 and "portMappings" in out["msg"], out
    else:  # a result (an error object carries cniVersion too)
        assert "code" not in out and out.get("cniVersion") == "1.0.0" and out.get("ips"), out


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_never_reach_stdout(bench: Bench, constant: str) -> None:
    """Python's json reads NaN and Infinity; a result must never carry them back out (they are not JSON)."""
    conf = _valid_conf(bench, "portmap")
    body = encode(conf).replace(b'"interface": 2,', b'"interface": 2, "weight": ' + constant.encode() + b",")
    assert constant.encode() in body
    check_input(bench, "portmap", bench.env("ADD"), body, counts_as="non-JSON numbers")


def test_deeply_nested_json_is_a_decode_error(bench: Bench) -> None:
    body = b'{"cniVersion": "1.0.0", "name": "rhnet", "type": "portmap", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out = check_input(bench, "portmap", bench.env("ADD"), body, counts_as="nesting")
    assert out.get("code") == 6, out


@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_the_plugins_own_netns_as_container_netns_touches_nothing(bench: Bench, command: str) -> None:
    """A runtime bug names the node's own namespace as the container's, and a node interface as ifname:
    ADD and DEL must refuse (code 8, as the Go skeleton does), not configure or delete the node's link."""
    bench.node.exec("ip", "link", "add", "rhdummy0", "type", "veth", "peer", "name", "rhdummy1")
    try:
        before = bench.worker.state()
        for plugin in ["bridge", "portmap", "host-local"] + (["firewall"] if FIREWALL else []):
            env = bench.env(command, CNI_NETNS="/proc/self/ns/net", CNI_IFNAME="rhdummy0")
            reply = bench.worker.run(plugin, env, encode(_valid_conf(bench, plugin)))
            out = strict_json(base64.b64decode(reply["out"]))
            assert reply["code"] == 1 and out["code"] == 8, (plugin, out, reply["stderr"][-800:])
            bench.worker.remove_new_bridges(bench.bridges)
            assert state_diff(before, bench.worker.state()) == [], plugin
    finally:
        bench.node.exec("ip", "link", "del", "rhdummy0", check=False)


OTHER_FAMILY_CONDITIONS = {
    "iptables": {"conditionsV6": ["-s", "10.0.0.0/8"], "conditionsV4": ["-d", "fd00::/8"]},
    "nftables": {"conditionsV6": ["ip saddr 10.0.0.0/8"], "conditionsV4": ["ip6 daddr fd00::/8"]}}


@pytest.mark.parametrize("key", ["conditionsV6", "conditionsV4"])
def test_conditions_of_the_other_family_are_a_config_error(bench: Bench, key: str) -> None:
    """Refused before anything is written (they used to fail in the second family's commit, as code 999)."""
    conf = _valid_conf(bench, "portmap")
    conf["prevResult"]["ips"].append({"address": "fd00:77::5/64", "interface": 2})
    conf[key] = OTHER_FAMILY_CONDITIONS[bench.backend][key]
    out = check_input(bench, "portmap", bench.env("ADD"), encode(conf), counts_as="conditions")
    assert out.get("code") == 7 and key in out["msg"], out
