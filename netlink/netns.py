"""Network namespaces: switching the calling thread into one, and identifying them.

``setns(2)`` changes the namespace of the calling *thread* only; everything here is
per-thread, and ``enter`` always puts the thread back where it was. Python 3.11 has
no ``os.setns``, so it is called through ``_ctypes``, the C half of ctypes: the
``ctypes`` package itself costs a plugin exec ~3 ms to import, ``_ctypes`` well under one.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # avoids importing ``typing`` at run time; type checkers treat it as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: which kind of namespace it is (Linux >= 4.11)
CURRENT_NETNS_PATH = "/proc/thread-self/ns/net"  # this thread's, not the process's

_setns_function: Callable[[int, int], int] | None = None


def _libc_setns() -> Callable[[int, int], int]:
    """libc's ``int setns(int fd, int nstype)``, declared as ``ctypes.CDLL(None, use_errno=True).setns``
    with int arguments and result would be, from the classes ctypes builds on."""
    global _setns_function
    if _setns_function is None:
        import _ctypes

        class CInt(_ctypes._SimpleCData):  # what ctypes.c_int is
            _type_ = "i"

        class SetnsFunction(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = CInt
            _argtypes_ = (CInt, CInt)

        process_symbols = _ctypes.dlopen(None, os.RTLD_NOW)
        _setns_function = SetnsFunction(_ctypes.dlsym(process_symbols, "setns"))
    return _setns_function


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace open as ``fd``; OSError on failure."""
    if _libc_setns()(fd, nstype) != 0:
        import _ctypes

        errno = _ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def netns_fd(path: str) -> int:
    """Open a netns file (``/run/netns/NAME``, ``/proc/PID/ns/net``); the caller closes it."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def is_netns(path: str) -> bool:
    """Whether ``path`` is a network namespace file (false for missing or ordinary files)."""
    import fcntl

    try:
        fd = netns_fd(path)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # ENOTTY: not an nsfs file (e.g. an unmounted /run/netns entry)
        return False
    finally:
        os.close(fd)


def same_netns(path: str) -> bool:
    """Whether ``path`` is the network namespace the calling thread is in now."""
    target = os.stat(path)
    current = os.stat(CURRENT_NETNS_PATH)
    return (target.st_dev, target.st_ino) == (current.st_dev, current.st_ino)


class enter:  # noqa: N801 - used like a function: ``with netns.enter(path):``
    """Context manager running its block with the calling thread inside the netns at ``path``.

    The original namespace is restored on exit, whatever happens in the block. If even
    that fails the thread is stranded in the wrong namespace, which nothing can repair,
    so the OSError propagates. Re-entrant and nestable; not shareable across threads.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._origin_fds: list[int] = []

    def __enter__(self) -> None:
        origin_fd = netns_fd(CURRENT_NETNS_PATH)
        try:
            target_fd = netns_fd(self.path)
            try:
                setns(target_fd)
            finally:
                os.close(target_fd)
        except OSError as err:
            os.close(origin_fd)
            raise OSError(err.errno, f"cannot enter netns {self.path}: {err.strerror}") from err
        self._origin_fds.append(origin_fd)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        origin_fd = self._origin_fds.pop()
        try:
            setns(origin_fd)
        finally:
            os.close(origin_fd)
