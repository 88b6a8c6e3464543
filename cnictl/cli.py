"""The ``cnictl`` command: cnitool for people, plus ``cnictl install`` for the plugin launchers.

    cnictl add|check|del NETWORK NETNS [--ifname eth0] [--container-id ID] [--args 'K=V;K=V']
                                       [--port-mappings JSON | --publish HOST:CONTAINER[/PROTO][@HOSTIP] ...]
                                       [--cap NAME=JSON ...]
    cnictl gc NETWORK [NETNS] [--valid CONTAINERID/IFNAME ...] [--dry-run]
    cnictl show [NETWORK] [--json]
    cnictl status NETWORK [NETNS]
    cnictl install [--dest /opt/cni/bin] [--only TYPE[,TYPE]] [--python PATH] [--direct]
                   [--unit-dir /etc/systemd/system | --no-helper]
    cnictl uninstall [--dest /opt/cni/bin] [--unit-dir /etc/systemd/system]
    cnictl helper [--socket PATH] [--status]

Every network command also takes --cni-path, --conf-dir and --cache-dir, defaulting to the
environment variables CNI_PATH, NETCONFPATH and CNI_CACHE_DIR like cnitool (then /opt/cni/bin,
/etc/cni/net.d and /var/lib/cni). Capability arguments also come from CAP_ARGS (a JSON object),
CNI_ARGS and CNI_IFNAME from the environment. Errors go to stderr as text, exit status 1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Any

from cnictl import cache, config, runtime
from cnictl.errors import CnictlError, PluginError

NETNS_DIR = "/run/netns"
PROTOCOLS = ("tcp", "udp", "sctp")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CnictlError as exc:
        print(f"cnictl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(prog="cnictl", description="Run CNI network configurations by hand, "
                                     "and install this project's plugin executables.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    paths = argparse.ArgumentParser(add_help=False)
    paths.add_argument("--cni-path", default=env.get("CNI_PATH") or runtime.DEFAULT_CNI_PATH,
                       help="where plugin executables are looked up, ':'-separated (env CNI_PATH)")
    paths.add_argument("--conf-dir", default=config.conf_dir_from_env(env),
                       help="directory of *.conflist / *.conf files (env NETCONFPATH)")
    paths.add_argument("--cache-dir", default=cache.cache_dir_from_env(env),
                       help="libcni result cache directory (env CNI_CACHE_DIR)")

    attachment = argparse.ArgumentParser(add_help=False)
    attachment.add_argument("network", metavar="NETWORK", help="network name in the configuration directory")
    attachment.add_argument("netns", metavar="NETNS", help="a name under /run/netns, or a path")
    attachment.add_argument("--ifname", default=env.get("CNI_IFNAME") or "eth0",
                            help="interface name in the container (env CNI_IFNAME, default eth0)")
    attachment.add_argument("--container-id", help="default: derived from the netns path, stable")
    attachment.add_argument("--args", dest="cni_args", metavar="K=V;K=V",
                            help="CNI_ARGS for the plugins (default: env CNI_ARGS)")
    attachment.add_argument("--port-mappings", metavar="JSON", help="portMappings capability, a JSON list")
    attachment.add_argument("--publish", action="append", default=[], metavar="HOST:CONTAINER[/PROTO][@HOSTIP]",
                            help="one port mapping (repeatable), e.g. 8080:80/tcp@127.0.0.1")
    attachment.add_argument("--cap", action="append", default=[], metavar="NAME=JSON",
                            help="a capability argument (repeatable), e.g. ips='[\"10.88.0.9/16\"]'")

    for name, handler, summary in (
        ("add", _cmd_add, "attach a container to a network; prints the result"),
        ("check", _cmd_check, "check an attachment against the cached ADD result"),
        ("del", _cmd_del, "detach a container from a network"),
    ):
        sub = commands.add_parser(name, parents=[attachment, paths], help=summary, description=summary)
        sub.set_defaults(handler=handler)

    gc = commands.add_parser("gc", parents=[paths], help="delete stale cached attachments and send GC")
    gc.add_argument("network", metavar="NETWORK")
    gc.add_argument("netns", metavar="NETNS", nargs="?", help="accepted for cnitool compatibility; unused")
    gc.add_argument("--valid", action="append", default=[], metavar="CONTAINERID/IFNAME",
                    help="an attachment to keep (repeatable); without any, every cached one is deleted")
    gc.add_argument("--dry-run", action="store_true",
                    help="list what would be deleted and removed, and change nothing")
    gc.set_defaults(handler=_cmd_gc)

    show = commands.add_parser("show", parents=[paths], help="list every attachment and check it against the node",
                               description="List every attachment on the node (from the plugins' ownership "
                               "records and the result cache) and check each against the live node. Exit "
                               "status 3 when anything drifted, 1 when cnictl itself failed.")
    show.add_argument("network", metavar="NETWORK", nargs="?", help="only this network (default: all of them)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_cmd_show)

    status = commands.add_parser("status", parents=[paths], help="ask every plugin whether it is ready")
    status.add_argument("network", metavar="NETWORK")
    status.add_argument("netns", metavar="NETNS", nargs="?", help="accepted for cnitool compatibility; unused")
    status.set_defaults(handler=_cmd_status)

    from cnictl import install  # noqa: PLC0415

    inst = commands.add_parser("install", help="write the plugin launchers into a CNI bin directory")
    inst.add_argument("--dest", default=install.DEFAULT_DEST, help=f"default {install.DEFAULT_DEST}")
    inst.add_argument("--only", action="append", metavar="TYPE[,TYPE]",
                      help=f"install only these ({', '.join(install.PLUGIN_ENTRIES)}); repeatable")
    inst.add_argument("--python", help="interpreter for the #! line (default: this venv's bin/python)")
    inst.add_argument("--direct", action="store_true", default=None,
                      help="run the plugin in the launcher itself, never through the resident helper")
    from cnictl import service  # noqa: PLC0415

    inst.add_argument("--unit-dir", default=service.DEFAULT_UNIT_DIR,
                      help=f"where the helper's systemd units go (default {service.DEFAULT_UNIT_DIR})")
    inst.add_argument("--no-helper", action="store_true",
                      help="do not install the socket-activated resident helper (its systemd units); "
                      "implied by --direct")
    inst.set_defaults(handler=_cmd_install)

    uninst = commands.add_parser("uninstall", help="remove our launchers and the helper's systemd units")
    uninst.add_argument("--dest", default=install.DEFAULT_DEST, help=f"default {install.DEFAULT_DEST}")
    uninst.add_argument("--unit-dir", default=service.DEFAULT_UNIT_DIR,
                        help=f"default {service.DEFAULT_UNIT_DIR}")
    uninst.set_defaults(handler=_cmd_uninstall)

    helper = commands.add_parser("helper", help="run the resident helper that warm-starts plugin calls")
    helper.add_argument("--socket", help="unix socket to listen on (default: cni.launcher's); a socket "
                        "passed by systemd (socket activation) takes precedence")
    helper.add_argument("--status", action="store_true",
                        help="report whether the helper is up, its version, pid and workers (exit 3: not running)")
    helper.set_defaults(handler=_cmd_helper)
    return parser


def _cmd_add(args: argparse.Namespace) -> int:
    net, attachment, rt = _prepare(args, must_exist=True)
    try:
        result = rt.add(net, attachment)
    except PluginError as exc:
        hint = (f"the attachment may be half set up; `cnictl del {args.network} {args.netns}` "
                "with the same options cleans it up")
        raise CnictlError(f"{exc}\n{hint}") from exc
    print(json.dumps(result, indent=4))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    net, attachment, rt = _prepare(args, must_exist=True)
    if not rt.check(net, attachment):
        print(f'cnictl: network "{net.name}" sets disableCheck; nothing was checked', file=sys.stderr)
    return 0


def _cmd_del(args: argparse.Namespace) -> int:
    net, attachment, rt = _prepare(args, must_exist=False)
    rt.delete(net, attachment)
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    net = config.find(args.network, args.conf_dir)
    valid = [parse_valid_attachment(item) for item in args.valid]
    if args.dry_run:
        from cnictl import show  # noqa: PLC0415

        if net.disable_gc:
            print(f'cnictl: network "{net.name}" sets disableGC; gc would collect nothing', file=sys.stderr)
        for removal in show.gc_plan(net, args.cache_dir, valid):
            print(removal.text())
        return 0
    if not _runtime(args).gc(net, valid):
        print(f'cnictl: network "{net.name}" sets disableGC; nothing was collected', file=sys.stderr)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from cnictl import show  # noqa: PLC0415

    views = show.collect(show.networks(args.conf_dir, args.network), args.cache_dir)
    print(show.render_json(views) if args.json else show.render_table(views))
    return show.EXIT_DRIFT if any(view.problems for view in views) else 0


def _cmd_status(args: argparse.Namespace) -> int:
    net = config.find(args.network, args.conf_dir)
    if _runtime(args).status(net):
        print(f"{net.name}: ready")
    else:
        print(f'{net.name}: cniVersion {net.cni_version} has no STATUS (needs 1.1.0); not asked')
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    from cni import release as releases  # noqa: PLC0415
    from cnictl import install, service  # noqa: PLC0415

    release = releases.current(install.project_root())
    interpreter = args.python or install.launcher_interpreter()
    for path in install.install(args.dest, install.select(args.only), interpreter=interpreter, direct=args.direct,
                                release=release):
        print(path)
    if args.no_helper or args.direct:  # a helper left from an earlier install refuses these launchers
        return 0
    units = service.install_units(args.unit_dir, interpreter, release)
    for path in units:
        print(path)
    if service.managed_by_systemd(args.unit_dir):
        for action in service.INSTALL_ACTIONS:
            service.systemctl(action)
    else:
        print(f"cnictl: systemd is not running or does not read {args.unit_dir}: the helper's units were "
              "written, not enabled", file=sys.stderr)
        retired = service.retire_stale_helper(_helper_socket(), release)
        if retired:
            print(f"cnictl: {retired}; the next plugin call starts version {release}", file=sys.stderr)
    return 0


def _cmd_uninstall(args: argparse.Namespace) -> int:
    from cnictl import install, service  # noqa: PLC0415

    managed = service.managed_by_systemd(args.unit_dir)
    before, after = service.uninstall_actions(bool(service.our_units(args.unit_dir)))
    for action in before if managed else []:
        service.systemctl(action)
    removed = service.remove_units(args.unit_dir)
    for action in after if managed else []:
        service.systemctl(action)
    for path in [*install.uninstall(args.dest), *removed]:
        print(path)
    return 0


def _helper_socket() -> str:
    """The socket the launchers use: PYCNI_HELPER_SOCKET when set (as they read it), else the default."""
    from cni import launcher  # noqa: PLC0415

    return os.environ.get(launcher.SOCKET_ENV) or launcher.DEFAULT_SOCKET


def _cmd_helper(args: argparse.Namespace) -> int:
    if args.status:
        return _helper_status(args.socket or _helper_socket())
    from cni import helper  # noqa: PLC0415 - heavy: it preloads every plugin

    helper.main(["--socket", args.socket] if args.socket else [])
    return 0


def _helper_status(socket_path: str) -> int:
    from cni import helper, launcher  # noqa: PLC0415
    from cni import release as releases  # noqa: PLC0415
    from cnictl import install  # noqa: PLC0415

    try:
        answer = helper.control(socket_path, launcher.STATUS)
    except (OSError, ValueError) as exc:
        print(f"helper: not running ({socket_path}: {getattr(exc, 'strerror', None) or exc})")
        return 3
    ours = releases.current(install.project_root())
    version = answer.get("version")
    match = ("the installed version" if version == ours
             else f"installed is {ours}: calls run directly until it restarts")
    workers = answer.get("workers") or []
    how = "socket-activated" if answer.get("activated") else "own socket"
    print(f"helper: running, version {version} ({match})")
    print(f"pid: {answer.get('pid')}, up {answer.get('uptime')} s, socket {answer.get('socket')} ({how})")
    print(f"workers: {len(workers)} ({' '.join(str(w) for w in workers)}), {answer.get('idle_workers')} kept idle")
    return 0


def _runtime(args: argparse.Namespace) -> runtime.Runtime:
    return runtime.Runtime([p for p in args.cni_path.split(os.pathsep) if p], args.cache_dir)


Prepared = tuple[config.NetworkList, runtime.Attachment, runtime.Runtime]


def _prepare(args: argparse.Namespace, must_exist: bool) -> Prepared:
    """The network, the attachment the options describe, and a runtime; ``must_exist``: the netns too."""
    net = config.find(args.network, args.conf_dir)
    netns = resolve_netns(args.netns)
    if must_exist and not os.path.exists(netns):
        hint = f" (create it with: ip netns add {args.netns})" if "/" not in args.netns else ""
        raise CnictlError(f"network namespace {netns} does not exist{hint}")
    attachment = runtime.Attachment(
        container_id=args.container_id or derive_container_id(netns),
        netns=netns,
        ifname=args.ifname,
        cni_args=cni_args_from(args.cni_args, os.environ.get("CNI_ARGS")),
        capability_args=capability_args_from(os.environ.get("CAP_ARGS"), args.port_mappings, args.publish,
                                             args.cap),
    )
    return net, attachment, _runtime(args)


def resolve_netns(value: str) -> str:
    """A bare name is an ``ip netns`` name under /run/netns; anything with a '/' is a path."""
    if not value:
        raise CnictlError("NETNS must not be empty")
    return os.path.abspath(value) if "/" in value else os.path.join(NETNS_DIR, value)


def derive_container_id(netns_path: str) -> str:
    """A stable container ID for a netns (cnitool hashes the path the same way)."""
    return "cnictl-" + hashlib.sha512(netns_path.encode()).hexdigest()[:20]


def cni_args_from(flag: str | None, env_value: str | None) -> list[tuple[str, str]] | None:
    """``K=V;K=V`` from --args, else from CNI_ARGS; None when neither is given."""
    raw = flag if flag is not None else (env_value or None)
    if raw is None:
        return None
    pairs = []
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not key or not sep or "=" in value:
            raise CnictlError(f'invalid CNI_ARGS pair "{pair}": expected KEY=VALUE')
        pairs.append((key, value))
    return pairs


def capability_args_from(env_caps: str | None, port_mappings: str | None, publish: list[str],
                         caps: list[str]) -> dict[str, Any] | None:
    """CAP_ARGS, then --port-mappings / --publish, then --cap; None when nothing was given."""
    if not (env_caps or port_mappings or publish or caps):
        return None
    out: dict[str, Any] = {}
    if env_caps:
        loaded = _json_value(env_caps, "CAP_ARGS")
        if not isinstance(loaded, dict):
            raise CnictlError("CAP_ARGS must be a JSON object")
        out.update(loaded)
    if port_mappings and publish:
        raise CnictlError("give port mappings either with --port-mappings or with --publish, not both")
    if port_mappings:
        mappings = _json_value(port_mappings, "--port-mappings")
        if not isinstance(mappings, list) or not all(isinstance(m, dict) for m in mappings):
            raise CnictlError("--port-mappings must be a JSON list of objects")
        out["portMappings"] = mappings
    if publish:
        out["portMappings"] = [parse_publish(item) for item in publish]
    for item in caps:
        name, sep, value = item.partition("=")
        if not name or not sep:
            raise CnictlError(f'invalid --cap "{item}": expected NAME=JSON')
        if name == "portMappings" and (port_mappings or publish):
            raise CnictlError("portMappings given twice (--cap and --publish/--port-mappings)")
        out[name] = _json_value(value, f"--cap {name}")
    return out


def parse_publish(text: str) -> dict[str, Any]:
    """``HOST:CONTAINER[/PROTO][@HOSTIP]`` -> a portMappings entry (CONVENTIONS.md)."""
    spec, at, host_ip = text.partition("@")
    ports, slash, protocol = spec.partition("/")
    host, colon, container = ports.partition(":")
    if not colon:
        raise CnictlError(f'invalid --publish "{text}": expected HOST:CONTAINER[/PROTO][@HOSTIP]')
    protocol = protocol.lower() if slash else "tcp"
    if protocol not in PROTOCOLS:
        raise CnictlError(f'invalid --publish "{text}": protocol must be one of {", ".join(PROTOCOLS)}')
    mapping: dict[str, Any] = {
        "hostPort": _port(host, text),
        "containerPort": _port(container, text),
        "protocol": protocol,
    }
    if at:
        mapping["hostIP"] = _ip(host_ip, text)
    return mapping


def parse_valid_attachment(text: str) -> tuple[str, str]:
    container_id, sep, ifname = text.partition("/")
    if not container_id or not sep or not ifname or "/" in ifname:
        raise CnictlError(f'invalid --valid "{text}": expected CONTAINERID/IFNAME')
    return container_id, ifname


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CnictlError(f'invalid --publish "{whole}": port "{text}" is not a number from 1 to 65535')
    return int(text)


def _ip(text: str, whole: str) -> str:
    import ipaddress  # noqa: PLC0415 - only --publish with a host IP needs it

    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        raise CnictlError(f'invalid --publish "{whole}": "{text}" is not an IP address') from None


def _json_value(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CnictlError(f"{what}: not valid JSON ({exc}); strings need quotes, e.g. "
                          f"mac='\"0a:58:0a:58:00:09\"'") from None


if __name__ == "__main__":
    raise SystemExit(main())
