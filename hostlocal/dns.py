"""resolv.conf -> the result's ``dns`` object (``nameservers``, ``domain``, ``search``, ``options``).

Like the reference: blank lines and lines starting with ``#`` or ``;`` are skipped, a directive
needs at least one value, ``nameserver`` and ``domain`` take the first value (``domain``: last
one wins), ``search`` and ``options`` take all values and accumulate. Unlike the reference, a
trailing comment (a word starting with ``#`` or ``;``) ends the line instead of becoming a value.
"""
from __future__ import annotations


from cni.errors import IO_FAILURE, CNIError
from cni.files import read_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COMMENT_STARTS = ("#", ";")
MAX_BYTES = 1 << 20  # resolv.conf files are a few hundred bytes


def parse_resolv_conf(path: str) -> dict[str, Any]:
    """Read and parse ``path``; only non-empty fields appear in the returned dict."""
    try:
        # Bounded, never blocking on a FIFO; resolv.conf is often a symlink.
        data = read_regular(path, limit=MAX_BYTES, follow_symlinks=True)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise CNIError(IO_FAILURE, f"open {path}: {reason}") from None
    return parse_resolv_conf_text(data.decode("utf-8", errors="replace"))


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
