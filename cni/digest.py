"""SHA-512 without hashlib.

``hashlib`` loads OpenSSL's binding (``_hashlib``, ~4 ms in a fresh process) before it gets to the
built-in implementation; a plugin needs one digest of a few dozen bytes (the reference's chain
names), which the interpreter's own ``_sha512`` (``_sha2`` from 3.12) computes just the same.
"""
from __future__ import annotations

try:
    from _sha512 import sha512 as _sha512  # CPython up to 3.11
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _sha2 import sha512 as _sha512  # type: ignore[no-redef]  # CPython 3.12+
    except ImportError:
        from hashlib import sha512 as _sha512  # type: ignore[no-redef, assignment]


def sha512_hex(data: bytes) -> str:
    """The SHA-512 digest of ``data`` in lowercase hex."""
    return _sha512(data).hexdigest()
