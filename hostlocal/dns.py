"""resolv.conf -> the result's ``dns`` object (``nameservers``, ``domain``, ``search``, ``options``).

Like the reference: blank lines and lines starting with ``#`` or ``;`` are skipped, a directive
needs at least one value, ``nameserver`` and ``domain`` take the first value (``domain``: last
one wins), ``search`` and ``options`` take all values and accumulate. Unlike the reference, a
trailing comment (a word starting with ``#`` or ``;``) ends the line instead of becoming a value.
"""
from __future__ import annotations

import errno
import os
import stat

from cni.errors import IO_FAILURE, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COMMENT_STARTS = ("#", ";")
MAX_BYTES = 1 << 20  # resolv.conf files are a few hundred bytes


def parse_resolv_conf(path: str) -> dict[str, Any]:
    """Read and parse ``path``; only non-empty fields appear in the returned dict."""
    try:
        data = _read_bounded(path)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise CNIError(IO_FAILURE, f"open {path}: {reason}") from None
    return parse_resolv_conf_text(data.decode("utf-8", errors="replace"))


def _read_bounded(path: str) -> bytes:
    """The whole of a regular file of at most MAX_BYTES: a FIFO, a device such as /dev/zero or a runaway
    file must fail the call, not hang it or exhaust memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 16):
            size += len(chunk)
            if size > MAX_BYTES:
                raise OSError(errno.EFBIG, f"larger than {MAX_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_resolv_conf_text(text: str) -> dict[str, Any]:
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    domain = ""
    for line in text.splitlines():
        words = _words(line)
        if len(words) < 2:
            continue
        directive, values = words[0], words[1:]
        if directive == "nameserver":
            nameservers.append(values[0])
        elif directive == "domain":
            domain = values[0]
        elif directive == "search":
            search.extend(values)
        elif directive == "options":
            options.extend(values)
    dns: dict[str, Any] = {}
    if nameservers:
        dns["nameservers"] = nameservers
    if domain:
        dns["domain"] = domain
    if search:
        dns["search"] = search
    if options:
        dns["options"] = options
    return dns


def _words(line: str) -> list[str]:
    """The words of a line up to the first comment word (a comment line yields none)."""
    words = []
    for word in line.split():
        if word.startswith(COMMENT_STARTS):
            break
        words.append(word)
    return words
