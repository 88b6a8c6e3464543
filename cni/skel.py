"""The plugin entry point: environment and stdin in, a result or an error object out.

``run(plugin)`` does what the Go ``skel`` package does for the reference plugins: it reads the
``CNI_*`` variables, validates them and the network config as the spec says, negotiates the
version, dispatches ADD / DEL / CHECK / VERSION / STATUS / GC, converts the result to the
config's version, and turns every failure into the spec's error object on stdout with a non-zero
exit. Nothing but JSON ever reaches stdout; tracebacks go to stderr.

``execute(plugin, env, stdin)`` is the same thing as a pure function returning
``(stdout_bytes, exit_code)``, so a plugin can be run in-process (by another plugin delegating
to it, or by a resident helper) with behaviour identical to the executable.
"""
from __future__ import annotations

import os
import sys
TYPE_CHECKING = False  # typing itself costs ~2 ms to import; annotations are strings here

from cni import log
from cni import version as versions
from cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_CONFIG,
    INVALID_ENV,
    INVALID_NETNS,
    CNIError,
)

if TYPE_CHECKING:  # typing and dataclasses cost ~10 ms to import; a plugin exec cannot afford them
    from collections.abc import Callable, Mapping
    from typing import Any

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# Which variables each command needs; CNI_PATH is required like the Go skeleton does.
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
}

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")
MAX_IFNAME = 15


def valid_name(name: str) -> bool:
    """The spec's ``^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`` for network names and container IDs."""
    return bool(name) and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name)


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name, or None when it can."""
    if not name:
        return "interface name is empty"
    if len(name.encode()) > MAX_IFNAME:
        return f"interface name is too long: {len(name.encode())} > {MAX_IFNAME}"
    if name in (".", ".."):
        return "interface name is . or .."
    if any(c in "/:" or c.isspace() for c in name):
        return "interface name contains / or : or whitespace characters"
    return None


class Request:
    """One invocation: what the runtime said in the environment and on stdin."""

    __slots__ = ("command", "container_id", "netns", "ifname", "cni_args", "path", "config", "stdin",
                 "cni_version", "env", "prev_result")

    def __init__(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
                 cni_args: dict[str, str] | None = None, path: list[str] | None = None,
                 config: dict[str, Any] | None = None, stdin: bytes = b"",
                 cni_version: str = versions.CURRENT, env: Mapping[str, str] | None = None,
                 prev_result: dict[str, Any] | None = None) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.cni_args = cni_args if cni_args is not None else {}
        self.path = path if path is not None else []
        self.config = config if config is not None else {}
        self.stdin = stdin
        self.cni_version = cni_version
        self.env = env if env is not None else {}
        # prevResult lifted to the canonical 1.1.0 shape, or None when the runtime sent none.
        self.prev_result = prev_result

    @property
    def network(self) -> str:
        return str(self.config.get("name", ""))

    @property
    def ipam_type(self) -> str:
        """The config's IPAM type ('' for none), read tolerantly: DEL must clean up even when the config
        would not validate."""
        ipam = self.config.get("ipam")
        kind = ipam.get("type") if isinstance(ipam, dict) else None
        return kind if isinstance(kind, str) else ""

    @property
    def runtime_config(self) -> dict[str, Any]:
        rc = self.config.get("runtimeConfig")
        return rc if isinstance(rc, dict) else {}


class Plugin:
    """A plugin's handlers and the versions it speaks; unset handlers succeed without doing anything."""

    __slots__ = ("name", "add", "delete", "check", "status", "gc", "versions", "about")

    def __init__(self, name: str, add: Callable[[Request], Any], delete: Callable[[Request], Any],
                 check: Callable[[Request], Any] | None = None, status: Callable[[Request], Any] | None = None,
                 gc: Callable[[Request], Any] | None = None, versions: tuple[str, ...] = versions.ALL_VERSIONS,
                 about: str = "") -> None:
        self.name = name
        self.add = add
        self.delete = delete
        self.check = check
        self.status = status
        self.gc = gc
        self.versions = versions
        self.about = about


def execute(plugin: Plugin, env: Mapping[str, str], stdin: bytes) -> tuple[bytes, int]:
    """Run one invocation and return (stdout, exit code); never raises.

    Every call but VERSION is logged (cni.log) when its config or environment names a log file.
    """
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        return _version_answer(plugin), 0
    call = log.begin(plugin.name, command, env, stdin)
    if call is None:
        return _execute(plugin, command, env, stdin)[:2]
    out, code, error = b"", 1, None
    try:
        out, code, error = _execute(plugin, command, env, stdin)
    finally:
        log.end(call, code, error)
    return out, code


def _execute(plugin: Plugin, command: str, env: Mapping[str, str],
             stdin: bytes) -> tuple[bytes, int, dict[str, object] | None]:
    """:func:`execute`'s work: (stdout, exit code, the error object printed or None)."""
    cni_version = versions.CURRENT
    try:
        request = _build_request(plugin, command, env, stdin)
        cni_version = request.cni_version
        output = _dispatch(plugin, request)
        return (_json(output) if output is not None else b""), 0, None
    except CNIError as err:
        error = err.to_dict(cni_version)
        return _json(error), 1, error
    except Exception as exc:  # a bug or an unexpected OS failure: still a well-formed error object
        import traceback  # noqa: PLC0415 - only on the failure path

        traceback.print_exc(file=sys.stderr)
        # Library errors may carry the CNI code that fits them (chains.errors.TryAgain: 11).
        code = getattr(exc, "code", None)
        code = code if isinstance(code, int) and 0 < code < 1000 else INTERNAL
        error = CNIError(code, str(exc) or type(exc).__name__).to_dict(cni_version)
        return _json(error), 1, error


def run(plugin: Plugin) -> None:
    """The console-script entry point: real environment, real stdin, real exit."""
    env = os.environ
    if not env.get("CNI_COMMAND"):
        supported = ", ".join(plugin.versions)
        print(plugin.about or f"CNI {plugin.name} plugin\nCNI protocol versions supported: {supported}",
              file=sys.stderr)
        sys.exit(0)
    stdin = b"" if env.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read()
    out, code = execute(plugin, env, stdin)
    if out:
        sys.stdout.buffer.write(out)
    exit_now(code)


def exit_now(code: int) -> None:
    """Flush stdout and stderr and end the process without the interpreter's shutdown.

    Tearing down every module and object costs a plugin exec about a millisecond (several with
    the heavy libraries loaded) and does nothing a finished plugin needs: its files are closed,
    its locks released and its answer written by now.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken pipe: nothing more can be said there
    os._exit(code & 0xFF)


def _version_answer(plugin: Plugin) -> bytes:
    """VERSION's answer, byte for byte what ``_json`` prints, without importing json (~8 ms with re)."""
    listed = ",\n".join(f'        "{v}"' for v in plugin.versions)
    return (f'{{\n    "cniVersion": "{versions.CURRENT}",\n    "supportedVersions": [\n{listed}\n    ]\n}}\n'
            .encode())


def _json(obj: object) -> bytes:
    from cni import jsonlite  # noqa: PLC0415 - json's own output, without importing json (~8 ms with re)

    # allow_nan=False: NaN and Infinity are not JSON; a runtime could not parse a result carrying them.
    return jsonlite.dumps_indented(obj).encode() + b"\n"


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def _build_request(plugin: Plugin, command: str, env: Mapping[str, str], stdin: bytes) -> Request:
    if command not in COMMANDS:
        raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND: {command}")
    missing = [var for var in _REQUIRED_ENV[command] if not env.get(var)]
    if missing:
        raise CNIError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    container_id = env.get("CNI_CONTAINERID", "")
    if container_id and not valid_name(container_id):
        raise CNIError(INVALID_ENV, "invalid characters in containerID", container_id)
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "CHECK", "DEL"):
        problem = ifname_problem(ifname)
        if problem:
            raise CNIError(INVALID_ENV, f"invalid CNI_IFNAME {ifname!r}: {problem}")

    config = _decode_config(stdin)
    cni_version = _negotiate_version(plugin, command, config)
    request = Request(
        command=command,
        container_id=container_id,
        netns=env.get("CNI_NETNS", ""),
        ifname=ifname,
        path=[p for p in env.get("CNI_PATH", "").split(os.pathsep) if p],
        config=config,
        stdin=stdin,
        cni_version=cni_version,
        env=env,
    )
    from cni import args  # noqa: PLC0415 - tiny, but only needed here

    request.cni_args = args.parse(env.get("CNI_ARGS", ""))
    if "prevResult" in config and config["prevResult"] is not None:
        from cni import result  # noqa: PLC0415

        request.prev_result = result.to_canonical(config["prevResult"], cni_version)
    # Before acting, for DEL too: a DEL "in the container" would otherwise delete the node's own ifname.
    if command in ("ADD", "DEL") and request.netns and not env.get("CNI_NETNS_OVERRIDE"):
        _refuse_own_netns(request.netns)
    return request


def _decode_config(stdin: bytes) -> dict[str, Any]:
    from cni import jsonlite  # noqa: PLC0415 - json.loads's result and errors, json imported only on errors

    try:
        config = jsonlite.loads(stdin or b"", parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise CNIError(DECODE_FAILURE, f"error unmarshall network config: {exc}") from None
    if not isinstance(config, dict):
        raise CNIError(DECODE_FAILURE, "error unmarshall network config: not a JSON object")
    name = config.get("name")
    if not name:
        raise CNIError(INVALID_CONFIG, "missing network name")
    if not isinstance(name, str) or not valid_name(name):
        raise CNIError(INVALID_CONFIG, "invalid characters found in network name", str(name)[:256])
    return config


def _negotiate_version(plugin: Plugin, command: str, config: dict[str, Any]) -> str:
    ver = config.get("cniVersion") or "0.1.0"
    if not isinstance(ver, str) or ver not in plugin.versions:
        supported = " ".join(f'"{v}"' for v in plugin.versions)
        raise CNIError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f'config is "{str(ver)[:64]}", plugin supports [{supported}]')
    if command == "CHECK" and not versions.at_least(ver, "0.4.0"):
        raise CNIError(INCOMPATIBLE_VERSION, "config version does not allow CHECK")
    if command in ("GC", "STATUS") and not versions.at_least(ver, "1.1.0"):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version does not allow {command}")
    return ver


def _refuse_own_netns(netns: str) -> None:
    """A runtime bug would have us reconfigure the node itself; refuse like the Go skeleton (code 8)."""
    try:
        target = os.stat(netns)
        own = os.stat("/proc/self/ns/net")
    except OSError:
        return  # the plugin reports a missing netns itself, with a better message
    if (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino):
        raise CNIError(INVALID_NETNS, "netns is the plugin's own network namespace", netns)


def _dispatch(plugin: Plugin, request: Request) -> dict[str, Any] | None:
    if request.command == "ADD":
        from cni import result  # noqa: PLC0415

        produced = plugin.add(request)
        return result.from_canonical(produced, request.cni_version)
    if request.command == "DEL":
        plugin.delete(request)
        return None
    handler = {"CHECK": plugin.check, "STATUS": plugin.status, "GC": plugin.gc}[request.command]
    if handler is not None:
        handler(request)
    return None
