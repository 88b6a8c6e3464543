"""JSON in and out for the skeleton without importing the ``json`` package.

``import json`` costs a plugin exec ~8 ms, nearly all of it ``re`` (and the ``enum``, ``functools``
and ``collections`` that ``re`` pulls in), which json needs only for its pure-Python fallbacks. The
C accelerator ``_json`` holds the scanner and the string encoder json uses anyway; this module
drives them directly:

- ``loads`` decodes exactly what ``json.loads(data, parse_constant=...)`` decodes. Anything it is
  not sure of (not UTF-8, a byte-order mark, any error) is handed to the real ``json.loads``, so
  every error, message and exception type is json's own.
- ``dumps_indented`` encodes plain decoded JSON (dict, list, str, int, float, bool, None) byte for
  byte as ``json.dumps(obj, indent=4, allow_nan=False)``; anything else (other types, NaN, a
  non-string key, very deep nesting) is handed to the real ``json.dumps``.
"""
from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"
_INDENT = "    "
_MAX_DEPTH = 200  # deeper (or circular) structures go to json, which reports them properly


class _Unsupported(Exception):
    """Not something this encoder reproduces exactly: json must do it."""


class _ScanContext:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    def __init__(self, parse_constant: Callable[[str], Any]) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = parse_constant
        self.memo: dict[str, str] = {}


def loads(data: bytes, parse_constant: Callable[[str], Any]) -> Any:
    """``json.loads(data, parse_constant=parse_constant)``, without importing json when it succeeds."""
    try:
        text = data.decode("utf-8")
        if text.startswith("\ufeff"):
            raise _Unsupported  # json.loads decodes bytes with a BOM as utf-8-sig
        end = len(text)
        start = _skip_whitespace(text, 0)
        value, stop = _json.make_scanner(_ScanContext(parse_constant))(text, start)
        if _skip_whitespace(text, stop) != end:
            raise _Unsupported  # extra data: json words the error
        return value
    except Exception:  # noqa: BLE001 - json.loads repeats the work and raises (or returns) exactly as json does
        import json  # noqa: PLC0415

        return json.loads(data, parse_constant=parse_constant)


def _skip_whitespace(text: str, index: int) -> int:
    end = len(text)
    while index < end and text[index] in _WHITESPACE:
        index += 1
    return index


def dumps_indented(obj: object) -> str:
    """``json.dumps(obj, indent=4, allow_nan=False)``."""
    parts: list[str] = []
    try:
        _encode(obj, 0, parts)
    except _Unsupported:
        import json  # noqa: PLC0415

        return json.dumps(obj, indent=4, allow_nan=False)
    return "".join(parts)


def _key(key: object) -> str:
    """A dict key as json writes it (str as is; bool, None, int and finite float converted)."""
    kind = type(key)
    if kind is str:
        return key  # type: ignore[return-value]
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if kind is int:
        return int.__repr__(key)  # type: ignore[arg-type]
    if kind is float and key == key and key not in (float("inf"), float("-inf")):
        return float.__repr__(key)  # type: ignore[arg-type]
    raise _Unsupported


def _encode(obj: object, depth: int, parts: list[str]) -> None:
    kind = type(obj)
    if kind is str:
        parts.append(_json.encode_basestring_ascii(obj))
    elif obj is None:
        parts.append("null")
    elif obj is True:
        parts.append("true")
    elif obj is False:
        parts.append("false")
    elif kind is int:
        parts.append(int.__repr__(obj))  # type: ignore[arg-type]
    elif kind is float:
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise _Unsupported  # json raises its ValueError
        parts.append(float.__repr__(obj))  # type: ignore[arg-type]
    elif kind is list or kind is tuple:
        _encode_list(obj, depth, parts)  # type: ignore[arg-type]
    elif kind is dict:
        _encode_dict(obj, depth, parts)  # type: ignore[arg-type]
    else:
        raise _Unsupported


def _encode_list(items: list[Any], depth: int, parts: list[str]) -> None:
    if not items:
        parts.append("[]")
        return
    if depth >= _MAX_DEPTH:
        raise _Unsupported
    inner = "\n" + _INDENT * (depth + 1)
    parts.append("[")
    for n, item in enumerate(items):
        parts.append(inner if n == 0 else "," + inner)
        _encode(item, depth + 1, parts)
    parts.append("\n" + _INDENT * depth + "]")


def _encode_dict(obj: dict[Any, Any], depth: int, parts: list[str]) -> None:
    if not obj:
        parts.append("{}")
        return
    if depth >= _MAX_DEPTH:
        raise _Unsupported
    inner = "\n" + _INDENT * (depth + 1)
    parts.append("{")
    for n, (key, value) in enumerate(obj.items()):
        parts.append(inner if n == 0 else "," + inner)
        parts.append(_json.encode_basestring_ascii(_key(key)))
        parts.append(": ")
        _encode(value, depth + 1, parts)
    parts.append("\n" + _INDENT * depth + "}")
