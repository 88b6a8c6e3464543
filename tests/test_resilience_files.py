"""Files and privileges: what the plugins write, where, with which modes, and what they exec.

- State files are private whatever the runtime's umask: records 0600 in 0700 directories, host-local's
  files 0600, nothing group- or world-writable.
- Writes are atomic: a SIGKILL injected (strace) at every rename of an ADD never leaves a partial file
  visible, and DEL removes the temporary files such a kill leaves.
- Paths cannot be steered: names with ``..`` or ``/`` are refused before any file is touched, a relative
  ``dataDir`` is refused, symlinks planted anywhere below the configured directories redirect no write
  and no unlink, a ``resolvConf`` that is a FIFO or endless cannot hang the plugin.
- No shell: every program exec'd during ADD/CHECK/DEL of a whole chain is listed, and none is a shell.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import Node, node_env, ns_exec
from tests.test_resilience_common import (
    Runtime,
    assert_same,
    firewall_available,
    node_state,
    report,
    run_plugin,
    touch_tables,
    well_formed_error,
)

pytestmark = pytest.mark.root

NETWORK = "rfnet"
MAPPINGS = [{"hostPort": 8181, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5454, "containerPort": 53, "protocol": "udp"}]
FIREWALL = firewall_available()
FIGURES: list[str] = []
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "busybox", "ash", "csh", "tcsh", "fish"}


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    with node_env("rf", external=False) as n:
        touch_tables(n)
        runtime = Runtime(n, NETWORK, MAPPINGS, FIREWALL)
        ctr = n.container("c0")  # the bridge stays after DEL: part of every baseline
        first = runtime.add(ctr)
        assert first.ok, (first.failed, first.error, first.stderr[-800:])
        runtime.delete(ctr)
        n.namespaces.remove(ctr)
        yield n
    report(request.config, "resilience-files", FIGURES)


@pytest.fixture
def runtime(node: Node) -> Runtime:
    return Runtime(node, NETWORK, MAPPINGS, FIREWALL)


_counter = [0]


@pytest.fixture
def ctr(node: Node) -> Iterator[str]:
    _counter[0] += 1
    name = node.container(f"f{_counter[0]}")
    try:
        yield name
    finally:
        node.namespaces.remove(name)


@pytest.fixture
def outside(node: Node) -> Iterator[str]:
    """A directory outside every configured one, holding a victim file, for symlinks to point at."""
    path = os.path.join(node.work, "outside")
    os.makedirs(path)
    with open(os.path.join(path, "victim"), "w") as f:
        f.write("precious")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def state(node: Node, *containers: str) -> dict[str, Any]:
    return node_state(node, NETWORK, containers)


def listing(root: str) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` (symlinks not followed) with its mode and, for files, its content."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = f.read()
            out[os.path.relpath(path, root)] = (st.st_mode, content)
    return out


# --- modes -------------------------------------------------------------------------------------

def test_state_files_are_private_even_with_umask_0(node: Node, ctr: str) -> None:
    """Fresh, nested stateDir and dataDir, and a runtime whose umask is 0."""
    base = os.path.join(node.work, "umask0")
    runtime = Runtime(node, NETWORK, MAPPINGS, FIREWALL)
    state_dir, data_dir = os.path.join(base, "a", "state"), os.path.join(base, "b", "networks")
    for _, conf in runtime.steps:
        conf["stateDir"] = state_dir
    runtime.steps[0][1]["ipam"]["dataDir"] = data_dir
    runtime.umask = 0
    try:
        run = runtime.add(ctr)
        assert run.ok, (run.failed, run.error, run.stderr[-800:])
        entries = listing(base)
        records = [p for p in entries if p.endswith(".json")]
        assert len(records) == len(runtime.plugins), records
        problems = []
        for rel, (mode, _) in sorted(entries.items()):
            perm = stat.S_IMODE(mode)
            if perm & 0o022:
                problems.append(f"{rel} is group/world-writable: {oct(perm)}")
            in_state = rel.startswith(os.path.join("a", "state"))
            in_store = rel.startswith(os.path.join("b", "networks", NETWORK) + os.sep)
            if stat.S_ISREG(mode) and (in_state or in_store) and perm != 0o600:
                problems.append(f"{rel}: file mode {oct(perm)}, want 0600")
            if stat.S_ISDIR(mode) and in_state and perm != 0o700:
                problems.append(f"{rel}: directory mode {oct(perm)}, want 0700")
        assert problems == []
        FIGURES.append(f"modes with umask 0: {len(entries)} paths checked (records 0600 in 0700 dirs, "
                       f"host-local files 0600, nothing group/world-writable)")
        runtime.delete(ctr)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- atomic writes -------------------------------------------------------------------------------

RENAMES = "rename,renameat,renameat2"


def strace_prefix(extra: list[str]) -> tuple[str, ...]:
    return ("strace", "-f", "-qq", "-e", "signal=none", "-o", "/dev/null", *extra)


def partial_files(node: Node) -> list[str]:
    """Record files that are not a whole JSON record, host-local files that are not whole."""
    bad = []
    for dirpath, _, filenames in os.walk(node.state_dir):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.endswith(".json") and not name.startswith("."):
                try:
                    with open(path, "rb") as f:
                        data = json.load(f)
                    assert data["format"] == 1
                except (ValueError, KeyError, AssertionError):
                    bad.append(path)
    store = os.path.join(node.data_dir, NETWORK)
    for name in os.listdir(store) if os.path.isdir(store) else []:
        if name.startswith("last_reserved_ip."):
            with open(os.path.join(store, name)) as f:
                if not re.fullmatch(r"[0-9a-f.:]+", f.read()):
                    bad.append(os.path.join(store, name))
    return bad


def tmp_files(*roots: str) -> list[str]:
    return [os.path.join(d, n) for root in roots for d, _, fs in os.walk(root) for n in fs if n.endswith(".tmp")]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_kill_at_any_rename_leaves_no_partial_file(node: Node, runtime: Runtime) -> None:
    """SIGKILL injected at the 1st, 2nd, ... rename(2) of each plugin's ADD (the commit of an atomic
    write): every file is whole (old or new content, or absent); DEL removes the leftovers."""
    killed: dict[str, int] = {}
    cursor_leftovers: list[str] = []
    for plugin in runtime.plugins:
        nth = 1
        while True:
            name = node.container(f"r{plugin[:2]}{nth}")
            try:
                before = state(node, name)
                runtime.prefix = {plugin: strace_prefix(
                    ["-e", f"trace={RENAMES}", "-e", f"inject={RENAMES}:signal=KILL:when={nth}"])}
                run = runtime.add(name)
                runtime.prefix = {}
                if run.ok:
                    break  # this ADD has fewer renames than nth
                assert run.failed == plugin and run.rc == -signal.SIGKILL, (run.failed, run.rc, run.error)
                killed[plugin] = nth
                assert partial_files(node) == []
                runtime.delete(name)
                assert tmp_files(node.state_dir) == []  # the records' leftovers go with their DEL
                # host-local keeps temporary files by design (its store never removes what is not a
                # reservation): a killed cursor write leaves one, whole, which nothing ever reads
                store = os.path.join(node.data_dir, NETWORK)
                for leftover in tmp_files(store):
                    assert re.fullmatch(r"\.last_reserved_ip\.\d+\.\d+\.tmp", os.path.basename(leftover))
                    with open(leftover) as f:
                        assert re.fullmatch(r"[0-9a-f.:]+", f.read()), leftover
                    cursor_leftovers.append(os.path.basename(leftover))
                    os.unlink(leftover)  # so that the next round compares like with like
                assert_same(before, state(node, name))
            finally:
                runtime.prefix = {}
                node.namespaces.remove(name)
            nth += 1
        if run.ok:
            runtime.delete(name)
    assert set(killed) == set(runtime.plugins), killed
    FIGURES.append("kill at every rename: " + ", ".join(f"{p} {n}" for p, n in killed.items()) +
                   " renames, no partial file, no record leftover after DEL; host-local cursor temp files "
                   f"left: {len(cursor_leftovers)}")


# --- names and paths -----------------------------------------------------------------------------

CLIMBING_IDS = ["..", "../../etc", "a/b", "x/../../y", ".hidden", "-j"]
CLIMBING_NETWORKS = ["..", "../../tmp/x", "a/b", "."]
CLIMBING_IFNAMES = ["..", ".", "a/b", "../x"]


def test_names_that_could_climb_out_are_refused_before_any_file_is_touched(node: Node, runtime: Runtime,
                                                                           ctr: str) -> None:
    before = state(node, ctr)
    work_before = listing(node.work)
    tried = 0
    for plugin in runtime.plugins:
        for command in ("ADD", "DEL"):
            prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.9/16"}]}
            base = runtime.conf(plugin, prev if plugin != "bridge" else None, mappings=True)
            for cid in CLIMBING_IDS:
                out, rc, err = run_plugin(node, plugin, command, base, ctr, env_extra={"CNI_CONTAINERID": cid})
                assert rc == 1 and well_formed_error(out, (4,)), (plugin, command, cid, out, err)
                tried += 1
            for net in CLIMBING_NETWORKS:
                out, rc, err = run_plugin(node, plugin, command, dict(base, name=net), ctr)
                assert rc == 1 and well_formed_error(out, (7,)), (plugin, command, net, out, err)
                tried += 1
            for ifname in CLIMBING_IFNAMES:
                out, rc, err = run_plugin(node, plugin, command, base, ctr, env_extra={"CNI_IFNAME": ifname})
                assert rc == 1 and well_formed_error(out, (4,)), (plugin, command, ifname, out, err)
                tried += 1
    assert_same(before, state(node, ctr))
    assert listing(node.work) == work_before
    FIGURES.append(f"path-climbing names refused before any file access: {tried} invocations")


def test_relative_paths_from_the_config_are_refused(node: Node, runtime: Runtime, ctr: str) -> None:
    """A plugin's working directory is whatever the runtime's is: a relative path would land anywhere."""
    cwd = os.path.join(node.work, "cwd")
    os.makedirs(cwd)
    before = state(node, ctr)
    bridge = runtime.conf("bridge", None, False)
    bridge["ipam"] = dict(bridge["ipam"], dataDir="relative/networks")
    out, rc, err = run_plugin(node, "bridge", "ADD", bridge, ctr, cwd=cwd)
    assert rc == 1 and well_formed_error(out, (7,)) and "dataDir" in out["msg"], (out, err)
    for plugin in runtime.plugins:
        conf = dict(runtime.conf(plugin, None, True), stateDir="relative/state")
        if plugin != "bridge":
            conf["prevResult"] = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.9/16"}]}
        out, rc, err = run_plugin(node, plugin, "ADD", conf, ctr, cwd=cwd)
        assert rc == 1 and well_formed_error(out, (7,)) and "stateDir" in out["msg"], (plugin, out, err)
    assert os.listdir(cwd) == []
    assert_same(before, state(node, ctr))


def _hostlocal_conf(node: Node, **ipam: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "rfdns", "type": "host-local",
            "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": [[{"subnet": "10.90.0.0/24"}]],
                     **ipam}}


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "huge"])
def test_resolv_conf_that_never_ends_cannot_hang_the_plugin(node: Node, kind: str) -> None:
    path = os.path.join(node.work, f"resolv-{kind}")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path = "/dev/zero"
    elif kind == "directory":
        os.makedirs(path)
    else:
        with open(path, "wb") as f:
            f.write(b"nameserver 192.0.2.53\n" + b"# padding\n" * 2_000_000)  # ~20 MB
    conf = _hostlocal_conf(node, resolvConf=path)
    try:
        out, rc, err = run_plugin(node, "host-local", "ADD", conf, "", timeout=20,
                                  env_extra={"CNI_NETNS": "/run/netns/none", "CNI_CONTAINERID": f"dns-{kind}"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"host-local hung on a resolvConf that is a {kind}")
    assert rc == 1 and well_formed_error(out, (5,)), (out, err[-800:])
    assert not os.path.exists(os.path.join(node.data_dir, "rfdns"))  # read before the store is touched


# --- symlinks planted below the configured directories ------------------------------------------

def _plants(node: Node, ctr: str) -> dict[str, str]:
    """Where a symlink could be planted, by name: paths our plugins would create or write through."""
    owner = os.path.join(node.state_dir, "bridge")
    return {
        "owner-dir": owner,
        "network-dir": os.path.join(owner, NETWORK),
        "container-dir": os.path.join(owner, NETWORK, ctr),
        "record-file": os.path.join(owner, NETWORK, ctr, "eth0.json"),
        "portmap-network-dir": os.path.join(node.state_dir, "portmap", NETWORK),
        "claims-dir": os.path.join(node.state_dir, "portmap-claims"),
        "hostlocal-network-dir": os.path.join(node.data_dir, NETWORK),
        "hostlocal-lock": os.path.join(node.data_dir, NETWORK, "lock"),
        "hostlocal-cursor": os.path.join(node.data_dir, NETWORK, "last_reserved_ip.0"),
    }


PLANTS = ["owner-dir", "network-dir", "container-dir", "record-file", "portmap-network-dir", "claims-dir",
          "hostlocal-network-dir", "hostlocal-lock", "hostlocal-cursor"]


def _plant(path: str, target: str) -> str | None:
    """Replace ``path`` by a symlink to ``target``; returns where the original was moved (to restore)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    aside = None
    if os.path.lexists(path):
        aside = path + ".aside"
        os.rename(path, aside)
    os.symlink(target, path)
    return aside


def _unplant(path: str, aside: str | None) -> None:
    if os.path.islink(path):
        os.unlink(path)
    if aside is not None:
        os.rename(aside, path)


@pytest.mark.parametrize("where", PLANTS)
def test_a_symlink_planted_before_add_redirects_no_write(node: Node, runtime: Runtime, ctr: str, outside: str,
                                                        where: str) -> None:
    path = _plants(node, ctr)[where]
    target = os.path.join(outside, "victim") if where in ("record-file", "hostlocal-cursor") else \
        os.path.join(outside, "lockfile") if where == "hostlocal-lock" else outside
    before_outside = listing(outside)
    aside = _plant(path, target)
    try:
        before = state(node, ctr)
        run = runtime.add(ctr)
        if not run.ok:  # refusing is fine, as an error object
            assert run.rc == 1 and well_formed_error(run.error, (5,)), (run.failed, run.error, run.stderr[-800:])
        assert listing(outside) == before_outside, f"ADD wrote through the planted {where} symlink"
        # DEL is not steered either; it may refuse while the symlink is in the way
        del_errors = _delete_tolerating_io_errors(runtime, ctr)
        assert listing(outside) == before_outside, f"DEL wrote or removed through the planted {where} symlink"
    finally:
        _unplant(path, aside)
    if del_errors:
        runtime.delete(ctr)
    after = state(node, ctr)
    assert after["v4"] == before["v4"] and after["v6"] == before["v6"] and after["links"] == before["links"]
    FIGURES.append(f"symlink at {where}: ADD {'ok' if run.ok else 'refused (code 5)'}, nothing written outside")


def _delete_tolerating_io_errors(runtime: Runtime, ctr: str) -> list[str]:
    errors = []
    for plugin in reversed(runtime.plugins):
        out, rc, err = runtime.run(plugin, "DEL", runtime.conf(plugin, None, False), ctr)
        if rc != 0:
            assert well_formed_error(out, (5,)), (plugin, out, err[-800:])
            errors.append(plugin)
    return errors


@pytest.mark.parametrize("where", ["owner-dir", "network-dir", "container-dir"])
def test_a_symlink_planted_before_del_removes_nothing_outside(node: Node, runtime: Runtime, ctr: str,
                                                             outside: str, where: str) -> None:
    """After a good ADD, a directory on the way to the record becomes a symlink to a place holding files
    named like ours: DEL must not unlink them (and still removes the rules, by chain name)."""
    before = state(node, ctr)
    run = runtime.add(ctr)
    assert run.ok, (run.failed, run.error)
    path = _plants(node, ctr)[where]
    # the outside directory mirrors the layout below the symlink, so an unlink through it would succeed
    below = os.path.relpath(_plants(node, ctr)["record-file"], path)
    decoy = os.path.join(outside, below)
    os.makedirs(os.path.dirname(decoy), exist_ok=True)
    shutil.copy(_plants(node, ctr)["record-file"], decoy)
    before_outside = listing(outside)
    aside = _plant(path, outside)
    try:
        _delete_tolerating_io_errors(runtime, ctr)
        assert listing(outside) == before_outside, "DEL removed files through a planted symlink"
    finally:
        _unplant(path, aside)
    runtime.delete(ctr)
    assert_same(before, state(node, ctr))


# --- no shell ------------------------------------------------------------------------------------

EXECVE = re.compile(r'execve\("([^"]+)"')


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (add it to .ci/bootstrap)")
def test_no_plugin_ever_execs_a_shell(node: Node, runtime: Runtime, ctr: str, tmp_path: Any) -> None:
    """strace -f every exec of ADD, CHECK and DEL through the whole chain (with a UDP mapping, so that
    portmap runs conntrack): list the programs, and none may be a shell."""
    log = str(tmp_path / "execve")
    runtime.prefix = {p: ("strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", f"{log}.{p}")
                      for p in runtime.plugins}
    try:
        run = runtime.add(ctr)
        assert run.ok, (run.failed, run.error, run.stderr[-800:])
        for plugin in runtime.plugins:
            conf = runtime.conf(plugin, run.last, mappings=True)
            out, rc, err = runtime.run(plugin, "CHECK", conf, ctr)
            assert rc == 0, (plugin, out, err)
        runtime.delete(ctr, prev=run.last, mappings=True)
    finally:
        runtime.prefix = {}
    programs: set[str] = set()
    for plugin in runtime.plugins:
        with open(f"{log}.{plugin}") as f:
            programs |= {m.group(1) for m in EXECVE.finditer(f.read())}
    launchers = {os.path.join(node.bin_dir, p) for p in runtime.plugins}
    assert launchers <= programs  # the trace did see the plugins themselves
    others = programs - launchers
    assert not {p for p in programs if os.path.basename(p) in SHELLS}, programs
    allowed = {"conntrack", "modprobe", "nft"}  # UDP flush; xtables may load modules; macspoofchk
    assert {os.path.basename(p) for p in others} <= allowed, others
    FIGURES.append(f"execve audit of ADD/CHECK/DEL: {sorted(programs)}; no shell")


_AUDITED_CHAIN = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
execs = []
def hook(event, args):
    if event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.startfile"):
        execs.append([event, repr(args)[:300]])
sys.addaudithook(hook)
from cni import skel
from bridge.plugin import PLUGIN as bridge
from portmap.plugin import PLUGIN as portmap
plugins = {"bridge": bridge, "portmap": portmap}
steps = json.loads(sys.argv[2])
for command, name, env, conf in steps:
    out, code = skel.execute(plugins[name], env, json.dumps(conf).encode())
    if code:
        print(json.dumps({"failed": [command, name, out.decode()]}))
        sys.exit(1)
    if command == "ADD":
        for later in steps:
            if later[1] != name and later[0] in ("ADD", "DEL") and "prevResult" in later[3]:
                later[3]["prevResult"] = json.loads(out)
print(json.dumps({"execs": execs}))
"""


def test_no_shell_in_process_audit(node: Node, runtime: Runtime, ctr: str) -> None:
    """The same question without strace: run bridge and portmap in-process (in the node namespace) under a
    Python audit hook that sees every subprocess, exec, spawn and os.system."""
    env = node.plugin_env("ADD", ctr)
    steps = [["ADD", "bridge", env, runtime.conf("bridge", None, True)],
             ["ADD", "portmap", env, runtime.conf("portmap", {}, True)],
             ["DEL", "portmap", dict(env, CNI_COMMAND="DEL"), runtime.conf("portmap", None, True)],
             ["DEL", "bridge", dict(env, CNI_COMMAND="DEL"), runtime.conf("bridge", None, True)]]
    steps[1][3]["prevResult"] = {}
    proc = ns_exec(node.ns, sys.executable, "-c", _AUDITED_CHAIN, os.path.dirname(os.path.dirname(__file__)),
                   json.dumps(steps), check=False, env=dict(os.environ, PYCNI_STATE_DIR=node.state_dir))
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-2000:])
    execs = json.loads(proc.stdout.splitlines()[-1])["execs"]
    commands = [e for e in execs if e[0] != "subprocess.Popen" or "conntrack" not in e[1]]
    assert commands == [], commands
    assert not any("shell=True" in e[1] or "/bin/sh" in e[1] for e in execs), execs
    FIGURES.append(f"in-process audit: {len(execs)} subprocess(es), all conntrack, no shell")
