"""Real container runtimes on whole conflists of ours: podman 4 (CNI backend) and containerd's ctr.

A runtime runs inside a node network namespace the test creates, and inside a private mount
namespace held by a sleeping "sandbox" process, where ``/run``, ``/var/lib`` and
``/sys/fs/cgroup`` are fresh tmpfs mounts: the network namespace files podman bind-mounts under
``/run/netns``, the runtimes' state, and libcni's result cache under ``/var/lib/cni`` all stay
private to the test, and ``/usr/lib/cni`` (the Debian reference plugins) is hidden, so no reference
plugin can stand in for one of ours. For ctr, which knows only /etc/cni/net.d and /opt/cni/bin,
/etc and /opt become overlays there with the test's directories bound in. Containers run without
cgroups (crun, ``--cgroup-manager=disabled``): the node's mount namespace has no hierarchy to give.
Images are built locally from Debian's ``busybox-static`` (no registry is reachable). Every plugin
a conflist names must be installed and answer VERSION, else the test skips, naming the plugin.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cnictl import config as cnictl_config
from cnictl.install import PLUGIN_ENTRIES
from tests.netenv import EXTERNAL_NET, PYTHON, REPO, Node, node_env, ns_exec, request, server, sh, wait_for

EXAMPLES = os.path.join(REPO, "examples")
BUSYBOX = "/bin/busybox"  # Debian's busybox-static: one static binary, every applet
IMAGE = "localhost/pycni-busybox:test"
PAGE = "hello from a pycni network"
CONTAINER_PORT = 8080
HOST_PORT = 8081
NODE_IP = f"{EXTERNAL_NET}.1"  # the node's address towards the external host (tests.netenv)
EXTERNAL_HOST, EXTERNAL_PORT = f"{EXTERNAL_NET}.2", 9000
# Lives only in the test namespaces; deliberately not podman's 10.88.0.0/16.
PODMAN_SUBNET, PODMAN_GATEWAY = "10.250.88.0/24", "10.250.88.1"
PODMAN_BRIDGE = "cni-podman0"
# Processes started in a container are limited to these (crun may only lower limits here: the
# machine withholds CAP_SYS_RESOURCE, and podman's defaults ask for more than the hard limits).
CONTAINER_ULIMITS = ["nofile=1024:1024", "nproc=1024:1024"]


# --- conflists and plugins -----------------------------------------------------------------------

def load_example(*parts: str) -> dict[str, Any]:
    with open(os.path.join(EXAMPLES, *parts), encoding="utf-8") as f:
        return json.load(f)


def plugin_types(conf: dict[str, Any]) -> list[str]:
    """Every plugin type a conflist (or single-plugin config) makes a runtime exec, IPAM included."""
    found: list[str] = []
    for plugin in conf.get("plugins", [conf]):
        found.append(plugin["type"])
        if isinstance(plugin.get("ipam"), dict) and plugin["ipam"].get("type"):
            found.append(plugin["ipam"]["type"])
    return list(dict.fromkeys(found))


def plugin_unusable(bin_dir: str, plugin: str) -> str | None:
    """Why the installed plugin cannot serve yet (not installed, or VERSION fails), or None."""
    path = os.path.join(bin_dir, plugin)
    if not os.access(path, os.X_OK):
        return f"{plugin} is not installed by `cnictl install` yet"
    proc = subprocess.run([path], input=b"{}", capture_output=True, timeout=30, check=False,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": "VERSION"})
    if proc.returncode != 0:
        why = (proc.stdout or proc.stderr).decode(errors="replace").strip().splitlines()
        return f"{plugin} does not answer VERSION yet: {why[-1] if why else proc.returncode}"
    return None


def require_plugins(bin_dir: str, conf: dict[str, Any]) -> None:
    missing = [why for plugin in plugin_types(conf) if (why := plugin_unusable(bin_dir, plugin))]
    if missing:
        pytest.skip("; ".join(missing))


def with_test_ranges(conf: dict[str, Any], ranges: list[dict[str, str]], data_dir: str) -> dict[str, Any]:
    """The example conflist with its ranges replaced by ``ranges`` (one range set each, a default
    route per family) and host-local's store moved to ``data_dir``; everything else as shipped."""
    conf = json.loads(json.dumps(conf))
    ipam = conf["plugins"][0]["ipam"]
    ipam["ranges"] = [[r] for r in ranges]
    ipam["routes"] = [{"dst": "::/0" if ":" in r["subnet"] else "0.0.0.0/0"} for r in ranges]
    ipam["dataDir"] = data_dir
    return conf


def example_files() -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), EXAMPLES) for d, _, fs in os.walk(EXAMPLES)
                  for f in fs if f.endswith((".conflist", ".conf")))


@pytest.mark.parametrize("name", example_files())
def test_every_example_is_valid_and_names_only_our_plugins(name: str) -> None:
    net = cnictl_config.load_file(os.path.join(EXAMPLES, name))
    assert net.plugins
    types = [t for plugin in net.plugins for t in plugin_types(plugin)]
    assert set(types) <= set(PLUGIN_ENTRIES), set(types) - set(PLUGIN_ENTRIES)


def test_runtime_examples_keep_the_shape_the_runtimes_ship() -> None:
    podman = load_example("podman", "87-podman-bridge.conflist")
    assert podman["name"] == "podman"  # podman's default network is the one named "podman"
    assert [p["type"] for p in podman["plugins"]] == ["bridge", "portmap", "firewall", "tuning"]
    bridge = podman["plugins"][0]
    assert (bridge["bridge"], bridge["ipMasq"], bridge["ipam"]["type"]) == ("cni-podman0", True, "host-local")
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]
    containerd = load_example("containerd", "10-containerd-net.conflist")
    assert [p["type"] for p in containerd["plugins"]] == ["bridge", "portmap"]
    assert containerd["plugins"][1]["capabilities"] == {"portMappings": True}
    assert load_example("containerd", "99-loopback.conf")["type"] == "loopback"


# --- a local image -------------------------------------------------------------------------------

def busybox_rootfs(path: str, applets: tuple[str, ...] = ("sh", "httpd", "nc", "printf", "sleep", "cat", "ip")) -> None:
    """A tarball of a tiny root file system: the static busybox, its applets, and /www/index.html."""
    def add(tar: tarfile.TarFile, name: str, kind: bytes, data: bytes = b"", mode: int = 0o755,
            target: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.size = kind, mode, target, len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "www", "etc", "tmp", "proc", "sys", "dev"):
            add(tar, directory, tarfile.DIRTYPE)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in applets:
            add(tar, f"bin/{applet}", tarfile.SYMTYPE, target="busybox")
        add(tar, "www/index.html", tarfile.REGTYPE, f"{PAGE}\n".encode(), 0o644)
        add(tar, "etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/:/bin/sh\n", 0o644)
        add(tar, "etc/group", tarfile.REGTYPE, b"root:x:0:\n", 0o644)


def oci_archive(rootfs_tar: str, path: str, name: str, cmd: list[str]) -> None:
    """An OCI image layout tarball (what ``ctr images import`` reads) of one layer, ``rootfs_tar``."""
    import hashlib  # noqa: PLC0415

    with open(rootfs_tar, "rb") as f:
        layer = f.read()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    image_config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_descriptor = {"mediaType": "application/vnd.oci.image.config.v1+json",
                         "digest": "sha256:" + hashlib.sha256(image_config).hexdigest(), "size": len(image_config)}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": len(layer)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}).encode()

    def add(tar: tarfile.TarFile, member: str, data: bytes) -> None:
        info = tarfile.TarInfo(member)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", index)
        for blob in (layer, image_config, manifest):
            add(tar, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob)


def busybox_is_static() -> bool:
    if not os.path.isfile(BUSYBOX):
        return False
    with open(BUSYBOX, "rb") as f:
        head = f.read(4096)
    return head[:4] == b"\x7fELF" and b"ld-linux" not in head  # no program interpreter: static


# --- a private mount namespace inside the node ---------------------------------------------------

_SANDBOX_SETUP = r"""
set -e
mount -t tmpfs -o mode=755 pycni-run /run
mount -t tmpfs -o mode=755 pycni-varlib /var/lib
mount -t tmpfs -o mode=755 pycni-cgroup /sys/fs/cgroup
if [ -d /usr/lib/cni ]; then mount -t tmpfs -o mode=755,ro pycni-no-reference /usr/lib/cni; fi
"""
_SANDBOX_READY = """
echo ready
exec sleep infinity
"""


def default_cni_dirs_setup(work: str, conf_dir: str, bin_dir: str) -> str:
    """Sandbox setup for a runtime that knows only /etc/cni/net.d and /opt/cni/bin: /etc and /opt
    become overlays (upper layers in ``work``) with our directories bound at those paths."""
    lines = []
    for top in ("etc", "opt"):
        upper, scratch = os.path.join(work, f"{top}-upper"), os.path.join(work, f"{top}-work")
        os.makedirs(upper)
        os.makedirs(scratch)
        lines.append(f"mount -t overlay -o lowerdir=/{top},upperdir={upper},workdir={scratch} pycni-{top} /{top}")
    lines += ["mkdir -p /etc/cni/net.d /opt/cni/bin",
              f"mount --bind {conf_dir} /etc/cni/net.d", f"mount --bind {bin_dir} /opt/cni/bin"]
    return "\n".join(lines) + "\n"


class Sandbox:
    """A process in the node's network namespace holding a private mount namespace of its own.

    Commands run in both namespaces through nsenter, so the mounts a runtime makes (podman's netns
    bind mounts) are seen by every later command of the test and by nothing outside it.
    """

    def __init__(self, node: Node, extra_setup: str = "") -> None:
        self.node = node
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", node.ns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", _SANDBOX_SETUP + extra_setup + _SANDBOX_READY],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            self.proc.kill()
            raise AssertionError(f"sandbox did not start: {self.proc.stderr.read() if self.proc.stderr else b''!r}")
        # ip netns exec, unshare and sh all exec in place: the Popen pid is the sleeping holder.

    def run(self, *args: str, env: dict[str, str], check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[bytes]:
        return sh("nsenter", f"--target={self.proc.pid}", "--mount", "--net", "--", *args,
                  env=env, check=check, timeout=timeout)

    def popen(self, *args: str, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        """A long-running command (a daemon, a foreground container), its output into ``log``."""
        with open(log, "ab") as out:
            return subprocess.Popen(["nsenter", f"--target={self.proc.pid}", "--mount", "--net", "--", *args],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)

    def path(self, inside: str) -> str:
        """A path of the sandbox's mount namespace, as seen from outside."""
        return f"/proc/{self.proc.pid}/root{inside}"

    def close(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


# --- podman ----------------------------------------------------------------------------------------

class Podman:
    """podman with its CNI backend, every path (config, storage, plugins, state) in the test's work dir."""

    def __init__(self, node: Node, sandbox: Sandbox) -> None:
        self.node, self.sandbox = node, sandbox
        work = os.path.join(node.work, "podman")
        self.root, self.runroot, self.tmp = (os.path.join(work, d) for d in ("root", "runroot", "tmp"))
        for directory in (self.root, self.runroot, self.tmp):
            os.makedirs(directory)
        self.conf_path = os.path.join(work, "containers.conf")
        self.storage_conf_path = os.path.join(work, "storage.conf")
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "CONTAINERS_CONF": self.conf_path, "CONTAINERS_STORAGE_CONF": self.storage_conf_path,
                    "PYCNI_STATE_DIR": node.state_dir, "TMPDIR": self.tmp, "HOME": work}
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(self.containers_conf())
        with open(self.storage_conf_path, "w", encoding="utf-8") as f:
            f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n')

    def containers_conf(self) -> str:
        # conmon runs `podman container cleanup` (the CNI DEL when a container stops) with only
        # conmon_env_vars: without CONTAINERS_CONF it would look for plugins in the default dirs.
        conmon_env = [f"{k}={v}" for k, v in self.env.items() if k != "HOME"]
        return "\n".join([
            "[containers]",
            'ipcns = "private"',  # no /dev/shm mount of podman's own per container
            'cgroups = "disabled"',  # the node's mount namespace has no cgroup hierarchy to give crun
            f"default_ulimits = {json.dumps(CONTAINER_ULIMITS)}",
            "[network]",
            'network_backend = "cni"',
            f"cni_plugin_dirs = {json.dumps([self.node.bin_dir])}",
            f"network_config_dir = {json.dumps(self.node.netconf_dir)}",
            "[engine]",
            'cgroup_manager = "cgroupfs"',
            'events_logger = "file"',
            f"events_logfile_path = {json.dumps(os.path.join(self.tmp, 'events.log'))}",
            f"tmp_dir = {json.dumps(self.tmp)}",
            'runtime = "crun"',
            f"conmon_env_vars = {json.dumps(conmon_env)}",
            "",
        ])

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = self.sandbox.run("podman", "--root", self.root, "--runroot", self.runroot,
                                "--tmpdir", self.tmp, "--storage-driver", "vfs", *args,
                                env=self.env, check=check, timeout=timeout)
        return proc.stdout.decode(errors="replace").strip()

    def import_image(self, tarball: str) -> None:
        cmd = json.dumps(["/bin/httpd", "-f", "-p", str(CONTAINER_PORT), "-h", "/www"])
        self("import", "--change", f"CMD {cmd}", tarball, IMAGE)

    def run_once(self, *command: str) -> str:
        """Run ``command`` in a fresh container on the default network, removed when it exits."""
        return self("run", "--rm", IMAGE, *command, check=False)

    def address(self, container: str, network: str) -> str:
        data = json.loads(self("inspect", container))[0]
        return data["NetworkSettings"]["Networks"][network]["IPAddress"]

    def remove_everything(self) -> None:
        """Remove every container; then kill what podman could not stop (a test failed half-way)."""
        ids = self("ps", "--all", "--quiet", check=False).split()
        leftovers: list[tuple[int, str]] = []
        if ids:
            try:
                for data in json.loads(self("inspect", *ids, check=False) or "[]"):
                    pids = (data["State"].get("Pid", 0), data["State"].get("ConmonPid", 0))
                    leftovers += [(pid, start) for pid in pids if pid > 0 and (start := start_time(pid))]
            except (ValueError, KeyError, TypeError):
                pass
        self("rm", "--all", "--force", "--time", "0", check=False, timeout=60)
        for pid, start in leftovers:
            if start_time(pid) == start:  # still the same process, not a reused pid
                os.kill(pid, signal.SIGKILL)


def start_time(pid: int) -> str:
    """The process's start time (field 22 of /proc/PID/stat), "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def podman_unavailable() -> str | None:
    for tool, package in (("podman", "podman"), ("crun", "crun"), ("conmon", "conmon"), ("nsenter", "util-linux")):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install {package})"
    if not busybox_is_static():
        return f"{BUSYBOX} is not a static busybox (apt-get install busybox-static)"
    return None


# --- traffic and node state ------------------------------------------------------------------------

_HTTP_GET = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0].decode(errors="replace")
    print(body.decode().strip() if " 200 " in status else "HTTP " + status)
except OSError as e:
    print("ERROR", e)
"""


def http_get(ns: str, host: str, port: int) -> str:
    """The page a server in reach of ``ns`` serves at host:port, or what went wrong."""
    return ns_exec(ns, PYTHON, "-c", _HTTP_GET, host, str(port), check=False).stdout.decode().strip()


def http_get_from_container(run_container: Callable[..., str], host: str, port: int) -> str:
    """The page a fresh container on the network gets from host:port (through busybox nc: the
    static busybox's wget crashes)."""
    out = run_container("sh", "-c", f'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {host} {port}')
    head, _, body = out.partition("\r\n\r\n")
    return body.strip() if " 200 " in head.split("\r\n")[0] else f"NO PAGE: {out!r}"


def peer_seen_from_container(run_container: Callable[..., str], host: str, port: int) -> str:
    """What a tests.netenv server at host:port answers a fresh container: its tag and the peer it saw."""
    return run_container("sh", "-c", f"printf hi | nc -w 5 {host} {port}").strip()


def root_namespace_mentions(*needles: str) -> list[str]:
    """Lines of the machine's own links and tables naming any of ``needles`` (read-only)."""
    texts = [sh("ip", "-o", "link", "show", check=False).stdout.decode(),
             sh("ip", "-o", "addr", "show", check=False).stdout.decode(),
             sh("iptables-legacy-save", check=False).stdout.decode(),
             sh("nft", "list", "ruleset", check=False).stdout.decode()]
    return [line for text in texts for line in text.splitlines() if any(n in line for n in needles)]


def bridge_ports(node: Node, bridge: str) -> list[str]:
    data = json.loads(node.exec("ip", "-j", "link", "show", "master", bridge).stdout or b"[]")
    return sorted(link["ifname"] for link in data)


def dnat_rules(node: Node) -> list[str]:
    return [line for line in node.save(4).splitlines() if "--to-destination" in line]


def load_tables(node: Node) -> None:
    """Have the node's legacy filter and nat tables exist (empty), as on any real node, so a
    before/after comparison sees what the plugins changed, not the tables' first load."""
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        for table in ("filter", "nat"):
            node.exec(tool, "-w", "-t", table, "-S")


def node_snapshot(node: Node, network: str, cache_dir: str) -> dict[str, Any]:
    """Everything a container could leave behind on the node (``cache_dir``: the runtime's libcni cache)."""
    return {"links": node.links(), "v4": node.save(4), "v6": node.save(6),
            "nft": node.exec("nft", "list", "ruleset", check=False).stdout.decode(),
            "reservations": node.reservations(network),
            "records": sorted(os.path.relpath(os.path.join(d, f), node.state_dir)
                              for d, _, fs in os.walk(node.state_dir) for f in fs
                              if not d.startswith(os.path.join(node.state_dir, "host-local"))),
            "cni cache": sorted(os.path.relpath(os.path.join(d, f), cache_dir)
                                for d, _, fs in os.walk(cache_dir) for f in fs)}


# --- podman tests ----------------------------------------------------------------------------------

@pytest.fixture
def podman_node() -> Iterator[tuple[Node, Podman]]:
    reason = podman_unavailable()
    if reason:
        pytest.skip(reason)
    with node_env("pod") as node:
        conf = load_example("podman", "87-podman-bridge.conflist")
        require_plugins(node.bin_dir, conf)
        conf = with_test_ranges(conf, [{"subnet": PODMAN_SUBNET, "gateway": PODMAN_GATEWAY}], node.data_dir)
        with open(os.path.join(node.netconf_dir, "87-podman-bridge.conflist"), "w", encoding="utf-8") as f:
            json.dump(conf, f)
        node.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        load_tables(node)
        sandbox = Sandbox(node)
        podman = Podman(node, sandbox)
        try:
            tarball = os.path.join(node.work, "rootfs.tar")
            busybox_rootfs(tarball)
            podman.import_image(tarball)
            yield node, podman
        finally:
            podman.remove_everything()
            sandbox.close()


@pytest.mark.root
def test_podman_runs_a_published_container_on_the_default_conflist(podman_node: tuple[Node, Podman]) -> None:
    node, podman = podman_node
    network = "podman"
    assert podman("info", "--format", "{{.Host.NetworkBackend}}") == "cni"
    assert network in podman("network", "ls", "--format", "{{.Name}}").split()
    before = node_snapshot(node, network, podman.sandbox.path("/var/lib/cni"))

    podman("run", "--detach", "--name", "web", "--publish", f"{HOST_PORT}:{CONTAINER_PORT}", IMAGE)
    web_ip = podman.address("web", network)
    assert web_ip.startswith(PODMAN_SUBNET.rsplit(".", 1)[0] + ".")
    assert bridge_ports(node, PODMAN_BRIDGE) != []
    assert wait_for(lambda: http_get(node.ns, web_ip, CONTAINER_PORT) == PAGE, timeout=10)
    # The bridge, the addresses and the rules exist in the node namespace only.
    assert root_namespace_mentions(PODMAN_BRIDGE, PODMAN_SUBNET.rsplit(".", 1)[0] + ".") == []

    def served_everywhere() -> None:
        assert http_get(node.ns, "127.0.0.1", HOST_PORT) == PAGE  # from the node, via localhost
        assert http_get(node.ns, NODE_IP, HOST_PORT) == PAGE  # from the node, via its own address
        assert http_get(node.external, NODE_IP, HOST_PORT) == PAGE  # from outside the node
        for target in (PODMAN_GATEWAY, NODE_IP):  # from another container, through the hostPort
            assert http_get_from_container(podman.run_once, target, HOST_PORT) == PAGE, target

    served_everywhere()
    with server(node.external, "tcp", EXTERNAL_PORT):  # outbound: masqueraded behind the node
        assert peer_seen_from_container(podman.run_once, EXTERNAL_HOST, EXTERNAL_PORT) == f"srv {NODE_IP}"
    assert len(dnat_rules(node)) == 1  # the client containers published nothing and left nothing
    assert len(node.reservations(network)) == 1

    podman("restart", "--time", "0", "web")
    restarted_ip = podman.address("web", network)
    assert wait_for(lambda: http_get(node.ns, restarted_ip, CONTAINER_PORT) == PAGE, timeout=10)
    served_everywhere()
    assert len(dnat_rules(node)) == 1 and restarted_ip in dnat_rules(node)[0]
    assert node.reservations(network) == [restarted_ip]
    assert len(bridge_ports(node, PODMAN_BRIDGE)) == 1

    podman("rm", "--force", "--time", "0", "web")
    after = node_snapshot(node, network, podman.sandbox.path("/var/lib/cni"))
    # Like the reference bridge plugin, ours keeps the bridge once made; nothing else remains.
    assert after["links"] == sorted(before["links"] + [PODMAN_BRIDGE])
    assert bridge_ports(node, PODMAN_BRIDGE) == []
    assert {k: v for k, v in after.items() if k != "links"} == {k: v for k, v in before.items() if k != "links"}
    assert http_get(node.ns, "127.0.0.1", HOST_PORT).startswith("ERROR")


# --- containerd (ctr) ----------------------------------------------------------------------------

# ctr knows no other CNI directories than /etc/cni/net.d and /opt/cni/bin (gocni's defaults), loads
# only the first network there (gocni.WithDefaultConf: never the loopback config, which only the
# CRI plugin execs) and passes no port mappings; it tears a container's network down only when it
# ran in the foreground, after the task exits.
CTR_SUBNET, CTR_GATEWAY = "10.250.89.0/24", "10.250.89.1"
CTR_SUBNET6 = "fd00:250:89::/64"
CTR_BRIDGE = "cni0"
# The runc shim execs this "runc": crun without cgroups, as for podman (no hierarchy to give it).
_RUNC_WRAPPER = "#!/bin/sh\nexec /usr/bin/crun --cgroup-manager=disabled \"$@\"\n"


class Containerd:
    """A containerd daemon of the test's own (state, sockets and images in its work dir) and ctr."""

    def __init__(self, node: Node, sandbox: Sandbox, work: str) -> None:
        self.node, self.sandbox, self.work = node, sandbox, work
        self.socket = os.path.join(work, "containerd.sock")
        self.runc = os.path.join(work, "runc")
        with open(self.runc, "w", encoding="utf-8") as f:
            f.write(_RUNC_WRAPPER)
        os.chmod(self.runc, 0o755)
        config = os.path.join(work, "config.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write("\n".join([
                "version = 2",
                f'root = "{work}/root"',
                f'state = "{work}/state"',
                # The CRI plugin would load /etc/cni/net.d itself; the test drives ctr only.
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                "[grpc]", f'  address = "{self.socket}"',
                '[plugins."io.containerd.internal.v1.opt"]', f'  path = "{work}/opt"', ""]))
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "PYCNI_STATE_DIR": node.state_dir}
        self.log = os.path.join(work, "containerd.log")
        self.daemon = sandbox.popen("containerd", "--config", config, env=self.env, log=self.log)
        self.foreground: dict[str, subprocess.Popen[bytes]] = {}
        if not wait_for(lambda: self.ctr("version", check=False).returncode == 0, timeout=20):
            with open(self.log, encoding="utf-8", errors="replace") as f:
                raise AssertionError(f"containerd did not start: {f.read()[-2000:]}")

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return self.sandbox.run("ctr", "--address", self.socket, "--namespace", "pycni", *args,
                                env=self.env, check=check, timeout=timeout)

    def run_args(self, name: str) -> list[str]:
        return ["run", "--cni", "--rm", "--snapshotter", "native", "--runc-binary", self.runc,
                "--cgroup", "", IMAGE, name]

    def start(self, name: str) -> None:
        """Run the image's server in the foreground of a ctr kept in the background."""
        log = os.path.join(self.work, f"{name}.log")
        self.foreground[name] = self.sandbox.popen(
            "ctr", "--address", self.socket, "--namespace", "pycni", *self.run_args(name),
            env=self.env, log=log)

    def stop(self, name: str) -> None:
        """Kill the container's task; its ctr then removes the network and the container."""
        self.ctr("task", "kill", "--signal", "SIGKILL", name)
        self.foreground.pop(name).wait(timeout=60)

    def run_once(self, *command: str) -> str:
        return self.ctr(*self.run_args(f"once{len(os.listdir(self.work))}"), *command,
                        check=False).stdout.decode(errors="replace")

    def close(self) -> None:
        for name in list(self.foreground):
            self.ctr("task", "kill", "--signal", "SIGKILL", name, check=False, timeout=30)
            try:
                self.foreground.pop(name).wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.daemon.terminate()
        try:
            self.daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()


def containerd_unavailable() -> str | None:
    for tool, package in (("containerd", "containerd"), ("ctr", "containerd"),
                          ("containerd-shim-runc-v2", "containerd"), ("crun", "crun"), ("nsenter", "util-linux")):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install {package})"
    if not busybox_is_static():
        return f"{BUSYBOX} is not a static busybox (apt-get install busybox-static)"
    with open("/proc/filesystems", encoding="ascii") as f:
        if "overlay" not in f.read():
            return "the kernel has no overlay file system (the sandbox's /etc and /opt need it)"
    return None


@pytest.fixture
def containerd_node() -> Iterator[tuple[Node, Containerd]]:
    reason = containerd_unavailable()
    if reason:
        pytest.skip(reason)
    with node_env("ctrd") as node:
        conf = load_example("containerd", "10-containerd-net.conflist")
        require_plugins(node.bin_dir, conf)
        conf = with_test_ranges(conf, [{"subnet": CTR_SUBNET, "gateway": CTR_GATEWAY}, {"subnet": CTR_SUBNET6}],
                                node.data_dir)
        with open(os.path.join(node.netconf_dir, "10-containerd-net.conflist"), "w", encoding="utf-8") as f:
            json.dump(conf, f)
        node.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        load_tables(node)
        work = os.path.join(node.work, "containerd")
        os.makedirs(work)
        sandbox = Sandbox(node, default_cni_dirs_setup(work, node.netconf_dir, node.bin_dir))
        containerd = None
        try:
            containerd = Containerd(node, sandbox, work)
            rootfs, archive = os.path.join(node.work, "rootfs.tar"), os.path.join(node.work, "image.tar")
            busybox_rootfs(rootfs)
            oci_archive(rootfs, archive, IMAGE, ["/bin/httpd", "-f", "-p", str(CONTAINER_PORT), "-h", "/www"])
            containerd.ctr("images", "import", "--snapshotter", "native", archive)
            yield node, containerd
        finally:
            if containerd is not None:
                containerd.close()
            sandbox.close()


@pytest.mark.root
def test_ctr_runs_containers_on_the_containerd_conflist(containerd_node: tuple[Node, Containerd]) -> None:
    node, containerd = containerd_node
    network = "containerd-net"
    before = node_snapshot(node, network, containerd.sandbox.path("/var/lib/cni"))

    for round_ in ("first", "again"):  # a second container by the same name after the first is gone
        containerd.start("web")
        assert wait_for(lambda: len(node.reservations(network)) == 2, timeout=20), node.reservations(network)
        web_ip = next(ip for ip in node.reservations(network) if "." in ip)
        assert wait_for(lambda: http_get(node.ns, web_ip, CONTAINER_PORT) == PAGE, timeout=10), round_
        assert root_namespace_mentions(CTR_SUBNET.rsplit(".", 1)[0] + ".", "fd00:250:89:") == []
        assert sh("ip", "link", "show", CTR_BRIDGE, check=False).returncode != 0  # not in the machine's own
        # Another container reaches it over the bridge, and the outside world masqueraded.
        assert http_get_from_container(containerd.run_once, web_ip, CONTAINER_PORT) == PAGE
        with server(node.external, "tcp", EXTERNAL_PORT):
            assert peer_seen_from_container(containerd.run_once, EXTERNAL_HOST, EXTERNAL_PORT) == f"srv {NODE_IP}"
        assert len(node.reservations(network)) == 2  # the clients' addresses are released again
        assert len(bridge_ports(node, CTR_BRIDGE)) == 1

        containerd.stop("web")
        after = node_snapshot(node, network, containerd.sandbox.path("/var/lib/cni"))
        assert after["links"] == sorted(before["links"] + [CTR_BRIDGE])
        assert bridge_ports(node, CTR_BRIDGE) == []
        assert {k: v for k, v in after.items() if k != "links"} == {k: v for k, v in before.items() if k != "links"}


@pytest.mark.root
def test_containerd_cri_sequence_on_the_example_files() -> None:
    """What containerd's CRI plugin does for a pod sandbox, through cnictl: the loopback config on
    ``lo``, then the default network on eth0 with the pod's hostPorts (ctr does neither), and the
    DELs in reverse."""
    with node_env("cri") as node:
        network_conf = load_example("containerd", "10-containerd-net.conflist")
        loopback_conf = load_example("containerd", "99-loopback.conf")
        require_plugins(node.bin_dir, network_conf)
        require_plugins(node.bin_dir, loopback_conf)
        network_conf = with_test_ranges(network_conf, [{"subnet": CTR_SUBNET, "gateway": CTR_GATEWAY},
                                                       {"subnet": CTR_SUBNET6}], node.data_dir)
        for name, conf in (("10-containerd-net.conflist", network_conf), ("99-loopback.conf", loopback_conf)):
            with open(os.path.join(node.netconf_dir, name), "w", encoding="utf-8") as f:
                json.dump(conf, f)
        node.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        load_tables(node)
        network = network_conf["name"]
        before = node_snapshot(node, network, node.cache_dir)
        pod = node.container("pod")
        ns_exec(pod, "ip", "link", "set", "lo", "down")

        node.cnictl("add", loopback_conf["name"], pod, "--ifname", "lo")
        node.cnictl("add", network, pod, "--publish", f"{HOST_PORT}:{CONTAINER_PORT}/tcp")
        with server(pod, "tcp", CONTAINER_PORT):
            assert request(pod, "tcp", "127.0.0.1", CONTAINER_PORT) == "srv 127.0.0.1"  # lo is up
            assert request(node.external, "tcp", NODE_IP, HOST_PORT) == f"srv {EXTERNAL_HOST}"
            assert request(node.ns, "tcp", "127.0.0.1", HOST_PORT).startswith("srv ")

        node.cnictl("del", network, pod)
        node.cnictl("del", loopback_conf["name"], pod, "--ifname", "lo")
        assert "UP" not in json.loads(ns_exec(pod, "ip", "-j", "link", "show", "lo").stdout)[0]["flags"]
        after = node_snapshot(node, network, node.cache_dir)
        assert after["links"] == sorted(before["links"] + [CTR_BRIDGE])
        assert {k: v for k, v in after.items() if k != "links"} == {k: v for k, v in before.items() if k != "links"}
