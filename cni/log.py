"""Operator logs: one JSON line per plugin call, and what the call did at ``debug``.

Turned on per network by ``logFile`` and ``logLevel`` in the plugin's config (the names multus
uses), else by ``PYCNI_LOG_FILE`` / ``PYCNI_LOG_LEVEL`` in the call's environment, else by the same
variables in the resident helper's own environment (:func:`set_defaults`); each key is taken from the
first place that sets it. Levels: ``error`` (failed calls only), ``warning``, ``info`` (every call,
the default once a file is named) and ``debug`` (plus the details plugins hand over: rules
committed, links and addresses created). Without a file nothing is logged.

cni.skel wraps every call (:func:`begin` / :func:`end`); plugins add events with :func:`info`,
:func:`warning` and :func:`debug`, which return at once unless a call is being logged at that level
(:func:`debugging` guards details that are costly to build). Every line carries the call's plugin,
command, network, containerID and ifname; the call's own line adds ``duration_ms``, ``outcome``
(``ok``/``error``) and, on error, the CNI ``code`` and ``msg``.

Each line is appended with one ``write`` to a descriptor opened with ``O_APPEND``, so lines of any
number of plugins writing one file at once never interleave. A log that cannot be opened or written
never fails the call: it is reported once per process on stderr and the call goes on unlogged.

Importing this module costs next to nothing (``os`` and ``sys`` are loaded anyway); ``json`` and
``time`` are imported only once a call is really logged.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

FILE_KEY, LEVEL_KEY = "logFile", "logLevel"
FILE_ENV, LEVEL_ENV = "PYCNI_LOG_FILE", "PYCNI_LOG_LEVEL"
ERROR, WARNING, INFO, DEBUG = 0, 1, 2, 3
LEVELS = {"error": ERROR, "warning": WARNING, "info": INFO, "debug": DEBUG,
          # the other names multus accepts
          "panic": ERROR, "warn": WARNING, "verbose": INFO}
LEVEL_NAMES = ("error", "warning", "info", "debug")
DEFAULT_LEVEL = INFO
FILE_MODE = 0o640
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK

# What the resident helper's own environment says (set_defaults); the call's config and env come first.
_defaults: dict[str, str] = {}
# Log files this process already failed to write: warned about once, not tried again.
_failed: set[str] = set()


class Call:
    """One logged plugin call: where its lines go and what each of them says about it."""

    __slots__ = ("path", "level", "fd", "context", "started", "outer")

    def __init__(self, path: str, level: int, context: dict[str, Any], outer: Call | None) -> None:
        import time  # noqa: PLC0415 - built in, but only a logged call needs it

        self.path = path
        self.level = level
        self.fd = -1
        self.context = context
        self.started = time.perf_counter()
        self.outer = outer  # the call this one runs inside (in-process delegation to IPAM)


_current: Call | None = None


def set_defaults(log_file: str | None, log_level: str | None) -> None:
    """Settings for calls that name none themselves: the helper's ``PYCNI_LOG_*`` variables."""
    _defaults.clear()
    if log_file:
        _defaults[FILE_KEY] = log_file
    if log_level:
        _defaults[LEVEL_KEY] = log_level


def defaults_from_environment(environ: Mapping[str, str]) -> None:
    set_defaults(environ.get(FILE_ENV), environ.get(LEVEL_ENV))


def begin(plugin: str, command: str, env: Mapping[str, str], stdin: bytes) -> Call | None:
    """Start logging a call, or None when nothing asks for a log (decided without parsing stdin)."""
    global _current
    named_in_config = b'"logFile"' in stdin or b'"logLevel"' in stdin
    if not (named_in_config or env.get(FILE_ENV) or _defaults):
        return None
    try:
        config = _config_of(stdin) if named_in_config or stdin else {}
        path = _setting(FILE_KEY, FILE_ENV, config, env)
        if not path or path in _failed:
            return None
        if not path.startswith("/"):  # relative to what? The runtime's directory, or the helper's
            _failed.add(path)
            _warn_once(path, f"logFile {path!r} is not an absolute path; the call goes on unlogged")
            return None
        level = _level(_setting(LEVEL_KEY, LEVEL_ENV, config, env))
        if level is None:
            return None
        name = config.get("name")
        context = {"plugin": plugin, "command": command, "network": name if isinstance(name, str) else "",
                   "containerID": env.get("CNI_CONTAINERID", ""), "ifname": env.get("CNI_IFNAME", "")}
        _current = Call(path, level, context, _current)
        return _current
    except Exception as exc:  # noqa: BLE001 - a log must never fail the call
        _warn_once("?", f"logging is off for this call: {exc}")
        return None


def end(call: Call, exit_code: int, error: Mapping[str, Any] | None) -> None:
    """The call's own line, then close its log and make the enclosing call current again."""
    global _current
    try:
        if call.level >= (ERROR if exit_code else INFO):
            import time  # noqa: PLC0415

            fields: dict[str, Any] = {"duration_ms": round((time.perf_counter() - call.started) * 1000, 3),
                                      "outcome": "error" if exit_code else "ok"}
            if error:
                fields["code"] = error.get("code")
                fields["msg"] = error.get("msg")
                if error.get("details"):
                    fields["details"] = error["details"]
            _emit(call, ERROR if exit_code else INFO, "call", fields)
    finally:
        if call.fd >= 0:
            os.close(call.fd)
            call.fd = -1
        _current = call.outer


def debugging() -> bool:
    """Whether :func:`debug` lines are written now: guard details that are costly to build."""
    return _current is not None and _current.level >= DEBUG


def debug(event: str, **fields: Any) -> None:
    """A detail of what the current call did (``logLevel`` debug only)."""
    if _current is not None and _current.level >= DEBUG:
        _emit(_current, DEBUG, event, fields)


def info(event: str, **fields: Any) -> None:
    if _current is not None and _current.level >= INFO:
        _emit(_current, INFO, event, fields)


def warning(event: str, **fields: Any) -> None:
    """Something an operator should know that did not fail the call (it is on stderr as well)."""
    if _current is not None and _current.level >= WARNING:
        _emit(_current, WARNING, event, fields)


# --- internals --------------------------------------------------------------------------------------


def _config_of(stdin: bytes) -> dict[str, Any]:
    import json  # noqa: PLC0415 - the call itself needs it too

    try:
        config = json.loads(stdin)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}  # the call reports the bad config itself; only the environment can name a log then
    return config if isinstance(config, dict) else {}


def _setting(key: str, env_key: str, config: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    value = config.get(key)
    if isinstance(value, str) and value:
        return value
    return env.get(env_key) or _defaults.get(key) or None


def _level(name: str | None) -> int | None:
    if not name:
        return DEFAULT_LEVEL
    level = LEVELS.get(name.lower())
    if level is None:
        _warn_once(f"level:{name}", f"unknown logLevel {name!r} (one of {', '.join(LEVEL_NAMES)}); using info")
        return DEFAULT_LEVEL
    return level


def _emit(call: Call, level: int, event: str, fields: Mapping[str, Any]) -> None:
    """Append one line for ``call``; a failure switches this call's logging off with one warning."""
    try:
        import json  # noqa: PLC0415
        import time  # noqa: PLC0415

        now = time.time()
        record: dict[str, Any] = {"time": _rfc3339(now), "level": LEVEL_NAMES[level], "event": event,
                                  **call.context, "pid": os.getpid()}
        record.update(fields)
        line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
        if call.fd < 0:
            call.fd = os.open(call.path, _OPEN_FLAGS, FILE_MODE)
        written = os.write(call.fd, line)  # one write: O_APPEND keeps concurrent lines whole
        if written < len(line):  # only a full disk or a signal gets here; finish the line at least
            os.write(call.fd, line[written:])
    except Exception as exc:  # noqa: BLE001 - a log must never fail the call
        call.level = -1  # no further lines for this call
        _failed.add(call.path)
        _warn_once(call.path, f"cannot write log file {call.path}: {_reason(exc)}; the call goes on unlogged")


def _rfc3339(now: float) -> str:
    import time  # noqa: PLC0415

    millis = int(now * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.errno is not None else exc.strerror
    return str(exc) or type(exc).__name__


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    try:
        sys.stderr.write(f"pycni: warning: {message}\n")
    except (OSError, ValueError):
        pass
