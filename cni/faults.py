"""Fault injection for crash-consistency tests: die by SIGKILL at a named point.

``PYCNI_KILL_AT=portmap.add.after-record`` makes the process kill itself when it reaches that
point, exactly as an OOM kill or a node crash would stop it there. Unset (the normal case) a
point costs one dictionary lookup.
"""
from __future__ import annotations

import os

ENV = "PYCNI_KILL_AT"

# Every point in the code, so tests can walk them all.
POINTS = (
    "bridge.add.after-record",
    "bridge.add.after-veth",
    "bridge.add.after-ipam",
    "bridge.add.after-addresses",
    "bridge.add.after-ipmasq",
    "bridge.del.after-link",
    "bridge.del.after-ipam",
    "portmap.add.after-record",
    "portmap.add.after-first-family",
    "portmap.add.after-rules",
    "portmap.del.after-rules",
    "hostlocal.add.after-reserve",
    "firewall.add.after-record",
    "firewall.add.after-first-family",
    "firewall.add.after-rules",
    "firewall.del.after-rules",
    "ptp.add.after-record",
    "ptp.add.after-veth",
    "ptp.add.after-ipam",
    "ptp.add.after-addresses",
    "ptp.add.after-ipmasq",
    "ptp.del.after-ipam",
    "hostdevice.add.after-record",
    "hostdevice.add.after-move",
    "hostdevice.add.after-ipam",
    "hostdevice.del.after-move",
    "chains.commit.before",
    "chains.commit.after",
)


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), 9)  # SIGKILL; the signal module costs ~5 ms (enum) to import
