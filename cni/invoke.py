"""Delegating to another plugin (IPAM) the way the spec says: same environment, same stdin.

A delegate is found by ``type`` in ``CNI_PATH`` and exec'd. When the executable found there is
one of this project's own plugins (its launcher carries a ``pycni-entry`` marker), it is run
in-process through the same skeleton instead: identical validation, store, locking, errors and
result, without paying a second interpreter start-up.
"""
from __future__ import annotations

import importlib
import json
import os
TYPE_CHECKING = False  # typing costs ~2 ms to import; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

from cni.errors import INTERNAL, INVALID_CONFIG, IO_FAILURE, CNIError
from cni.skel import Request

ENTRY_MARKER = b"# pycni-entry: "
IN_PROCESS_ENV = "PYCNI_DELEGATE_IN_PROCESS"  # "0" forces exec, for tests proving both paths agree


def find(plugin_type: str, path: list[str]) -> str:
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise CNIError(INVALID_CONFIG, f"invalid plugin type {plugin_type!r}")
    for directory in path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(INVALID_CONFIG, f'failed to find plugin "{plugin_type}" in path {path}')


def _own_entry(executable: str) -> str | None:
    """'module:attr' when ``executable`` is one of our launchers, else None."""
    try:
        with open(executable, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    start = head.find(ENTRY_MARKER)
    if start < 0:
        return None
    line = head[start + len(ENTRY_MARKER):].split(b"\n", 1)[0].strip()
    return line.decode() if line else None


def delegate(request: Request, plugin_type: str, command: str) -> dict[str, Any] | None:
    """Run ``plugin_type`` for ``command`` with the request's env and stdin.

    Returns the canonical (1.1.0-shaped) result for ADD, None otherwise; a failing delegate
    raises its own CNIError (code, msg, details preserved).
    """
    executable = find(plugin_type, request.path)
    env = dict(request.env)
    env["CNI_COMMAND"] = command
    entry = _own_entry(executable) if request.env.get(IN_PROCESS_ENV, "1") != "0" else None
    if entry:
        out, code = _run_in_process(entry, env, request.stdin)
    else:
        out, code = _exec(executable, env, request.stdin)
    if code != 0:
        raise _error_from(out, plugin_type)
    if command != "ADD":
        return None
    from cni import result  # noqa: PLC0415

    try:
        produced = json.loads(out)
    except ValueError as exc:
        raise CNIError(INTERNAL, f"{plugin_type} printed an invalid result: {exc}") from None
    return result.to_canonical(produced, request.cni_version)


def _run_in_process(entry: str, env: dict[str, str], stdin: bytes) -> tuple[bytes, int]:
    from cni import skel  # noqa: PLC0415

    module_name, _, attr = entry.partition(":")
    plugin = getattr(importlib.import_module(module_name), attr or "PLUGIN")
    return skel.execute(plugin, env, stdin)


def _exec(executable: str, env: dict[str, str], stdin: bytes) -> tuple[bytes, int]:
    import subprocess  # noqa: PLC0415 - ~4 ms, only paid when a delegate really is exec'd

    try:
        proc = subprocess.run([executable], input=stdin, env=env, capture_output=True, check=False)
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"failed to exec {executable}: {exc}") from None
    return proc.stdout, proc.returncode


def _error_from(out: bytes, plugin_type: str) -> CNIError:
    try:
        data = json.loads(out)
        return CNIError(int(data.get("code", INTERNAL)), str(data.get("msg", "")), str(data.get("details", "")))
    except (ValueError, TypeError, AttributeError):
        text = out.decode(errors="replace").strip()[:512]
        return CNIError(INTERNAL, f"{plugin_type} failed without an error object: {text}")
