"""Side-by-side benchmark: our plugins against the reference, on equally loaded nodes, in one run.

    sudo benchmarks/run.sh --containers 100 --cycles 20 [--helper] [--ours-only] [--json out.json]
    sudo benchmarks/run.sh --sizes 0,100,1000 --cycles 20          # and write the README table
    sudo benchmarks/run.sh --sides ours-iptables,ours-nftables,ref-1.1.1,ref-1.7.1-nft --sizes 0,100 --helper

A run has one or more *sides* (``--sides``, see ``SIDE_KINDS``): one implementation of the chain on
one netfilter backend, each in a node namespace of its own (``bch-<side>-node``) holding its own
copy of the same network (bridge ``cni0`` + host-local + portmap with one tcp hostPort per
container). Each node is preloaded with M containers (untimed), then N cycles of ADD / CHECK / DEL /
DEL-again run for a fresh container on each side, the order of the sides rotated every cycle so that
drift on the machine hits all of them alike. Plugins are exec'd the way libcni does it (ADD in chain
order with the previous plugin's result as prevResult, CHECK and DEL with the final result, DEL in
reverse order) by a small exec server living inside the node namespace (``spawner.py``), which
times each exec and reads its peak RSS from wait4. The report gives per-operation and per-plugin
medians, for each of our sides the median of the per-cycle ratios against its reference anchor
(``RATIO_PAIRS`` in benchreport.py), the growth from an empty node when size 0 is in the run, peak
RSS and VERSION wall times. Everything lives in namespaces and temp dirs created here and is removed
again, also on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import benchreport  # a sibling module: the script's own directory is on sys.path

from netlink import netns

PREFIX = "bch"
REFERENCE_BIN = "/usr/lib/cni"  # Debian's reference 1.1.1 (iptables only)
REFERENCE_V171_BIN = "/tmp/ref-v1.7.1/bin"  # upstream v1.7.1, /work/shared/tools/build-reference-v1.7.1.sh
OPS = ("ADD", "CHECK", "DEL", "DEL-again")
CHAIN_TYPES = ("bridge", "portmap")
NETWORK = "bchnet"
CNI_VERSION = "1.0.0"  # the newest the Debian 1.1.1 reference speaks (v1.7.1 speaks it too)
SUBNET = "10.200.0.0/16"
# A Linux bridge takes at most 1,024 ports (BR_MAX_PORTS): beyond this many preloaded containers
# the rest go to further networks of their own (bridge cni<k>, 10.<200+k>.0.0/16), which share the
# node's tables with the timed network, the thing being measured.
CONTAINERS_PER_BRIDGE = int(os.environ.get("PYCNI_BENCH_CONTAINERS_PER_BRIDGE", "1000"))  # lower: to try it small
PRELOAD_PORT_BASE = 10000  # hostPorts: preloaded container i gets 10000+i, cycle i 40000+i
CYCLE_PORT_BASE = 40000
VERSION_RUNS = 20
GNU_TIME = "/usr/bin/time"  # for the RSS pass; optional
PLUGIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # the reference portmap and ipMasq exec iptables


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the sides ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SideKind:
    """One implementation of the chain on one netfilter backend, as ``--sides`` names it."""

    name: str
    ours: bool
    # The value of portmap's "backend" and bridge's "ipMasqBackend"; None: neither key (Debian's 1.1.1
    # predates them and has only iptables).
    backend: str | None
    # Where its DNAT rules land, for the node check: our iptables backend writes the legacy tables
    # (python-iptables/libiptc); the reference's iptables backend execs iptables, on Debian 12
    # iptables-nft; both nftables backends write "table ip cni_hostport".
    tables: str  # "iptables-legacy", "iptables-nft" or "nftables"
    reference_release: str = ""  # "1.1.1" or "1.7.1": which reference bin dir


SIDE_KINDS: dict[str, SideKind] = {k.name: k for k in (
    SideKind("ours-iptables", True, "iptables", "iptables-legacy"),
    SideKind("ours-nftables", True, "nftables", "nftables"),
    SideKind("ref-1.1.1", False, None, "iptables-nft", "1.1.1"),
    SideKind("ref-1.7.1-nft", False, "nftables", "nftables", "1.7.1"),
    SideKind("ref-1.7.1-iptables", False, "iptables", "iptables-nft", "1.7.1"),
)}
DEFAULT_SIDES = "ours-iptables,ref-1.1.1"  # what a run measured before there were backends


# --- namespaces ----------------------------------------------------------------------------------

class Namespaces:
    """Every namespace this run creates, added and deleted in batches (thousands of them at 1,000)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, names: list[str]) -> None:
        self.names += names  # remembered first, so a half-done batch is still cleaned up
        proc = subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names).encode(),
                              capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ip netns add failed: {proc.stderr.decode(errors='replace').strip()}")

    def delete_all(self) -> None:
        # Containers before nodes; -force keeps going past names that were never created.
        names = [n for n in self.names if not n.endswith("-node")] + [n for n in self.names if n.endswith("-node")]
        if names:
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names).encode(),
                           capture_output=True, check=False)
        self.names.clear()


def leftover_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False).stdout.decode()
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{PREFIX}-")]


# --- exec'ing plugins ----------------------------------------------------------------------------

@dataclass
class PluginRun:
    plugin: str
    command: str
    ms: float
    code: int
    rss_kib: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def error(self) -> str:
        text = (self.stdout.strip() or self.stderr.strip() or f"exit code {self.code}").replace("\n", " ")
        return f"{self.plugin} {self.command}: {text[:300]}"


class Spawner:
    """Client of one ``spawner.py`` process started inside a node namespace."""

    def __init__(self, node_path: str) -> None:
        with netns.enter(node_path):  # the child inherits the netns of the thread that forks it
            # A session of its own: Ctrl-C stops the benchmark, which then lets the exec in flight finish.
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.join(HERE, "spawner.py")],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self.lock = threading.Lock()

    def run(self, argv: list[str], env: dict[str, str], stdin: str = "", rss_file: str | None = None
            ) -> dict[str, Any]:
        """Exec ``argv`` and wait for it; with ``rss_file``, under GNU time for an exact peak RSS (untimed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request: dict[str, Any] = {"argv": argv, "env": env, "stdin": stdin}
        if rss_file:
            request["rss_file"] = rss_file
        payload = json.dumps(request).encode()
        with self.lock:
            self.proc.stdin.write(len(payload).to_bytes(4, "big") + payload)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(4)
            if len(head) < 4:
                raise RuntimeError("the exec server ended unexpectedly")
            answer: dict[str, Any] = json.loads(self.proc.stdout.read(int.from_bytes(head, "big")))
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# --- one node, one implementation ----------------------------------------------------------------

@dataclass
class Side:
    """One node namespace running one implementation of the chain."""

    kind: SideKind
    bin_dir: str
    chain: list[str]
    work: str
    env_timed: dict[str, str]
    env_preload: dict[str, str]
    node: str = ""
    spawners: list[Spawner] = field(default_factory=list)
    rss_file: str | None = None  # set during the RSS pass: execs then run under GNU time
    helper: subprocess.Popen[bytes] | None = None  # ours: the resident helper serving this node

    def __post_init__(self) -> None:
        self.node = f"{PREFIX}-{self.name}-node"

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def node_path(self) -> str:
        return f"/run/netns/{self.node}"

    @property
    def side_dir(self) -> str:
        return os.path.join(self.work, self.name)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.side_dir, "host-local")

    @property
    def worker_rss_log(self) -> str:
        """Where the helper's workers note their peak RSS after each call (see cni.helper)."""
        return os.path.join(self.side_dir, "worker-rss.log")

    def plugin_config(self, plugin: str, port: int, prev: dict[str, Any] | None, net: int = 0) -> dict[str, Any]:
        """What libcni would hand this plugin of the conflist: name and cniVersion injected, runtimeConfig
        for the capabilities it declares, prevResult when there is one."""
        conf: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": network_name(net),
                                **plugin_entry(plugin, self.data_dir, net, self.kind.backend)}
        if conf.get("capabilities", {}).get("portMappings"):
            conf["runtimeConfig"] = {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def exec(self, spawner: Spawner, plugin: str, command: str, container: str, conf: dict[str, Any] | None,
             timed: bool) -> PluginRun:
        env = dict(self.env_timed if timed else self.env_preload, CNI_COMMAND=command)
        if command != "VERSION":
            env.update(CNI_CONTAINERID=container, CNI_NETNS=f"/run/netns/{container}", CNI_IFNAME="eth0")
        answer = spawner.run([os.path.join(self.bin_dir, plugin)], env, json.dumps(conf) if conf else "",
                             self.rss_file)
        return PluginRun(plugin, command, answer["ms"], answer["code"], answer["maxrss_kib"],
                         answer["stdout"], answer["stderr"])


def network_name(net: int) -> str:
    """Network 0 is the timed one; the others only hold preloaded containers."""
    return NETWORK if net == 0 else f"{NETWORK}{net}"


def plugin_entry(plugin: str, data_dir: str, net: int = 0, backend: str | None = None) -> dict[str, Any]:
    """The plugin's entry in the conflist of network ``net`` (the same for every side but the backend keys)."""
    if plugin == "bridge":
        subnet = SUBNET if net == 0 else f"10.{200 + net}.0.0/16"
        entry: dict[str, Any] = {
            "type": "bridge", "bridge": f"cni{net}", "isGateway": True, "ipMasq": True, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}
        if backend:
            entry["ipMasqBackend"] = backend
        return entry
    if plugin == "portmap":
        entry = {"type": "portmap", "capabilities": {"portMappings": True}}
        if backend:
            entry["backend"] = backend
        return entry
    raise ValueError(f"no conflist entry for {plugin!r}")


# --- operations, the way libcni runs a chain -----------------------------------------------------

@dataclass
class Operation:
    op: str
    runs: list[PluginRun]

    @property
    def ms(self) -> float:
        return sum(r.ms for r in self.runs)

    @property
    def failure(self) -> str | None:
        return next((r.error() for r in self.runs if not r.ok), None)


def run_chain(side: Side, spawner: Spawner, op: str, container: str, port: int,
              result: dict[str, Any] | None, timed: bool, net: int = 0) -> tuple[Operation, dict[str, Any] | None]:
    """One libcni operation over the chain; returns it and, for ADD, the final result. Like libcni it
    stops at the first plugin that fails."""
    runs: list[PluginRun] = []
    if op == "ADD":
        prev: dict[str, Any] | None = None
        for plugin in side.chain:
            run = side.exec(spawner, plugin, "ADD", container, side.plugin_config(plugin, port, prev, net), timed)
            runs.append(run)
            if not run.ok:
                return Operation(op, runs), None
            prev = json.loads(run.stdout)
        return Operation(op, runs), prev
    command = "CHECK" if op == "CHECK" else "DEL"
    order = side.chain if command == "CHECK" else list(reversed(side.chain))
    for plugin in order:
        run = side.exec(spawner, plugin, command, container, side.plugin_config(plugin, port, result, net), timed)
        runs.append(run)
        if not run.ok:
            break
    return Operation(op, runs), result


# --- preloading ----------------------------------------------------------------------------------

def preload(side: Side, namespaces: Namespaces, count: int, jobs: int, stop: threading.Event) -> float:
    """ADD ``count`` containers on ``side`` (untimed, ``jobs`` at a time); returns the seconds it took."""
    if count == 0:
        return 0.0
    names = [f"{PREFIX}-{side.name}-p{i}" for i in range(count)]
    namespaces.add(names)
    spawners = side.spawners + [Spawner(side.node_path) for _ in range(jobs - len(side.spawners))]
    side.spawners = spawners
    start = time.monotonic()
    done = 0
    done_lock = threading.Lock()

    def add(index: int, spawner: Spawner) -> None:
        nonlocal done
        if stop.is_set():
            return
        operation, _ = run_chain(side, spawner, "ADD", names[index], PRELOAD_PORT_BASE + index, None, timed=False,
                                 net=index // CONTAINERS_PER_BRIDGE)
        if operation.failure:
            stop.set()
            raise RuntimeError(f"preloading {side.name} container {index} failed: {operation.failure}")
        with done_lock:
            done += 1
            progress(f"  {side.name}: preloaded {done}/{count} ({time.monotonic() - start:.0f} s)",
                     done == count, done % max(1, count // 10) == 0)

    firsts = list(range(0, count, CONTAINERS_PER_BRIDGE))
    for index in firsts:  # the first of each network creates its bridge; the rest may run side by side
        add(index, spawners[0])
    first_set = set(firsts)
    rest = [i for i in range(count) if i not in first_set]

    def worker(slot: int) -> None:
        for index in rest[slot::jobs]:
            add(index, spawners[slot])

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for future in [pool.submit(worker, slot) for slot in range(jobs)]:
            future.result()
    except BaseException:
        stop.set()  # the workers finish the exec they are in and take no more
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return time.monotonic() - start


def progress(line: str, last: bool, milestone: bool) -> None:
    """A progress line rewritten in place on a terminal; every tenth of the way otherwise."""
    if sys.stderr.isatty():
        print(f"\r{line}", end="\n" if last else "", file=sys.stderr, flush=True)
    elif milestone or last:
        log(line)


def node_state(side: Side) -> dict[str, int]:
    """What the preloaded containers left on the node: bridge ports, DNAT rules, and on our nftables
    backend its per-container ``dn-*`` chains."""
    ports = subprocess.run(["ip", "-n", side.node, "-o", "link", "show", "type", "veth"], capture_output=True,
                           check=False).stdout.decode().count("\n")  # each container's host end is a port
    state = {"bridge ports": ports}
    if "portmap" not in side.chain:
        return state
    if side.kind.tables == "nftables":
        state.update(nft_hostport_state(side))
    else:
        save = "iptables-legacy-save" if side.kind.tables == "iptables-legacy" else "iptables-nft-save"
        rules = subprocess.run(["ip", "netns", "exec", side.node, save, "-t", "nat"], capture_output=True,
                               check=False).stdout.decode()
        state["DNAT rules"] = sum(1 for line in rules.splitlines() if "-j DNAT" in line)
    return state


def nft_hostport_state(side: Side) -> dict[str, int]:
    """DNAT rules in ``table ip cni_hostport`` (ours: one per container in its ``dn-*`` chain; the
    reference v1.7.1: one per container in chain ``hostports``), and for ours the ``dn-*`` chains."""
    proc = subprocess.run(["ip", "netns", "exec", side.node, "nft", "-j", "list", "table", "ip", "cni_hostport"],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        if b"No such file or directory" not in proc.stderr:  # no table (yet, or any more) is an empty node
            raise RuntimeError(f"nft list table ip cni_hostport on {side.node}: {proc.stderr.decode().strip()}")
        objects: list[dict[str, Any]] = []
    else:
        objects = json.loads(proc.stdout).get("nftables", [])
    chains = [o["chain"]["name"] for o in objects if "chain" in o]
    rules = [o["rule"] for o in objects if "rule" in o]
    state = {"DNAT rules": sum(1 for r in rules if any("dnat" in statement for statement in r.get("expr", [])))}
    if side.kind.ours:
        state["dn-* chains"] = sum(1 for name in chains if name.startswith("dn-"))
    return state


def verify_node(side: Side, containers: int, when: str) -> None:
    """Fail loudly when the node does not hold exactly ``containers`` attachments: numbers measured on a
    node in the wrong state would be meaningless."""
    state = node_state(side)
    found = ", ".join(f"{count} {what}" for what, count in state.items())
    if any(count != containers for count in state.values()):
        raise RuntimeError(f"{side.node} {when}: {found}; expected {containers} of each")
    log(f"  {side.node} {when}: {found}")


# --- the timed part ------------------------------------------------------------------------------

@dataclass
class Measurements:
    """Everything timed on one side; ``operations[op][i]`` belongs to cycle i."""

    operations: dict[str, list[Operation]] = field(default_factory=lambda: {op: [] for op in OPS})
    version_ms: dict[str, float] = field(default_factory=dict)
    version_rss_kib: dict[str, int] = field(default_factory=dict)
    exact_rss_kib: dict[str, int] = field(default_factory=dict)  # from the RSS pass, when there was one

    def failures(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for op, operations in self.operations.items():
            messages = [o.failure for o in operations if o.failure]
            if messages:
                found[op] = messages
        return found


def measure_cycle(side: Side, spawner: Spawner, container: str, port: int, into: Measurements) -> None:
    add, result = run_chain(side, spawner, "ADD", container, port, None, timed=True)
    into.operations["ADD"].append(add)
    check, _ = run_chain(side, spawner, "CHECK", container, port, result, timed=True)
    into.operations["CHECK"].append(check)
    for op in ("DEL", "DEL-again"):
        delete, _ = run_chain(side, spawner, op, container, port, result, timed=True)
        into.operations[op].append(delete)


def measure_versions(side: Side, plugins: list[str], into: Measurements) -> None:
    for plugin in plugins:
        runs = [side.exec(side.spawners[0], plugin, "VERSION", "", None, timed=True) for _ in range(VERSION_RUNS)]
        failed = [r for r in runs if not r.ok]
        if failed:
            raise RuntimeError(f"{side.name} {failed[0].error()}")
        into.version_ms[plugin] = statistics.median(r.ms for r in runs)
        into.version_rss_kib[plugin] = max(r.rss_kib for r in runs)


def measure_rss(side: Side, namespaces: Namespaces, plugins: list[str], into: Measurements) -> None:
    """One more cycle and a VERSION per plugin, untimed, each exec under GNU time: wait4 in the exec server
    cannot see below its own size (see spawner.py), GNU time forks from a ~1 MiB process."""
    if not os.access(GNU_TIME, os.X_OK):
        return
    container = f"{PREFIX}-{side.name}-rss"
    namespaces.add([container])
    scratch = Measurements()
    side.rss_file = os.path.join(side.work, f"{side.name}-rss")
    try:
        measure_cycle(side, side.spawners[0], container, CYCLE_PORT_BASE - 1, scratch)
        runs = [r for ops in scratch.operations.values() for o in ops for r in o.runs]
        runs += [side.exec(side.spawners[0], p, "VERSION", "", None, timed=True) for p in plugins]
    finally:
        side.rss_file = None
    for run in runs:
        into.exact_rss_kib[run.plugin] = max(into.exact_rss_kib.get(run.plugin, 0), run.rss_kib)


def measure(sides: list[Side], namespaces: Namespaces, cycles: int) -> dict[str, Measurements]:
    results = {side.name: Measurements() for side in sides}
    containers = {side.name: [f"{PREFIX}-{side.name}-c{i}" for i in range(cycles)] for side in sides}
    namespaces.add([name for names in containers.values() for name in names])
    for i in range(cycles):
        # The order rotates each cycle (A B C, B C A, C A B, ...; with two sides A B, B A): every side
        # takes every place equally often, so slow drift cancels out of the ratios.
        order = sides[i % len(sides):] + sides[:i % len(sides)]
        for side in order:
            measure_cycle(side, side.spawners[0], containers[side.name][i], CYCLE_PORT_BASE + i, results[side.name])
        log(f"  cycle {i + 1}/{cycles}: " + ", ".join(
            f"{s.name} ADD {results[s.name].operations['ADD'][-1].ms:.0f} ms" for s in sides))
    for side in sides:
        plugins = ["bridge", "host-local", *side.chain[1:]]
        if side.kind.ours and os.path.exists(os.path.join(side.bin_dir, "firewall")):
            plugins.append("firewall")
        measure_versions(side, plugins, results[side.name])
        measure_rss(side, namespaces, plugins, results[side.name])
    return results


# --- setting up and tearing down ----------------------------------------------------------------

@dataclass
class Run:
    """One benchmark run's resources, released by ``close`` whatever happened."""

    work: str
    namespaces: Namespaces = field(default_factory=Namespaces)
    sides: list[Side] = field(default_factory=list)

    def close(self) -> None:
        for side in self.sides:
            for spawner in side.spawners:
                spawner.close()
            if side.helper is not None:
                self.stop_helper(side.helper)
        self.namespaces.delete_all()
        shutil.rmtree(self.work, ignore_errors=True)

    @staticmethod
    def stop_helper(helper: subprocess.Popen[bytes]) -> None:
        """Kill the helper and its pre-forked workers (which would outlive it, waiting in accept()). It
        runs in a session of its own, so its process group is exactly them; the group is signalled
        before the leader is reaped, while its id cannot have been reused."""
        try:
            os.killpg(helper.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        helper.wait()


def install_ours(bin_dir: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "cnictl.cli", "install", "--dest", bin_dir, "--no-helper"],
                          capture_output=True, env=dict(os.environ, PYTHONPATH=REPO), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cnictl install failed: {proc.stderr.decode(errors='replace').strip()}")


def start_helper(side: Side) -> str | None:
    """Start a resident helper of our own for this side inside its node namespace (each side has one,
    so each has its own workers' RSS log); its socket path, or None if it did not come up."""
    socket_path = os.path.join(side.side_dir, "helper.sock")
    log_path = os.path.join(side.side_dir, "helper.log")
    with netns.enter(side.node_path), open(log_path, "wb") as helper_log:
        side.helper = subprocess.Popen([sys.executable, "-m", "cni.helper", "--socket", socket_path], cwd=REPO,
                                       stdout=subprocess.DEVNULL, stderr=helper_log, start_new_session=True,
                                       env=dict(os.environ, PYTHONPATH=REPO,
                                                PYCNI_HELPER_RSS_LOG=side.worker_rss_log))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and side.helper.poll() is None:
        if os.path.exists(socket_path):
            return socket_path
        time.sleep(0.05)
    with open(log_path, errors="replace") as f:
        log(f"the resident helper for {side.name} did not start: {f.read().strip()[-500:]}")
    return None


def available_chain(wanted: list[str]) -> list[str]:
    """``wanted`` minus portmap while our portmap plugin cannot be imported (it is still being written)."""
    if "portmap" in wanted:
        probe = subprocess.run([sys.executable, "-c", "import portmap.plugin"], cwd=REPO, capture_output=True,
                               check=False)
        if probe.returncode != 0:
            log("note: our portmap plugin does not import yet; measuring the chain without portmap")
            return [p for p in wanted if p != "portmap"]
    return wanted


@dataclass(frozen=True)
class Setup:
    """What ``--sides`` and friends ask for; the same for every size of a run."""

    kinds: list[SideKind]
    chain: list[str]
    use_helper: bool
    jobs: int
    shared_lock: bool
    ref_v171_dir: str
    inspect: bool  # wait before cleaning up, so the nodes' rules can be looked at
    # When the sides were not chosen on the command line, a missing Debian reference only drops its
    # side (with a note), as it always did; a side asked for by name must be there.
    sides_chosen: bool


def reference_bin_dir(kind: SideKind, setup: Setup) -> str:
    return REFERENCE_BIN if kind.reference_release == "1.1.1" else setup.ref_v171_dir


def missing_reference(kind: SideKind, setup: Setup) -> str | None:
    """Why this reference side cannot run, or None."""
    bin_dir = reference_bin_dir(kind, setup)
    missing = [p for p in dict.fromkeys(("bridge", "host-local", *setup.chain))
               if not os.access(os.path.join(bin_dir, p), os.X_OK)]
    if not missing:
        return None
    hint = ("; build it with /work/shared/tools/build-reference-v1.7.1.sh PLUGINS_GIT_DIR [OUT_DIR] "
            "(or pass --ref-v171-dir)" if kind.reference_release == "1.7.1" else "")
    return f"no reference {', '.join(missing)} in {bin_dir} for side {kind.name}{hint}"


def plugin_about(side: Side) -> str:
    """What the side's portmap (or bridge) says without CNI_COMMAND, e.g. ``CNI portmap plugin v1.7.1``."""
    plugin = side.chain[-1]
    proc = subprocess.run([os.path.join(side.bin_dir, plugin)], capture_output=True, env={"PATH": PLUGIN_PATH},
                          check=False, timeout=30)
    text = (proc.stdout or proc.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else ""


def set_up(run: Run, setup: Setup) -> None:
    bin_dir = os.path.join(run.work, "bin")
    if any(kind.ours for kind in setup.kinds):
        install_ours(bin_dir)
    base = {"PATH": PLUGIN_PATH}
    if not setup.shared_lock:
        # /run/xtables.lock is one lock for the whole machine, whatever the namespace: every iptables-legacy
        # user on it (other test runs, too) would queue our commits behind theirs. The reference's
        # iptables-nft does not take it, so a shared lock would measure the machine's other load, not us.
        # Our nftables backend has a host-wide lock of its own (/run/pycni/nftables.lock): the same.
        base["XTABLES_LOCKFILE"] = os.path.join(run.work, "xtables.lock")
        base["PYCNI_NFT_LOCKFILE"] = os.path.join(run.work, "nftables.lock")
    for kind in setup.kinds:
        if kind.ours:
            env = dict(base, CNI_PATH=bin_dir, PYCNI_STATE_DIR=os.path.join(run.work, kind.name, "state"))
            run.sides.append(Side(kind, bin_dir, setup.chain, run.work, env_timed=env, env_preload=env))
            continue
        why = missing_reference(kind, setup)
        if why and setup.sides_chosen:
            raise RuntimeError(why)
        if why:
            log(f"note: {why}; measuring without it")
            continue
        env = dict(base, CNI_PATH=reference_bin_dir(kind, setup))
        run.sides.append(Side(kind, reference_bin_dir(kind, setup), setup.chain, run.work, env_timed=env,
                              env_preload=env))
    if not run.sides:
        raise RuntimeError("no side left to measure")
    run.namespaces.add([side.node for side in run.sides])
    for side in run.sides:
        subprocess.run(["ip", "-n", side.node, "link", "set", "lo", "up"], check=True)
        os.makedirs(side.data_dir)
        side.spawners.append(Spawner(side.node_path))
        if side.kind.ours:
            set_up_helper(side, setup.use_helper)


def set_up_helper(side: Side, use_helper: bool) -> None:
    """Preloading is untimed: our sides use the helper for it when it is up (same code, ~5x faster); the
    timed cycles use it only with ``--helper``."""
    env = side.env_timed
    socket_path = start_helper(side)
    side.env_preload = dict(env, PYCNI_HELPER_SOCKET=socket_path) if socket_path else dict(env, PYCNI_HELPER="0")
    if use_helper:
        if not socket_path:
            raise RuntimeError(f"--helper: the resident helper for {side.name} did not start")
        side.env_timed = dict(env, PYCNI_HELPER_SOCKET=socket_path)
    else:
        side.env_timed = dict(env, PYCNI_HELPER="0")


def worker_peak_rss_mib(side: Side, since: int) -> dict[str, float]:
    """The largest peak RSS per plugin among the side's workers' calls logged after byte ``since``."""
    peaks: dict[str, float] = {}
    try:
        with open(side.worker_rss_log, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return peaks
    for line in lines:
        fields = line.split()
        if len(fields) == 3 and fields[2].isdigit():
            mib = round(int(fields[2]) / 1024, 1)
            peaks[fields[0]] = max(peaks.get(fields[0], 0.0), mib)
    return peaks


def inspection_commands(side: Side) -> list[str]:
    """How to look at what a side's plugins wrote on its node."""
    where = f"ip netns exec {side.node}"
    if side.kind.tables == "nftables":
        return [f"{where} nft list table ip cni_hostport", f"{where} nft list table inet cni_plugins_masquerade"]
    save = "iptables-legacy-save" if side.kind.tables == "iptables-legacy" else "iptables-nft-save"
    return [f"{where} {save} -t nat"]


def wait_for_inspection(sides: list[Side]) -> None:
    log("the nodes stay up until Enter (or Ctrl-C); look at them with:")
    for side in sides:
        for command in inspection_commands(side):
            log(f"  {command}")
    try:
        input()
    except EOFError:
        pass


def helper_calls(side: Side, expected: int) -> int:
    """Calls the side's helper workers have served so far (each logs one line, just after its reply:
    the last ones are given a moment to arrive)."""
    deadline = time.monotonic() + 2
    while True:
        try:
            with open(side.worker_rss_log, "rb") as f:
                count = sum(1 for _ in f)
        except FileNotFoundError:
            count = 0
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def peak_rss_of(pid: int) -> float | None:
    """VmHWM of a live process in MiB (for the helper, whose calls run in workers we cannot wait4 on)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def spawner_floor_kib(side: Side) -> int:
    """The peak RSS wait4 reports for /bin/true from this side's exec server: the smallest it can see."""
    return int(side.spawners[0].run(["/bin/true"], {})["maxrss_kib"])


def benchmark(size: int, cycles: int, setup: Setup) -> dict[str, Any]:
    run = Run(work=tempfile.mkdtemp(prefix="pycni-bch-"))
    stop = threading.Event()
    try:
        set_up(run, setup)
        preload_s = {}
        for side in run.sides:
            log(f"preloading {size} containers on {side.node} ({setup.jobs} at a time)")
            preload_s[side.name] = preload(side, run.namespaces, size, setup.jobs, stop)
            if side.helper is not None and size:
                # The launcher runs a plugin directly when the helper is not there; say which it was.
                execs = size * len(side.chain)
                log(f"  {side.name}: {helper_calls(side, execs)} of the {execs} preload execs "
                    f"went through the resident helper")
        for side in run.sides:
            for spawner in side.spawners[1:]:
                spawner.close()
            del side.spawners[1:]
            verify_node(side, size, "after preloading")
        log(f"measuring {cycles} cycles on {', '.join(s.name for s in run.sides)}")
        ours = [side for side in run.sides if side.helper is not None]
        timed_from = {side.name: log_size(side.worker_rss_log) for side in ours}  # RSS of the timed cycles only
        results = measure(run.sides, run.namespaces, cycles)
        for side in run.sides:
            verify_node(side, size, "after the cycles")  # every DEL removed what its ADD made
        if setup.inspect:
            wait_for_inspection(run.sides)
        summary = benchreport.summarize(size, cycles, setup.chain, setup.use_helper,
                                        {s.name: results[s.name] for s in run.sides}, preload_s,
                                        spawner_floor_kib(run.sides[0]))
        summary["xtables_lock"] = "shared" if setup.shared_lock else "private"
        summary["references"] = {s.name: plugin_about(s) for s in run.sides if not s.kind.ours}
        if setup.use_helper:
            summary["helper_rss_mib"] = {s.name: peak_rss_of(s.helper.pid) for s in ours if s.helper is not None}
            summary["worker_rss_mib"] = {s.name: worker_peak_rss_mib(s, timed_from[s.name]) for s in ours}
        return summary
    finally:
        stop.set()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        try:
            log("cleaning up")
            run.close()
        finally:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=0, help="containers preloaded on each node (default 0)")
    parser.add_argument("--sizes", help="comma-separated preload sizes, run one after another, e.g. 0,100,1000; "
                                        "writes the results table into benchmarks/README.md")
    parser.add_argument("--cycles", type=int, default=20, help="ADD/CHECK/DEL/DEL-again cycles per side (default 20)")
    parser.add_argument("--chain", default=",".join(CHAIN_TYPES),
                        help="plugins of the chain, in order (default bridge,portmap; bridge includes host-local)")
    parser.add_argument("--sides", help=f"comma-separated sides, each on a node of its own, of "
                                        f"{', '.join(SIDE_KINDS)} (default {DEFAULT_SIDES})")
    parser.add_argument("--ref-v171-dir", default=REFERENCE_V171_BIN,
                        help=f"the reference v1.7.1 binaries for the ref-1.7.1-* sides (default {REFERENCE_V171_BIN})")
    parser.add_argument("--ours-only", action="store_true", help="drop the reference sides from --sides")
    parser.add_argument("--helper", action="store_true", help="time our plugins through the resident helper")
    parser.add_argument("--jobs", type=int, default=max(2, os.cpu_count() or 2),
                        help="containers preloaded side by side (default: the number of CPUs, at least 2)")
    parser.add_argument("--shared-locks", "--shared-xtables-lock", dest="shared_locks", action="store_true",
                        help="let our plugins take the machine's /run/xtables.lock and /run/pycni/nftables.lock "
                             "instead of private ones (see README)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--inspect", action="store_true",
                        help="after the cycles, print how to list each node's rules and wait for Enter")
    parser.add_argument("--no-readme", action="store_true", help="with --sizes: do not touch benchmarks/README.md")
    parser.add_argument("--clean", action="store_true",
                        help=f"delete the {PREFIX}-* namespaces an interrupted run left behind, then exit")
    args = parser.parse_args(argv)
    unknown = [p for p in args.chain.split(",") if p not in CHAIN_TYPES]
    if unknown or not args.chain.startswith("bridge"):
        parser.error(f"--chain: bridge first, then any of {', '.join(CHAIN_TYPES[1:])}")
    if args.cycles < 1 or args.jobs < 1:
        parser.error("--cycles and --jobs must be at least 1")
    args.sides_chosen = args.sides is not None
    names = (args.sides or DEFAULT_SIDES).split(",")
    unknown = [n for n in names if n not in SIDE_KINDS]
    if unknown or len(set(names)) != len(names):
        parser.error(f"--sides: distinct names out of {', '.join(SIDE_KINDS)}")
    args.kinds = [SIDE_KINDS[n] for n in names if SIDE_KINDS[n].ours or not args.ours_only]
    if not args.kinds:
        parser.error("--ours-only leaves none of --sides")
    return args


def reproducing_args(argv: list[str]) -> list[str]:
    """The arguments that shaped the numbers (``--json FILE`` only says where else they went)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("bench: needs root (it creates network namespaces)")
        return 1
    leftovers = leftover_namespaces()
    if args.clean:
        ns = Namespaces()
        ns.names = list(leftovers)
        ns.delete_all()
        log(f"deleted {len(leftovers)} namespaces")
        return 0
    if leftovers:
        log(f"bench: {len(leftovers)} {PREFIX}-* namespaces exist already (another run, or an interrupted one); "
            f"remove them with: {sys.argv[0]} --clean")
        return 1
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.containers]
    setup = Setup(args.kinds, available_chain(args.chain.split(",")), args.helper, args.jobs,
                  args.shared_locks, args.ref_v171_dir, args.inspect, args.sides_chosen)
    command = "benchmarks/run.sh " + " ".join(reproducing_args(argv if argv is not None else sys.argv[1:]))
    summaries = []
    with sigterm_as_interrupt():
        try:
            for size in sizes:
                summary = benchmark(size, args.cycles, setup)
                print(benchreport.render_text(summary), flush=True)
                summaries.append(summary)
        except KeyboardInterrupt:
            log("interrupted; everything this run created has been removed")
            return 130
        except RuntimeError as error:  # ours: a node in the wrong state, a missing reference, a failed preload
            log(f"bench: {error}")
            return 1
    document = benchreport.document(command, summaries)
    if document["growth"]:
        print(benchreport.render_growth_text(document), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
    if args.sizes and not args.no_readme:
        benchreport.write_readme(os.path.join(HERE, "README.md"), document)
        log("wrote the results table into benchmarks/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
