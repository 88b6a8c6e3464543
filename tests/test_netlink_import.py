"""Importing the netlink package must stay cheap: it runs in every short-lived plugin process."""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NETLINK_MODULES = "netlink.rtnl, netlink.netns, netlink.sysctl"
# Modules the library itself may pull in beyond a bare interpreter's start-up set.
ALLOWED_NEW_MODULES = {"__future__", "_socket", "errno", "struct", "_struct"}
IMPORT_BUDGET_US = 20_000  # typically ~2 ms; the margin absorbs slow, loaded CI machines


def _python(code: str, *flags: str, pycache: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    # Real installs have compiled bytecode; a private cache gives us that without
    # writing __pycache__ folders into the source tree.
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, *flags, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )


def _loaded_modules(code: str, pycache: Path) -> set[str]:
    out = _python(f"{code}\nimport sys\nprint('\\n'.join(sys.modules))", pycache=pycache).stdout
    return set(out.split())


def test_import_pulls_in_no_heavy_modules(tmp_path: Path) -> None:
    baseline = _loaded_modules("pass", tmp_path)
    after = _loaded_modules(f"import {NETLINK_MODULES}", tmp_path)
    new = {name for name in after - baseline if name != "netlink" and not name.startswith("netlink.")}
    assert new <= ALLOWED_NEW_MODULES, f"unexpected imports: {sorted(new - ALLOWED_NEW_MODULES)}"


def _netlink_import_microseconds(pycache: Path) -> int:
    """Cumulative -X importtime of the top-level netlink imports (dependencies included)."""
    stderr = _python(f"import {NETLINK_MODULES}", "-X", "importtime", pycache=pycache).stderr
    total = 0
    for line in stderr.splitlines():
        # "import time:  self [us] | cumulative | imported package"; top level = no indent.
        fields = line.split("|")
        if len(fields) == 3 and fields[2].startswith(" netlink"):
            total += int(fields[1])
    return total


@pytest.mark.timing
def test_import_time_is_a_few_milliseconds(tmp_path: Path) -> None:
    _python(f"import {NETLINK_MODULES}", pycache=tmp_path)  # compile once, like an install does
    best = min(_netlink_import_microseconds(tmp_path) for _ in range(5))
    assert 0 < best < IMPORT_BUDGET_US, f"netlink import took {best} us"
