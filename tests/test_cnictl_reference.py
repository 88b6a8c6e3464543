"""cnictl driving the Debian reference plugins (/usr/lib/cni) in throw-away namespaces.

Proves the runtime side against real libcni-era plugins: chaining, capability arguments, the
cache feeding DEL (portmap only cleans up when DEL gets the cached portMappings) and GC.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REFERENCE_BIN = "/usr/lib/cni"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(os.path.join(REFERENCE_BIN, "bridge")), reason="no reference plugins"),
]


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


class Node:
    def __init__(self, root: Path) -> None:
        tag = f"ctl-{os.getpid() % 100000}"
        self.ns, self.container = f"{tag}-node", f"{tag}-c1"
        self.root = root
        self.conf_dir = root / "net.d"
        self.cache_dir = root / "cache"
        self.ipam_dir = root / "ipam"

    def cnictl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = ["env", "-i", f"PATH={os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
               f"NETCONFPATH={self.conf_dir}", f"CNI_PATH={REFERENCE_BIN}", f"CNI_CACHE_DIR={self.cache_dir}",
               f"PYTHONPATH={REPO}"]
        return sh("ip", "netns", "exec", self.ns, *env, sys.executable, "-m", "cnictl", *args)

    def nat_rules(self) -> str:
        return sh("ip", "netns", "exec", self.ns, "iptables-save", "-t", "nat").stdout

    def reservations(self, network: str) -> list[str]:
        directory = self.ipam_dir / network
        return sorted(n for n in os.listdir(directory) if n[0].isdigit()) if directory.exists() else []


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.conf_dir.mkdir()
    (n.conf_dir / "10-ctl.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "ctl-ref", "plugins": [
            {"type": "bridge", "bridge": "ctlbr0", "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.123.0.0/24"}]], "dataDir": str(n.ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}))
    try:
        for ns in (n.ns, n.container):
            assert sh("ip", "netns", "add", ns).returncode == 0
        sh("ip", "-n", n.ns, "link", "set", "lo", "up")
        yield n
    finally:
        for ns in (n.container, n.ns):
            sh("ip", "netns", "del", ns)


def test_add_del_with_reference_plugins_reuses_cached_port_mappings(node: Node) -> None:
    added = node.cnictl("add", "ctl-ref", node.container, "--publish", "8080:80/tcp")
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["ips"][0]["address"] == "10.123.0.2/24"
    assert "--dport 8080 -j DNAT --to-destination 10.123.0.2:80" in node.nat_rules()
    assert node.reservations("ctl-ref") == ["10.123.0.2"]
    assert len(os.listdir(node.cache_dir / "results")) == 1

    deleted = node.cnictl("del", "ctl-ref", node.container)  # no --publish: the cache supplies it
    assert deleted.returncode == 0, deleted.stderr
    assert "--to-destination 10.123.0.2:80" not in node.nat_rules()
    assert node.reservations("ctl-ref") == []
    assert os.listdir(node.cache_dir / "results") == []


def test_gc_deletes_the_stale_attachment_through_the_reference_plugins(node: Node) -> None:
    assert node.cnictl("add", "ctl-ref", node.container).returncode == 0
    assert node.reservations("ctl-ref") == ["10.123.0.2"]
    collected = node.cnictl("gc", "ctl-ref")
    assert collected.returncode == 0, collected.stderr
    assert "GC: deleting stale attachment container cnictl-" in collected.stderr
    assert node.reservations("ctl-ref") == []


def test_reference_plugin_error_is_shown_with_code_and_message(node: Node) -> None:
    (node.conf_dir / "20-bad.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "ctl-bad", "plugins": [{"type": "portmap"}]}))
    failed = node.cnictl("add", "ctl-bad", node.container)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert 'ADD failed in plugin "portmap" (1 of 1 in network "ctl-bad")' in failed.stderr
    assert "code:    999 (internal plugin error)" in failed.stderr
    assert "msg:     must be called as chained plugin" in failed.stderr
