"""The demo end to end, on both backends: every traffic path passes and the node is left as it was."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "demo.py")


@pytest.mark.parametrize("conflist", ["bridge", "ptp"])
@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_demo_passes_and_leaves_the_node_clean(backend: str, conflist: str) -> None:
    proc = subprocess.run([sys.executable, DEMO, "--backend", backend, "--conflist", conflist], capture_output=True,
                          timeout=300, check=False)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")
    assert "9 passed, 0 failed" in out
    assert "identical: nft list ruleset" in out and "identical: iptables-legacy-save" in out
    if backend == "nftables":
        assert "table ip cni_hostport" in out and "table inet cni_plugins_masquerade" in out
