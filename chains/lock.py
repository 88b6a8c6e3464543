"""The xtables lock: the flock the iptables tools (and kube-proxy, via iptables-restore -w)
take on ``/run/xtables.lock`` around every read-modify-commit of a table.

libiptc itself takes no lock, so without this a python-iptables commit can silently
overwrite rules another tool committed between our read and our commit. The lock file
lives in the mount namespace, so it serialises writers across all network namespaces of
the host, exactly as the iptables binaries do.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from chains.errors import ChainsError, LockTimeout

DEFAULT_LOCK_PATH = "/run/xtables.lock"
DEFAULT_WAIT_SECONDS = 10.0
_FIRST_POLL = 0.002
_MAX_POLL = 0.05

# flock locks belong to an open file description, so a second open of the lock file in
# this process would wait for ourselves; nested holders share the first one instead.
_held: list[int] = []


def lock_path() -> str:
    """``$XTABLES_LOCKFILE`` if set (as iptables honours it), else /run/xtables.lock."""
    return os.environ.get("XTABLES_LOCKFILE") or DEFAULT_LOCK_PATH


@contextlib.contextmanager
def xtables_lock(wait: float = DEFAULT_WAIT_SECONDS, path: str | None = None) -> Iterator[None]:
    """Hold the xtables lock for the block, waiting at most ``wait`` seconds for it.

    Raises :class:`~chains.errors.LockTimeout` (a TryAgain) when it stays busy, and
    ChainsError when the lock file cannot be opened at all.
    """
    if _held:
        yield
        return
    fd = _open_lock_file(path or lock_path())
    try:
        _acquire(fd, wait, path or lock_path())
        _held.append(fd)
        try:
            yield
        finally:
            _held.remove(fd)
    finally:
        os.close(fd)  # closing releases the flock


def _open_lock_file(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise ChainsError(f"cannot open xtables lock file {path}: {error.strerror}") from error


def _acquire(fd: int, wait: float, path: str) -> None:
    """Take the flock on ``fd``, waiting at most ``wait`` seconds.

    A busy lock is waited for *blocked in flock(2)*, as ``iptables -w`` does: on release the kernel
    hands the lock to a blocked waiter at once, so a process that polls and sleeps in between loses
    it to every such waiter and can starve behind two busy ones (``iptables -w`` loops, kube-proxy)
    until it gives up. The block is bounded by an interval timer; where this process cannot use
    SIGALRM (not the main thread, or a timer of someone else's is armed) it polls instead.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        if wait <= 0:
            raise _timeout(wait, path) from None
    if not _block_with_timer(fd, wait, path):
        _poll(fd, wait, path)


class _Expired(Exception):
    """Raised by the SIGALRM handler to interrupt a blocking flock."""


def _expire(signum: int, frame: object) -> None:
    raise _Expired


def _block_with_timer(fd: int, wait: float, path: str) -> bool:
    """Block in flock for at most ``wait`` seconds; False (nothing done) when SIGALRM is not ours to use."""
    import _signal  # noqa: PLC0415 - the C module: ``signal`` would import enum; only a busy lock gets here

    try:
        previous_handler = _signal.signal(_signal.SIGALRM, _expire)
    except ValueError:  # not the main thread
        return False
    try:
        previous_timer = _signal.setitimer(_signal.ITIMER_REAL, wait)
        if previous_timer[0]:  # someone else's alarm was armed: put it back, do not touch it
            _signal.setitimer(_signal.ITIMER_REAL, *previous_timer)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
    except _Expired:
        # Also when the alarm came just after flock returned: the caller closes fd, which releases it.
        raise _timeout(wait, path) from None
    finally:
        _signal.signal(_signal.SIGALRM, previous_handler)
    return True


def _poll(fd: int, wait: float, path: str) -> None:
    deadline = time.monotonic() + max(wait, 0.0)
    poll = _FIRST_POLL
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(wait, path) from None
            time.sleep(min(poll, remaining))
            poll = min(poll * 2, _MAX_POLL)


def _timeout(wait: float, path: str) -> LockTimeout:
    return LockTimeout(f"another app is currently holding the xtables lock ({path}); gave up after {wait:g}s")
