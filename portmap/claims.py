"""Who holds which hostPort on this node: one small claim file per (family, protocol, hostIP, port).

Two containers asking for the same hostPort is a runtime or user error the reference silently lets
the first container win (its entry rule comes first in ``CNI-HOSTPORT-DNAT``). We keep exactly that
outcome — taking a running service's port away from it would be worse — but say so: the second ADD
logs a warning naming the container that holds the port, and the claim passes to nobody else until
the holder's DEL releases it. Claims are advisory; the rules are what the kernel follows.

    <stateDir>/portmap-claims/<family>-<protocol>-<hostIP or any>-<port>   containing
    network/containerID/ifname
    boot=<boot ID> netns=<st_dev>:<st_ino> cookie=<netns cookie>

The second line is the claim's origin (``cni.records.current_origin``): a claim made in another boot
or another network namespace is *foreign*, its rules are gone with that namespace's tables, and the
next ADD that wants the port takes the claim over instead of yielding to a dead holder. Claims
written by earlier versions have no second line: their origin is unknown and they are trusted as
before. Taking over and releasing happen under an flock of the claims directory, so a takeover, a
GC releasing the dead holder's claim and another takeover never remove each other's new claim.

The directory is opened without following a symlink and its files with O_NOFOLLOW: nothing planted
there redirects a write or an unlink. A claim that cannot be made is a warning, never a failed ADD.
"""
from __future__ import annotations

import fcntl
import os
import stat
import sys

from cni import log
from cni.files import open_dir_below
from cni.records import current_origin, same_origin

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import Attachment
    from portmap.config import PortMapping

CLAIMS_DIR = "portmap-claims"


def _key(family: int, mapping: PortMapping) -> str:
    host_ip = mapping.host_ip_for(family) or "any"
    return f"{family}-{mapping.protocol}-{host_ip.replace(':', '_')}-{mapping.hostPort}"


def _owner(att: Attachment) -> str:
    return f"{att.network}/{att.container_id}/{att.ifname}"


def _origin_line(origin: dict[str, Any]) -> str:
    fields = (("boot", "bootID"), ("netns", "netns"), ("cookie", "netnsCookie"))
    return " ".join(f"{name}={origin[key]}" for name, key in fields if key in origin)


def _parse_origin(line: str) -> dict[str, Any] | None:
    """The origin on a claim's second line; None (unknown) for a claim without one."""
    origin: dict[str, Any] = {}
    for word in line.split():
        name, _, value = word.partition("=")
        if name == "boot":
            origin["bootID"] = value
        elif name == "netns":
            origin["netns"] = value
        elif name == "cookie" and value.isdigit():
            origin["netnsCookie"] = int(value)
    return origin or None


def claim(root: str, att: Attachment, families: list[int], mappings: list[PortMapping]) -> tuple[list[str], list[str]]:
    """Claim each mapping's port: (claim keys now held by ``att``, conflicts with other holders, logged)."""
    me = _owner(att)
    origin = current_origin()
    held: list[str] = []
    conflicts = []
    try:
        dir_fd = open_dir_below(root, [CLAIMS_DIR], create=True, mode=0o700)
    except OSError as exc:
        print(f"portmap: warning: hostPort claims cannot be recorded in {os.path.join(root, CLAIMS_DIR)}: {exc}",
              file=sys.stderr)
        log.warning("hostPort claims not recorded", msg=f"cannot open {os.path.join(root, CLAIMS_DIR)}: {exc}")
        return held, conflicts
    try:
        for family in families:
            for mapping in mappings:
                if mapping.host_ip_for(family) is None:
                    continue
                key = _key(family, mapping)
                holder = _take(dir_fd, key, me, origin)
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
        log.warning("hostPort conflict", msg=f"{text}; the earlier container keeps receiving the traffic")
    return held, conflicts


def keys(families: list[int], mappings: list[PortMapping]) -> list[str]:
    """The claim keys :func:`claim` would take: recorded before they are taken, so that a crash in
    between cannot leave a claim that no record names."""
    return [_key(family, m) for family in families for m in mappings if m.host_ip_for(family) is not None]


def release_all(root: str, att: Attachment, origin: dict[str, Any] | None = None) -> None:
    """Drop every claim ``att`` holds, found by content: for a DEL whose record is unreadable."""
    try:
        dir_fd = open_dir_below(root, [CLAIMS_DIR])
    except OSError:
        return
    try:
        names = os.listdir(dir_fd)
    finally:
        os.close(dir_fd)
    release(root, att, names, origin)


def _take(dir_fd: int, key: str, me: str, origin: dict[str, Any]) -> str | None:
    """Create the claim for ``me``; the current holder when someone else has it. A foreign claim (made
    in another boot or network namespace, even by an attachment of the same name) is taken over."""
    holder = _create(dir_fd, key, me, origin)
    if holder is None:
        return None
    name, held_origin = holder
    if not name:
        return None  # unreadable (or not a regular file): counted as held, as it always was
    if same_origin(held_origin, origin):
        return name
    with _locked(dir_fd):
        current = _holder(dir_fd, key)
        if current is not None and not same_origin(current[1], origin):
            _unlink(dir_fd, key)
        holder = _create(dir_fd, key, me, origin)
    return holder[0] or None if holder is not None else None


def _create(dir_fd: int, key: str, me: str, origin: dict[str, Any]) -> tuple[str, dict[str, Any] | None] | None:
    """Create the claim file; None when created, else who holds it (an unreadable claim: nobody)."""
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        return _holder(dir_fd, key) or ("", None)
    try:
        os.write(fd, f"{me}\n{_origin_line(origin)}\n".encode())
    finally:
        os.close(fd)
    return None


def _holder(dir_fd: int, key: str) -> tuple[str, dict[str, Any] | None] | None:
    """Who a claim names and its origin; None when it cannot be read or is not a regular file."""
    try:
        fd = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        lines = os.read(fd, 4096).decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    finally:
        os.close(fd)
    if not lines or not lines[0].strip():
        return None
    return lines[0].strip(), _parse_origin(lines[1]) if len(lines) > 1 else None


class _locked:  # noqa: N801 - used as a context manager: ``with _locked(dir_fd):``
    """An exclusive flock of the claims directory for the block."""

    def __init__(self, dir_fd: int) -> None:
        self.dir_fd = dir_fd

    def __enter__(self) -> None:
        fcntl.flock(self.dir_fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self.dir_fd, fcntl.LOCK_UN)


def _unlink(dir_fd: int, key: str) -> None:
    try:
        os.unlink(key, dir_fd=dir_fd)
    except OSError:
        pass


def holders(root: str) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """Every readable claim: key -> (``network/containerID/ifname``, origin or None when unknown)."""
    try:
        dir_fd = open_dir_below(root, [CLAIMS_DIR])
    except OSError:
        return {}
    try:
        found = {}
        for key in sorted(os.listdir(dir_fd)):
            holder = None if key.startswith(".") else _holder(dir_fd, key)
            if holder is not None:
                found[key] = holder
        return found
    finally:
        os.close(dir_fd)


def release(root: str, att: Attachment, keys: list[str], origin: dict[str, Any] | None = None) -> None:
    """Drop the claims ``keys`` if ``att`` still holds them (idempotent): made in ``origin`` (default:
    here and now; GC passes a foreign record's own), or of unknown origin."""
    me = _owner(att)
    mine = current_origin() if origin is None else origin
    try:
        dir_fd = open_dir_below(root, [CLAIMS_DIR])
    except OSError:
        return
    try:
        with _locked(dir_fd):
            for key in keys:
                if "/" in key or key.startswith("."):
                    continue  # not one of ours: a record is data, never a path to follow
                holder = _holder(dir_fd, key)
                if holder is not None and holder[0] == me and same_origin(holder[1], mine):
                    _unlink(dir_fd, key)
    finally:
        os.close(dir_fd)
