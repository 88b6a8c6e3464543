"""Throw-away network namespaces for integration tests: a node, containers, an external host.

Everything lives in namespaces created here (never the machine's own), with TEST-NET addresses,
and is removed again even when a test fails. Plugins run as real executables inside the node
namespace, exactly as a runtime on that node would exec them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
EXTERNAL_NET = "198.51.100"  # TEST-NET-2: node .1, external host .2
EXTERNAL_NET6 = "2001:db8:51::"


def sh(*args: str, check: bool = True, input: bytes | None = None,
       env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(args), input=input, capture_output=True, env=env, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): "
                             f"{proc.stdout.decode(errors='replace')} {proc.stderr.decode(errors='replace')}")
    return proc


def ns_exec(ns: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return sh("ip", "netns", "exec", ns, *args, **kw)


def unique_prefix(tag: str) -> str:
    return f"{tag}{os.getpid() % 100000}"


class Namespaces:
    """Creates namespaces and remembers them, so that ``close`` removes every one."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        sh("ip", "netns", "add", name)
        self.names.append(name)
        ns_exec(name, "ip", "link", "set", "lo", "up")
        return name

    def remove(self, name: str) -> None:
        sh("ip", "netns", "del", name, check=False)
        if name in self.names:
            self.names.remove(name)

    def close(self) -> None:
        for name in reversed(self.names):
            sh("ip", "netns", "pids", name, check=False)
            pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                sh("kill", "-9", pid.decode(), check=False)
            sh("ip", "netns", "del", name, check=False)
        self.names.clear()


@dataclass
class Node:
    """A node namespace with a CNI bin dir of our installed plugins and its own state directories."""

    ns: str
    namespaces: Namespaces
    bin_dir: str
    work: str
    external: str = ""
    containers: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.work, "networks")

    @property
    def state_dir(self) -> str:
        return os.path.join(self.work, "state")

    @property
    def cache_dir(self) -> str:
        return os.path.join(self.work, "cache")

    @property
    def netconf_dir(self) -> str:
        return os.path.join(self.work, "net.d")

    def container(self, suffix: str) -> str:
        name = self.namespaces.add(suffix)
        self.containers.append(name)
        return name

    def exec(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return ns_exec(self.ns, *args, **kw)

    def plugin_env(self, command: str, container: str, ifname: str = "eth0",
                   container_id: str | None = None, cni_args: str = "") -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "CNI_COMMAND": command, "CNI_CONTAINERID": container_id or container,
               "CNI_NETNS": f"/run/netns/{container}" if container else "", "CNI_IFNAME": ifname,
               "CNI_PATH": self.bin_dir, "PYCNI_STATE_DIR": self.state_dir}
        if cni_args:
            env["CNI_ARGS"] = cni_args
        return env

    def run_plugin(self, plugin: str, command: str, config: dict[str, Any], container: str,
                   ifname: str = "eth0", container_id: str | None = None, cni_args: str = "",
                   env_extra: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, int, str]:
        """Exec one installed plugin in the node namespace; returns (stdout JSON, exit code, stderr)."""
        env = self.plugin_env(command, container, ifname, container_id, cni_args)
        env.update(env_extra or {})
        proc = ns_exec(self.ns, os.path.join(self.bin_dir, plugin), check=False,
                       input=json.dumps(config).encode(), env=env)
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        return out, proc.returncode, proc.stderr.decode(errors="replace")

    def cnictl(self, *args: str, check: bool = True, env_extra: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[bytes]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "CNI_PATH": self.bin_dir, "NETCONFPATH": self.netconf_dir,
               "CNI_CACHE_DIR": self.cache_dir, "PYCNI_STATE_DIR": self.state_dir}
        env.update(env_extra or {})
        return ns_exec(self.ns, PYTHON, "-m", "cnictl.cli", *args, check=check, env=dict(env, PYTHONPATH=REPO))

    def save(self, family: int = 4) -> str:
        """The node's legacy tables in iptables-save form, counters and comments about dates dropped."""
        tool = "iptables-legacy-save" if family == 4 else "ip6tables-legacy-save"
        text = self.exec(tool).stdout.decode()
        return normalize_save(text)

    def nft_ruleset(self) -> str:
        """The node's nftables ruleset as nft lists it (handles and counters are not shown)."""
        return self.exec("nft", "list", "ruleset").stdout.decode()

    def links(self) -> list[str]:
        data = json.loads(self.exec("ip", "-j", "link", "show").stdout or b"[]")
        return sorted(link["ifname"] for link in data)

    def reservations(self, network: str) -> list[str]:
        path = os.path.join(self.data_dir, network)
        if not os.path.isdir(path):
            return []
        return sorted(n for n in os.listdir(path) if n not in ("lock",) and not n.startswith("last_reserved_ip"))


def normalize_save(text: str) -> str:
    """iptables-save output without comments and with zeroed chain counters, for comparisons."""
    import re  # noqa: PLC0415

    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(re.sub(r"\[\d+:\d+\]$", "[0:0]", line) for line in lines)


def install_plugins(dest: str) -> None:
    """Install our launchers into ``dest`` with the project's own installer."""
    sh(PYTHON, "-m", "cnictl.cli", "install", "--dest", dest, "--no-helper", env=dict(os.environ, PYTHONPATH=REPO))


@contextmanager
def node_env(tag: str, external: bool = True) -> Iterator[Node]:
    """A node namespace (lo up, forwarding on, optional external host on TEST-NET-2) and a temp dir."""
    namespaces = Namespaces(unique_prefix(tag))
    work = tempfile.mkdtemp(prefix=f"pycni-{tag}-")
    try:
        ns = namespaces.add("node")
        bin_dir = os.path.join(work, "bin")
        os.makedirs(bin_dir)
        install_plugins(bin_dir)
        node = Node(ns=ns, namespaces=namespaces, bin_dir=bin_dir, work=work)
        os.makedirs(node.netconf_dir)
        if external:
            node.external = _add_external_host(namespaces, ns)
        yield node
    finally:
        namespaces.close()
        shutil.rmtree(work, ignore_errors=True)


def _add_external_host(namespaces: Namespaces, node_ns: str) -> str:
    ext = namespaces.add("ext")
    node_if, ext_if = "ext0", "up0"
    ns_exec(node_ns, "ip", "link", "add", node_if, "type", "veth", "peer", "name", ext_if, "netns", ext)
    ns_exec(node_ns, "ip", "addr", "add", f"{EXTERNAL_NET}.1/24", "dev", node_if)
    ns_exec(node_ns, "ip", "addr", "add", f"{EXTERNAL_NET6}1/64", "dev", node_if, "nodad")
    ns_exec(node_ns, "ip", "link", "set", node_if, "up")
    ns_exec(ext, "ip", "addr", "add", f"{EXTERNAL_NET}.2/24", "dev", ext_if)
    ns_exec(ext, "ip", "addr", "add", f"{EXTERNAL_NET6}2/64", "dev", ext_if, "nodad")
    ns_exec(ext, "ip", "link", "set", ext_if, "up")
    # The external host knows nothing about container subnets: only masqueraded traffic can return.
    ns_exec(ext, "ip", "route", "add", "default", "via", f"{EXTERNAL_NET}.1")
    ns_exec(ext, "ip", "-6", "route", "add", "default", "via", f"{EXTERNAL_NET6}1")
    return ext


# --- traffic -------------------------------------------------------------------------------------

_SERVER = r"""
import socket, sys, os
proto, port, fam = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = socket.AF_INET6 if fam == 6 else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if fam == 6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(("::" if fam == 6 else "0.0.0.0", port))
tag = os.environ.get("TAG", "srv")
if proto == "tcp":
    s.listen(64)
print("ready", flush=True)
while True:
    if proto == "tcp":
        c, peer = s.accept()
        c.recv(100)
        c.sendall(f"{tag} {peer[0]}".encode())
        c.close()
    else:
        data, peer = s.recvfrom(100)
        s.sendto(f"{tag} {peer[0]}".encode(), peer)
"""

_CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[4]) if len(sys.argv) > 4 else 3)
try:
    if proto == "tcp":
        s.connect((host, port)); s.sendall(b"hi"); print(s.recv(100).decode())
    else:
        for _ in range(3):
            s.sendto(b"hi", (host, port))
            try:
                print(s.recvfrom(100)[0].decode()); break
            except socket.timeout:
                continue
        else:
            print("TIMEOUT"); sys.exit(1)
except OSError as e:
    print("ERROR", e); sys.exit(1)
"""


class Server:
    """A TCP or UDP server in a namespace that answers with its tag and the peer address it saw."""

    def __init__(self, ns: str, proto: str, port: int, family: int = 4, tag: str = "srv") -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, PYTHON, "-c", _SERVER, proto, str(port), str(family)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, TAG=tag))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            self.proc.kill()
            raise AssertionError(f"server did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@contextmanager
def server(ns: str, proto: str, port: int, family: int = 4, tag: str = "srv") -> Iterator[Server]:
    srv = Server(ns, proto, port, family, tag)
    try:
        yield srv
    finally:
        srv.stop()


def request(ns: str, proto: str, host: str, port: int, timeout: float = 3) -> str:
    """What the server answered (``"<tag> <peer address>"``), or ``"ERROR ..."``/``"TIMEOUT"``."""
    proc = ns_exec(ns, PYTHON, "-c", _CLIENT, proto, host, str(port), str(timeout), check=False)
    return proc.stdout.decode().strip() or proc.stderr.decode().strip()


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
