"""The helper as a socket-activated service: units, activation, versions, restart after an upgrade.

The integration tests run the units' own ExecStart under ``systemd-socket-activate`` (PID 1 here
is not systemd), restarted in a loop the way systemd keeps a socket unit listening, on a private
socket path. The plugins and the helper run from a copy of the source tree, so that an "upgrade"
(an edit of that copy) changes nothing the other tests run.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni import helper, launcher, release
from cnictl import cli, install, service
from tests.netenv import EXTERNAL_NET, PYTHON, REPO, Node, node_env, request, server, wait_for
from tests.test_helper import confs

ACTIVATOR = shutil.which("systemd-socket-activate")


# --- release -------------------------------------------------------------------------------------

def test_release_covers_every_package_of_the_project() -> None:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} == set(release.PACKAGES)


def test_release_changes_with_any_source_file(tmp_path: Path) -> None:
    (tmp_path / "cni" / "__pycache__").mkdir(parents=True)
    (tmp_path / "cni" / "skel.py").write_text("x = 1\n")
    (tmp_path / "elsewhere.py").write_text("not ours\n")
    first = release.tree_digest(str(tmp_path))
    (tmp_path / "cni" / "__pycache__" / "skel.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "elsewhere.py").write_text("still not ours\n")
    assert release.tree_digest(str(tmp_path)) == first
    (tmp_path / "cni" / "skel.py").write_text("x = 2\n")
    assert release.tree_digest(str(tmp_path)) != first
    assert re.fullmatch(r"\S+\+[0-9a-f]{12}", release.current())


# --- units ---------------------------------------------------------------------------------------

def unit_keys(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for line in path.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key] = value
    return sections


def launcher_release(path: Path) -> str:
    match = re.search(r"cni\.launcher\.main\('[^']+', '([^']+)'\)", path.read_text())
    assert match, path.read_text()
    return match.group(1)


@pytest.fixture
def no_helper_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever runs on this machine, the installer's helper requests go to a socket nobody serves."""
    monkeypatch.setenv(launcher.SOCKET_ENV, str(tmp_path / "nobody.sock"))


def test_install_writes_the_helper_units(tmp_path: Path, no_helper_anywhere: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    units = tmp_path / "units"
    assert cli.main(["install", "--dest", str(tmp_path / "bin"), "--unit-dir", str(units)]) == 0
    out, err = capsys.readouterr()
    assert out.split()[-2:] == [str(units / "pycni-helper.socket"), str(units / "pycni-helper.service")]
    assert "written, not enabled" in err  # systemd is not PID 1 here, and does not read a temp dir anyway
    assert sorted(os.listdir(units)) == ["pycni-helper.service", "pycni-helper.socket"]
    for name in os.listdir(units):
        assert stat.S_IMODE((units / name).stat().st_mode) == 0o644

    sock = unit_keys(units / "pycni-helper.socket")
    assert sock["Unit"]["Before"].split() == ["containerd.service", "crio.service", "kubelet.service"]
    assert sock["Socket"] == {"ListenStream": "/run/pycni/helper.sock", "SocketUser": "root", "SocketGroup": "root",
                              "SocketMode": "0600", "DirectoryMode": "0700", "RemoveOnStop": "yes"}
    assert sock["Install"] == {"WantedBy": "sockets.target"}
    svc = unit_keys(units / "pycni-helper.service")
    assert svc["Unit"]["Requires"] == svc["Unit"]["After"] == "pycni-helper.socket"
    assert svc["Service"]["ExecStart"] == f"{os.path.join(sys.prefix, 'bin', 'cnictl')} helper"
    assert svc["Service"]["Restart"] == "on-failure"
    assert "Install" not in svc  # started by its socket only

    installed = launcher_release(tmp_path / "bin" / "bridge")
    assert installed == release.current()
    for name in ("pycni-helper.socket", "pycni-helper.service"):
        assert (units / name).read_text().startswith(f"{service.UNIT_MARKER} (pycni {installed})")
    if shutil.which("systemd-analyze"):  # systemd's own parser: every key known, every value valid
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", "./pycni-helper.socket",
                                 "./pycni-helper.service"], cwd=units, capture_output=True, text=True, check=False)
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr


@pytest.mark.parametrize("flag", ["--no-helper", "--direct"])
def test_no_helper_writes_no_units(tmp_path: Path, no_helper_anywhere: None, flag: str) -> None:
    units = tmp_path / "units"
    assert cli.main(["install", "--dest", str(tmp_path / "bin"), "--unit-dir", str(units), flag]) == 0
    assert not units.exists()
    assert install.is_launcher(str(tmp_path / "bin" / "bridge"))


def test_uninstall_removes_exactly_what_install_wrote(tmp_path: Path, no_helper_anywhere: None,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    bin_dir.mkdir()
    units.mkdir()
    (bin_dir / "macvlan").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 64)  # the runtime's other plugins
    (bin_dir / "wrapper").write_text("#!/bin/sh\n# calls a pycni plugin:\n# pycni-entry: bridge.plugin:PLUGIN\n")
    (bin_dir / "link").symlink_to(bin_dir / "macvlan")
    (units / "containerd.service").write_text("[Service]\nExecStart=/usr/bin/containerd\n")

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*"))
                if p.is_file() and not p.name.endswith(".sock")}

    before = snapshot()
    assert cli.main(["install", "--dest", str(bin_dir), "--unit-dir", str(units)]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == len(install.PLUGIN_ENTRIES) + 2
    assert cli.main(["uninstall", "--dest", str(bin_dir), "--unit-dir", str(units)]) == 0
    assert sorted(capsys.readouterr().out.split()) == sorted(written)
    assert snapshot() == before
    assert cli.main(["uninstall", "--dest", str(bin_dir), "--unit-dir", str(units)]) == 0  # nothing left: no-op
    assert capsys.readouterr().out == ""


def test_systemctl_is_used_only_when_systemd_reads_the_units(tmp_path: Path) -> None:
    assert service.INSTALL_ACTIONS == (["daemon-reload"], ["enable", "--now", "pycni-helper.socket"],
                                       ["try-restart", "pycni-helper.service"])
    assert service.uninstall_actions(True) == ([["disable", "--now", "pycni-helper.socket", "pycni-helper.service"]],
                                               [["daemon-reload"]])
    assert service.uninstall_actions(False) == ([], [])
    assert not service.managed_by_systemd(str(tmp_path))  # a test's unit dir never reaches systemctl
    assert service.managed_by_systemd(service.DEFAULT_UNIT_DIR) == os.path.isdir("/run/systemd/system")


def test_variables_for_another_process_are_not_a_passed_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "helper")
    assert helper.passed_socket() is None
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)  # consumed either way


# --- socket activation, for real ----------------------------------------------------------------

@dataclass
class Activated:
    """A node, a source tree copy with its launchers installed, and its helper's socket under
    systemd-socket-activate (restarted in a loop, as systemd keeps a socket unit listening)."""

    node: Node
    src: Path
    sock: str
    rss_log: Path
    loop: subprocess.Popen[bytes]
    timings: dict[str, list[float]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(self.src),
                launcher.SOCKET_ENV: self.sock}

    def cnictl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "-m", "cnictl.cli", *args], cwd=self.src, env=self.env(), capture_output=True,
                              text=True, check=False, timeout=120)

    def status(self) -> dict[str, Any]:
        return helper.control(self.sock, launcher.STATUS)

    def served_calls(self) -> list[str]:
        """The calls the helper's workers ran ("<plugin> <command>"), from PYCNI_HELPER_RSS_LOG."""
        text = self.rss_log.read_text() if self.rss_log.exists() else ""
        return [" ".join(line.split()[:2]) for line in text.splitlines()]

    def served_since(self, start: int, expected: list[str]) -> list[str]:
        """The calls served after the first ``start``, once ``expected`` are in (a worker logs after
        it answered) or after a second."""
        wait_for(lambda: len(self.served_calls()) >= start + len(expected), timeout=1)
        return self.served_calls()[start:]

    def activator(self) -> int:
        """The pid the loop runs now: systemd-socket-activate, which becomes the helper by exec."""
        assert wait_for(lambda: bool(_children(self.loop.pid)), timeout=10)
        return _children(self.loop.pid)[0]

    def wait_listening(self, not_pid: int = 0) -> int:
        """Wait until a fresh systemd-socket-activate (not ``not_pid``) listens; its pid."""
        def ready() -> bool:
            pids = _children(self.loop.pid)
            return bool(pids) and pids[0] != not_pid and _comm(pids[0]).startswith("systemd-socket") \
                and _listening(self.sock)
        assert wait_for(ready, timeout=10), "systemd-socket-activate did not listen again"
        return self.activator()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return None  # gone


def _workers_of(status: dict[str, Any], pid: int) -> int:
    """How many of the workers a status lists are children of ``pid`` (-1 if one belongs elsewhere)."""
    parents = [_parent(w) for w in status["workers"]]
    return -1 if set(parents) - {pid, None} else parents.count(pid)


def _listening(path: str) -> bool:
    """Whether a unix socket bound to ``path`` is listening (/proc/net/unix: flag __SO_ACCEPTCON)."""
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
            return True
    return False


def copy_tree(dest: Path) -> None:
    for package in release.PACKAGES:
        if os.path.isdir(os.path.join(REPO, package)):
            shutil.copytree(os.path.join(REPO, package), dest / package,
                            ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture
def activated() -> Iterator[Activated]:
    if ACTIVATOR is None:
        pytest.skip("systemd-socket-activate is missing (Debian package systemd; .ci/bootstrap installs it)")
    with node_env("hs") as node:
        work = Path(node.work)
        src, units = work / "src", work / "units"
        copy_tree(src)
        sock, rss_log = str(work / "helper.sock"), work / "served.log"
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(src),
               launcher.SOCKET_ENV: sock}
        proc = subprocess.run([PYTHON, "-m", "cnictl.cli", "install", "--dest", node.bin_dir, "--unit-dir",
                               str(units)], cwd=src, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        exec_start = unit_keys(units / "pycni-helper.service")["Service"]["ExecStart"].split()
        # the service's own command line; PYTHONPATH points it at the copy, as the launchers are
        loop = subprocess.Popen(
            ["sh", "-c", 'while :; do "$@"; done', "activate-loop", ACTIVATOR, "-l", sock,
             "-E", f"PYTHONPATH={src}", "-E", f"PYCNI_HELPER_RSS_LOG={rss_log}", *exec_start],
            stdout=subprocess.DEVNULL, stderr=open(work / "helper.log", "wb"), start_new_session=True)
        try:
            it = Activated(node, src, sock, rss_log, loop)
            it.wait_listening()
            yield it
            if it.timings:
                print("\nbridge+portmap ADD (ms):", {k: [round(v, 1) for v in vs] for k, vs in it.timings.items()})
        finally:
            os.killpg(loop.pid, signal.SIGKILL)  # the loop, the activator or helper, and its workers
            loop.wait()
            print((work / "helper.log").read_text()[-3000:], file=sys.stderr)


def add_pair(it: Activated, ctr: str, port: int) -> tuple[dict[str, Any], float, str]:
    """bridge ADD then portmap ADD; (result, milliseconds for both, their stderr)."""
    bridge, portmap = confs(it.node, port)
    start = time.perf_counter()
    env = {launcher.SOCKET_ENV: it.sock}
    result, rc, err1 = it.node.run_plugin("bridge", "ADD", bridge, ctr, env_extra=env)
    assert rc == 0 and result is not None, err1
    out, rc, err2 = it.node.run_plugin("portmap", "ADD", dict(portmap, prevResult=result), ctr, env_extra=env)
    elapsed = (time.perf_counter() - start) * 1000
    assert rc == 0 and out == result, err2
    return result, elapsed, err1 + err2


def check_traffic_and_delete(it: Activated, ctr: str, port: int) -> str:
    """The port mapping carries traffic; then DEL both. Their stderr."""
    bridge, portmap = confs(it.node, port)
    with server(ctr, "tcp", 80, tag="c"):
        assert request(it.node.external, "tcp", f"{EXTERNAL_NET}.1", port) == f"c {EXTERNAL_NET}.2"
    errors = ""
    for plugin, conf in (("portmap", portmap), ("bridge", bridge)):
        _, rc, err = it.node.run_plugin(plugin, "DEL", conf, ctr, env_extra={launcher.SOCKET_ENV: it.sock})
        assert rc == 0, err
        errors += err
    return errors


@pytest.mark.root
def test_the_first_call_starts_the_helper_and_is_served_by_it(activated: Activated) -> None:
    it = activated
    installed = launcher_release(Path(it.node.bin_dir) / "bridge")
    cold, warm = it.timings.setdefault("cold", []), it.timings.setdefault("warm", [])
    for round_ in range(3):
        pid = it.activator()
        assert _comm(pid).startswith("systemd-socket")  # listening, no helper yet
        served = len(it.served_calls())
        ctr = it.node.container(f"a{round_}")
        _, elapsed, err = add_pair(it, ctr, 8080)
        cold.append(elapsed)
        assert "running directly" not in err
        assert it.served_since(served, ["bridge ADD", "portmap ADD"]) == ["bridge ADD", "portmap ADD"]
        answer = it.status()
        assert answer["version"] == installed and answer["pid"] == pid and answer["activated"] is True
        assert _comm(pid) == "cnictl"  # systemd-socket-activate exec'd the unit's ExecStart
        # the helper's other workers: the idle ones (the one answering is the fourth), maybe one exiting
        assert wait_for(lambda: _workers_of(it.status(), pid) >= helper.IDLE_WORKERS - 1)
        warm_ctr = it.node.container(f"w{round_}")
        _, elapsed, err = add_pair(it, warm_ctr, 8081)
        warm.append(elapsed)
        assert "running directly" not in err
        for c, port in ((ctr, 8080), (warm_ctr, 8081)):
            assert check_traffic_and_delete(it, c, port) == ""
        calls = ["bridge ADD", "portmap ADD"] * 2 + ["portmap DEL", "bridge DEL"] * 2
        assert it.served_since(served, calls) == calls  # the helper's workers ran every call
        status = it.cnictl("helper", "--status")
        assert status.returncode == 0 and f"version {installed} (the installed version)" in status.stdout
        assert f"pid: {pid}," in status.stdout and "(socket-activated)" in status.stdout
        assert helper.control(it.sock, launcher.EXIT)["exiting"] is True  # stopped: the next call starts it
        it.wait_listening(not_pid=pid)
    assert it.node.reservations("hpnet") == []


@pytest.mark.root
def test_a_helper_of_another_version_is_refused_and_an_upgrade_restarts_it(activated: Activated) -> None:
    it = activated
    bin_dir = Path(it.node.bin_dir)
    old = launcher_release(bin_dir / "bridge")
    ctr = it.node.container("c1")
    add_pair(it, ctr, 8080)
    first = it.status()
    assert first["version"] == old
    check_traffic_and_delete(it, ctr, 8080)

    # launchers of another release: the helper refuses, they run the plugins themselves, same results
    roots = [str(it.src), *install.site_dirs()]
    install.install(str(bin_dir), roots=roots, release="0.0.1+another")
    served = len(it.served_calls())
    ctr = it.node.container("c2")
    result, _, err = add_pair(it, ctr, 8082)
    assert result["ips"][0]["address"].startswith("10.88.0.")
    notice = f"pycni: helper runs version {old}, this plugin is 0.0.1+another; running directly\n"
    assert err == notice * 2  # once per call
    assert check_traffic_and_delete(it, ctr, 8082) == notice * 2
    assert it.served_since(served, []) == []
    assert it.status()["pid"] == first["pid"]

    # an upgrade: the installed tree changes, `cnictl install` retires the running helper
    with open(it.src / "cni" / "skel.py", "a", encoding="utf-8") as f:
        f.write("# upgraded\n")
    proc = it.cnictl("install", "--dest", str(bin_dir), "--unit-dir", str(Path(it.node.work) / "units"))
    assert proc.returncode == 0, proc.stderr
    new = launcher_release(bin_dir / "bridge")
    assert new != old and new == f"{old.partition('+')[0]}+{release.tree_digest(str(it.src))}"
    assert f"(pid {first['pid']}, version {old}) was asked to exit" in proc.stderr
    it.wait_listening(not_pid=first["pid"])
    served = len(it.served_calls())
    ctr = it.node.container("c3")
    _, _, err = add_pair(it, ctr, 8083)
    assert err == ""
    assert it.served_since(served, ["bridge ADD", "portmap ADD"]) == ["bridge ADD", "portmap ADD"]
    second = it.status()
    assert second["version"] == new and second["pid"] != first["pid"]
    assert check_traffic_and_delete(it, ctr, 8083) == ""
    # a reinstall of the same tree keeps the helper
    proc = it.cnictl("install", "--dest", str(bin_dir), "--unit-dir", str(Path(it.node.work) / "units"))
    assert proc.returncode == 0 and "asked to exit" not in proc.stderr
    assert it.status()["pid"] == second["pid"]


def test_status_when_no_helper_runs(tmp_path: Path) -> None:
    proc = subprocess.run([PYTHON, "-m", "cnictl.cli", "helper", "--status"], cwd=REPO, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO,
                                              **{launcher.SOCKET_ENV: str(tmp_path / "none.sock")}))
    assert proc.returncode == 3 and proc.stdout.startswith("helper: not running")
