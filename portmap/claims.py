"""Who holds which hostPort on this node: one small claim file per (family, protocol, hostIP, port).

Two containers asking for the same hostPort is a runtime or user error the reference silently lets
the first container win (its entry rule comes first in ``CNI-HOSTPORT-DNAT``). We keep exactly that
outcome — taking a running service's port away from it would be worse — but say so: the second ADD
logs a warning naming the container that holds the port, and the claim passes to nobody else until
the holder's DEL releases it. Claims are advisory; the rules are what the kernel follows.

    <stateDir>/portmap-claims/<family>-<protocol>-<hostIP or any>-<port>   containing   network/containerID/ifname

The directory is opened without following a symlink and its files with O_NOFOLLOW: nothing planted
there redirects a write or an unlink. A claim that cannot be made is a warning, never a failed ADD.
"""
from __future__ import annotations

import os
import stat
import sys

from cni.files import open_dir_below

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
    me = _owner(att)
    held: list[str] = []
    conflicts = []
    try:
        dir_fd = open_dir_below(root, [CLAIMS_DIR], create=True, mode=0o700)
    except OSError as exc:
        print(f"portmap: warning: hostPort claims cannot be recorded in {os.path.join(root, CLAIMS_DIR)}: {exc}",
              file=sys.stderr)
        return held, conflicts
    try:
        for family in families:
            for mapping in mappings:
                if mapping.host_ip_for(family) is None:
                    continue
                key = _key(family, mapping)
                holder = _take(dir_fd, key, me)
                if holder in (None, me):
                    held.append(key)
                else:
                    conflicts.append(f"{mapping.protocol}/{mapping.hostPort} (IPv{family}) is already mapped by "
                                     f"{holder}")
    finally:
        os.close(dir_fd)
    for text in conflicts:
        print(f"portmap: warning: hostPort conflict: {text}; the earlier container keeps receiving the traffic",
              file=sys.stderr)
    return held, conflicts


def keys(families: list[int], mappings: list[PortMapping]) -> list[str]:
    """The claim keys :func:`claim` would take: recorded before they are taken, so that a crash in
    between cannot leave a claim that no record names."""
    return [_key(family, m) for family in families for m in mappings if m.host_ip_for(family) is not None]


def release_all(root: str, att: Attachment) -> None:
    """Drop every claim ``att`` holds, found by content: for a DEL whose record is unreadable."""
    try:
        dir_fd = open_dir_below(root, [CLAIMS_DIR])
    except OSError:
        return
    try:
        names = os.listdir(dir_fd)
    finally:
        os.close(dir_fd)
    release(root, att, names)


def _take(dir_fd: int, key: str, me: str) -> str | None:
    """Create the claim for ``me``; the current holder when someone else has it."""
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        return _holder(dir_fd, key)
    try:
        os.write(fd, me.encode())
    finally:
        os.close(fd)
    return None


def _holder(dir_fd: int, key: str) -> str | None:
    """Who a claim names; None when it cannot be read or is not a regular file."""
    try:
        fd = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 4096).decode(errors="replace").strip() or None
    except OSError:
        return None
    finally:
        os.close(fd)


def release(root: str, att: Attachment, keys: list[str]) -> None:
    """Drop the claims ``keys`` if ``att`` still holds them (idempotent)."""
    me = _owner(att)
    try:
        dir_fd = open_dir_below(root, [CLAIMS_DIR])
    except OSError:
        return
    try:
        for key in keys:
            if "/" in key or key.startswith("."):
                continue  # not one of ours: a record is data, never a path to follow
            if _holder(dir_fd, key) == me:
                try:
                    os.unlink(key, dir_fd=dir_fd)
                except OSError:
                    continue
    finally:
        os.close(dir_fd)
