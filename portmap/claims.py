"""Who holds which hostPort on this node: one small claim file per (family, protocol, hostIP, port).

Two containers asking for the same hostPort is a runtime or user error the reference silently lets
the first container win (its entry rule comes first in ``CNI-HOSTPORT-DNAT``). We keep exactly that
outcome — taking a running service's port away from it would be worse — but say so: the second ADD
logs a warning naming the container that holds the port, and the claim passes to nobody else until
the holder's DEL releases it. Claims are advisory; the rules are what the kernel follows.

    <stateDir>/portmap-claims/<family>-<protocol>-<hostIP or any>-<port>   containing   network/containerID/ifname
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cni.records import Attachment
    from portmap.config import PortMapping

CLAIMS_DIR = "portmap-claims"


def _key(family: int, mapping: PortMapping) -> str:
    host_ip = mapping.host_ip_for(family) or "any"
    return f"{family}-{mapping.protocol}-{host_ip.replace(':', '_')}-{mapping.hostPort}"


def _owner(att: Attachment) -> str:
    return f"{att.network}/{att.container_id}/{att.ifname}"


def claim(root: str, att: Attachment, families: list[int], mappings: list[PortMapping]) -> tuple[list[str], list[str]]:
    """Claim each mapping's port: (claim keys now held by ``att``, conflicts with other holders, logged)."""
    directory = os.path.join(root, CLAIMS_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    me = _owner(att)
    held: list[str] = []
    conflicts = []
    for family in families:
        for mapping in mappings:
            if mapping.host_ip_for(family) is None:
                continue
            key = _key(family, mapping)
            holder = _take(os.path.join(directory, key), me)
            if holder in (None, me):
                held.append(key)
            else:
                conflicts.append(f"{mapping.protocol}/{mapping.hostPort} (IPv{family}) is already mapped by {holder}")
    for text in conflicts:
        print(f"portmap: warning: hostPort conflict: {text}; the earlier container keeps receiving the traffic",
              file=sys.stderr)
    return held, conflicts


def _take(path: str, me: str) -> str | None:
    """Create the claim for ``me``; the current holder when someone else has it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError:
            return None
    try:
        os.write(fd, me.encode())
    finally:
        os.close(fd)
    return None


def release(root: str, att: Attachment, keys: list[str]) -> None:
    """Drop the claims ``keys`` if ``att`` still holds them (idempotent)."""
    directory = os.path.join(root, CLAIMS_DIR)
    me = _owner(att)
    for key in keys:
        if "/" in key or key.startswith("."):
            continue  # not one of ours: a record is data, never a path to follow
        path = os.path.join(directory, key)
        try:
            with open(path) as f:
                if f.read().strip() != me:
                    continue
            os.unlink(path)
        except OSError:
            continue
