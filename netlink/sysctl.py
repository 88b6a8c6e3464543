"""Reading and writing kernel parameters under /proc/sys.

Keys are slash-separated paths below /proc/sys, e.g. ``net/ipv4/conf/cni0/route_localnet``
(not the dotted ``sysctl`` form: interface names such as ``cni0.100`` contain dots).

Everything under /proc/sys/net belongs to the network namespace of the *calling
thread* at the time the file is opened, so to change a container's settings call
these inside ``netlink.netns.enter(container_netns)``.
"""

from __future__ import annotations

import os

PROC_SYS = "/proc/sys/"


def path_of(key: str) -> str:
    """The /proc/sys file of ``key``; rejects keys that could escape /proc/sys."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid sysctl key: {key!r}")
    return PROC_SYS + key


def read(key: str) -> str:
    """The value of ``key`` with surrounding whitespace removed."""
    with open(path_of(key), encoding="ascii") as file:
        return file.read().strip()


def write(key: str, value: str | int) -> None:
    """Set ``key`` to ``value`` (one write, as the kernel parses each write separately)."""
    fd = os.open(path_of(key), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)
