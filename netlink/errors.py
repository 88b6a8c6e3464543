"""The one exception type the library raises for failures reported by the kernel."""

from __future__ import annotations


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` is the kernel's (positive) errno.

    Being an ``OSError`` subclass, ``err.errno`` and ``err.strerror`` work as usual;
    ``strerror`` holds a message naming the operation, the errno text and, when the
    kernel supplied one, its extended-ack explanation.
    """

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(errno, message)
