"""A small exec server: runs one plugin at a time as a runtime would, and times it.

The benchmark starts one of these inside a node network namespace (``python -I -S spawner.py``);
every process it forks inherits that namespace, so no ``ip netns exec`` sits in the measurement.

Why a separate process rather than ``subprocess`` in the benchmark itself: the ``ru_maxrss`` that
``wait4`` reports for a child is never lower than the RSS of the process that forked it (``fork``
copies the parent's page tables, ``vfork``/``posix_spawn`` hand the parent's whole memory map to
``exec``, which records its high-water mark). The benchmark grows to tens of MiB; this server stays
near 6 MiB, so the peak RSS it reports belongs to the plugin unless the plugin is smaller than that.
The benchmark measures that floor with ``/bin/true``. For plugins smaller than the floor (the Go
reference), a request may name ``rss_file``: the plugin then runs under GNU ``time -f %M -o
rss_file``, which forks it from a ~1 MiB process; that run's time includes time's own exec, so the
benchmark uses it only for an untimed RSS pass.

Protocol on stdin/stdout: a 4-byte big-endian length, then a JSON object. Request:
``{"argv": [...], "env": {...}, "stdin": "...", "rss_file": optional path}``. Answer: ``{"ms",
"code", "maxrss_kib", "stdout", "stderr"}``. EOF ends the server.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

GNU_TIME = "/usr/bin/time"
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _exec_child(argv: list[str], env: dict[str, str], stdin_r: int, stdout_w: int, stderr_fd: int) -> None:
    """In the forked child: wire up fds 0-2 and exec; never returns."""
    try:
        # Python ignores SIGPIPE; a runtime's child would start with the default disposition.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.dup2(stdin_r, 0)
        os.dup2(stdout_w, 1)
        os.dup2(stderr_fd, 2)  # every other descriptor here is close-on-exec (PEP 446)
        os.execve(argv[0], argv, env)
    finally:
        os._exit(127)


def run(argv: list[str], env: dict[str, str], stdin: bytes, stderr_fd: int) -> dict[str, Any]:
    """Fork, exec ``argv`` with ``stdin``, collect stdout/stderr, reap with wait4; wall time in ms."""
    os.ftruncate(stderr_fd, 0)
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _exec_child(argv, env, stdin_r, stdout_w, stderr_fd)
    os.close(stdin_r)
    os.close(stdout_w)
    try:
        write_all(stdin_w, stdin)
    except BrokenPipeError:  # the plugin exited without reading its config: its exit code says why
        pass
    finally:
        os.close(stdin_w)
    out = read_all(stdout_r)
    os.close(stdout_r)
    _, status, usage = os.wait4(pid, 0)
    elapsed_ms = (time.perf_counter() - start) * 1000
    err = os.pread(stderr_fd, 1 << 20, 0)
    return {"ms": elapsed_ms, "code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss,
            "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")}


def serve(requests: int, answers: int) -> None:
    stderr_fd = os.open("/tmp", os.O_TMPFILE | os.O_RDWR, 0o600)  # the children's stderr, reused
    while True:
        try:
            size = int.from_bytes(read_exact(requests, 4), "big")
        except EOFError:
            return
        request = json.loads(read_exact(requests, size))
        rss_file = request.get("rss_file")
        argv = [GNU_TIME, "-f", "%M", "-o", rss_file, *request["argv"]] if rss_file else request["argv"]
        answer = run(argv, request["env"], request["stdin"].encode(), stderr_fd)
        if rss_file:
            with open(rss_file) as f:  # the number is last ("Command exited with ..." may come first)
                answer["maxrss_kib"] = int(f.read().split()[-1])
        payload = json.dumps(answer).encode()
        write_all(answers, len(payload).to_bytes(4, "big") + payload)


if __name__ == "__main__":
    # The protocol owns fds 0 and 1; keep them away from the children (dup2 in the child replaces them).
    serve(os.dup(sys.stdin.fileno()), os.dup(sys.stdout.fileno()))
