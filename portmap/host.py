"""portmap's non-iptables work on the node: route_localnet and UDP conntrack flushing."""
from __future__ import annotations

import os
import sys

CONNTRACK_TIMEOUT = 5.0


def enable_route_localnet(container_ip: str) -> None:
    """Let 127.0.0.1:hostPort reach the container: set route_localnet on the interface routing to it.

    Like the reference, a missing route is ignored; failing to write the sysctl fails ADD.
    """
    from netlink import sysctl  # noqa: PLC0415
    from netlink.errors import NetlinkError  # noqa: PLC0415
    from netlink.rtnl import Netlink  # noqa: PLC0415

    with Netlink.open() as nl:
        try:
            route = nl.route_get(container_ip)
        except NetlinkError:
            return
        if route.oif is None:
            return
        link = nl.link_by_index(route.oif)
    if link is not None:
        sysctl.write(f"net/ipv4/conf/{link.name}/route_localnet", "1")


def flush_udp_conntrack(family: int, host_ports: list[int]) -> None:
    """Forget UDP flows to these host ports so they pick up the current DNAT (and none points at a
    container that is gone). Failures are logged, never fatal, as in the reference."""
    if not host_ports:
        return
    import shutil  # noqa: PLC0415 - only UDP mappings need them; subprocess costs ~2 ms to import
    import subprocess  # noqa: PLC0415

    tool = shutil.which("conntrack", path=os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin")
    if tool is None:
        print("portmap: conntrack tool not found; stale UDP flows are not flushed", file=sys.stderr)
        return
    for port in host_ports:
        try:
            proc = subprocess.run([tool, "-D", "-f", "ipv6" if family == 6 else "ipv4", "-p", "udp",
                                   "--orig-port-dst", str(port)], capture_output=True,
                                  timeout=CONNTRACK_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"portmap: conntrack flush for udp/{port} failed: {exc}", file=sys.stderr)
            continue
        # exit 1 with "0 flow entries have been deleted" just means there was nothing to flush
        if proc.returncode not in (0, 1):
            print(f"portmap: conntrack flush for udp/{port}: {proc.stderr.decode(errors='replace').strip()}",
                  file=sys.stderr)
