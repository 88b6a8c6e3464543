"""The optional resident helper: a warm process that runs plugin calls for the installed executables.

It imports every plugin and its libraries once, then forks one child per call. The child joins the
caller's mount and network namespaces (their file descriptors come over the socket), takes the
caller's stderr and environment, runs ``skel.execute`` exactly as the executable would, sends back
stdout and the exit code, and exits. One call's state never leaks into another, a crashing call
cannot take the helper down, and if the helper dies the child still answers (it owns the socket);
if a child dies the executable reports code 11 ("try again later"), as if the plugin had been killed.

A few workers are forked ahead and wait in accept(), each serving exactly one call and exiting, so
no fork sits on a call's critical path. Only root may connect (SO_PEERCRED), and the socket is
created 0600.

The socket comes from the service manager when one passes it (socket activation, the sd_listen_fds
protocol: ``LISTEN_PID``/``LISTEN_FDS``, descriptor 3; ``cnictl install`` writes the systemd units),
otherwise the helper binds it itself. The helper serves only launchers of its own release
(``cni.release``) and refuses the others, which then run the plugin themselves. Two control
requests (``status``, ``exit``) let ``cnictl`` ask what runs and retire a helper after an upgrade.
"""
from __future__ import annotations

import importlib
import os
import signal
import socket
import struct
import sys
import time
from typing import NamedTuple

from cni import launcher

PRELOAD = ("bridge.plugin:PLUGIN", "hostlocal.plugin:PLUGIN", "portmap.plugin:PLUGIN", "firewall.plugin:PLUGIN",
           "loopback.plugin:PLUGIN", "tuning.plugin:PLUGIN", "ptp.plugin:PLUGIN", "hostdevice.plugin:PLUGIN")
# Heavy libraries the plugins import lazily; importing them here is the whole point of the helper.
PRELOAD_MODULES = ("bridge.config", "bridge.model", "bridge.links", "bridge.ipmasq", "bridge.check",
                   "portmap.config", "portmap.model", "firewall.model",
                   "portmap.apply", "firewall.config", "hostlocal.config", "hostlocal.allocator",
                   "cni.invoke", "cni.result", "cni.types", "netlink.rtnl", "chains.table",
                   # both netfilter backends' layouts: which one a call needs is in its config
                   "chains.backends", "bridge.ipmasq_iptables", "bridge.ipmasq_nft", "portmap.nft", "firewall.apply",
                   "firewall.nft", "chains.nft.conditions", "ipaddress", "shlex")
LISTEN_FDS_START = 3  # sd_listen_fds(3): the first passed descriptor
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MAX_REQUEST = 64 << 20
IDLE_WORKERS = 4  # forked ahead of time, each serving exactly one call
PROFILE_DIR = os.environ.get("PYCNI_HELPER_PROFILE", "")  # the helper's own environment, not a caller's
# PYCNI_HELPER_RSS_LOG=<file>: each worker appends "<plugin> <command> <peak RSS KiB>" after its call
# (a worker is reaped by the kernel, so nobody can wait4 for its usage; the benchmark reads this).
RSS_LOG = os.environ.get("PYCNI_HELPER_RSS_LOG", "")


def _load(entry: str) -> object:
    module_name, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module_name), attr or "PLUGIN")


def preload() -> dict[str, object]:
    plugins = {}
    for entry in PRELOAD:
        try:
            plugins[entry] = _load(entry)
        except ImportError as exc:
            print(f"helper: cannot preload {entry}: {exc}", file=sys.stderr)
    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            print(f"helper: cannot preload {name}: {exc}", file=sys.stderr)
    _warm_models()
    _warm_netfilter()
    return plugins


def _warm_models() -> None:
    """Take the configs' fast paths once, so their lazy imports happen here; the pydantic models
    (the fallback for anything unusual) are built when PRELOAD_MODULES imports them."""
    for module_name, fn, sample in (
        ("portmap.config", "load", {"cniVersion": "1.0.0", "name": "warm",
                                    "runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 1}]}}),
        ("bridge.config", "load", {"cniVersion": "1.0.0", "name": "warm"}),
    ):
        try:
            getattr(importlib.import_module(module_name), fn)(sample)
        except Exception as exc:  # noqa: BLE001 - warming is an optimisation only
            print(f"helper: warming {module_name} failed: {exc}", file=sys.stderr)


def _warm_netfilter() -> None:
    """Load libiptc and the xtables extensions the plugins use (comment, multiport, tcp, udp,
    addrtype, mark, conntrack, DNAT, MARK, MASQUERADE) by encoding a typical rule set once."""
    try:
        import ipaddress  # noqa: PLC0415

        from chains import codec, libiptc  # noqa: PLC0415
        from chains.rule import parse_args  # noqa: PLC0415
        from portmap import apply, config  # noqa: PLC0415

        conf = config.load({"cniVersion": "1.0.0", "name": "warm", "runtimeConfig": {"portMappings": [
            {"hostPort": 1, "containerPort": 1, "protocol": "tcp"}, {"hostPort": 2, "containerPort": 2, "protocol": "udp"}]}})
        for family, address in ((4, "10.0.0.2/24"), (6, "fd00::2/64")):
            libiptc.library(family)
            owned = apply.container_chain(conf, "warm", "warm", family, ipaddress.ip_interface(address))
            rules = [*owned.body, *owned.jump_rules(), *apply._setmark(0x2000).body, *apply._masq(0x2000).body,
                     *apply._toplevel().jump_rules(),
                     parse_args("X", ["-d", address, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                                      "-j", "ACCEPT"])]
            for rule in rules:
                codec.build_entry(family, rule, target_is_chain=rule.target.is_chain_jump)
    except Exception as exc:  # noqa: BLE001 - warming is an optimisation only
        print(f"helper: warming netfilter failed: {exc}", file=sys.stderr)


class Serving(NamedTuple):
    """What a worker knows about its helper, for version checks and status answers."""

    release: str
    socket_path: str
    activated: bool  # the socket came from the service manager
    started: float
    taken_w: int  # the pipe to the helper: b"x" = a worker took a connection, b"q" = exit


TAKEN, QUIT = b"x", b"q"


def serve(path: str) -> None:
    passed = passed_socket()  # before anything else: the variables must not reach any child
    from cni import release  # noqa: PLC0415

    # Digest first, then import: a source edited in between makes this helper's release older than
    # the code it runs, so launchers installed after the edit are refused rather than misserved.
    current = release.current()
    plugins = preload()
    from cni import log  # noqa: PLC0415

    # PYCNI_LOG_FILE / PYCNI_LOG_LEVEL of the helper itself: a worker's environment is its caller's.
    log.defaults_from_environment(os.environ)
    import gc  # noqa: PLC0415

    gc.freeze()  # what was loaded stays put: no collection in the helper rewrites the shared pages
    server = passed if passed is not None else _bind(path)
    path = server.getsockname() or path
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    how = "passed by the service manager" if passed else "bound"
    print(f"helper: version {current}, serving on {path} ({how})", file=sys.stderr, flush=True)
    taken_r, taken_w = os.pipe()
    serving = Serving(current, path, passed is not None, time.time(), taken_w)
    try:
        for _ in range(IDLE_WORKERS):
            _spawn_worker(server, serving, plugins)
        while True:  # each TAKEN byte is a worker that took a connection: replace it
            for byte in os.read(taken_r, 64):
                if byte == QUIT[0]:
                    print("helper: exiting on request", file=sys.stderr, flush=True)
                    return
                _spawn_worker(server, serving, plugins)
    finally:  # idle workers die with the helper (PR_SET_PDEATHSIG); calls in progress finish
        server.close()
        if passed is None:  # a passed socket belongs to the service manager, which keeps listening
            try:
                os.unlink(path)
            except OSError:
                pass


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)  # unwinds serve(), which removes the socket it bound


def passed_socket() -> socket.socket | None:
    """The listening socket a service manager passed (sd_listen_fds), or None.

    The variables are consumed either way, so nothing the helper starts mistakes them for its own.
    """
    pid, count = os.environ.pop("LISTEN_PID", ""), os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit() or int(count) == 0:
        return None  # not socket-activated, or the variables were meant for another process
    if int(count) != 1:
        raise SystemExit(f"helper: expected one socket from the service manager, got {count}")
    sock = socket.socket(fileno=LISTEN_FDS_START)
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        raise SystemExit("helper: the passed descriptor is not a listening unix stream socket")
    os.set_inheritable(LISTEN_FDS_START, False)
    return sock


def _bind(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    server.listen(256)
    return server


def _spawn_worker(server: socket.socket, serving: Serving, plugins: dict[str, object]) -> None:
    """Fork a worker that waits in accept() for one call, so no fork sits on a call's critical path."""
    if os.fork() != 0:
        return
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent(True)  # an idle worker must not outlive the helper
        _own_pages()
        conn, _ = server.accept()
        _die_with_parent(False)  # a call in progress finishes even if the helper goes away
        server.close()
        os.write(serving.taken_w, TAKEN)
        os._exit(_handle(conn, plugins, serving))
    except BaseException:  # noqa: BLE001 - a worker never returns into the parent's loop
        os._exit(1)


def _own_pages() -> None:
    """Copy the shared heap pages now, while idle, rather than one page fault at a time during a call.

    A forked worker shares the helper's memory copy-on-write, and CPython writes to every object it
    uses (reference counts), so the first call would pay a fault and a page copy for each page it
    touches. Taking a reference to every tracked object once does most of that work up front.
    The worker lives for one call: the cyclic garbage collector has nothing to gain there.
    """
    import gc  # noqa: PLC0415

    gc.disable()
    everything = gc.get_objects()
    del everything


def _die_with_parent(enabled: bool) -> None:
    import ctypes  # noqa: PLC0415 - already loaded by the preloaded libraries

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL if enabled else 0, 0, 0, 0)
    if enabled and os.getppid() == 1:  # the helper died before prctl took effect
        os._exit(0)


def _peer_is_root(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == 0


def _handle(conn: socket.socket, plugins: dict[str, object], serving: Serving) -> int:
    fds: list[int] = []
    try:
        if not _peer_is_root(conn):
            return 1
        body, fds = _receive(conn)
        head, _, rest = body.partition(b"\0")
        if head.startswith(launcher.CALL):
            caller_release = head[len(launcher.CALL):].decode(errors="replace")
            if caller_release != serving.release:  # it would run other code than the launcher's
                _reply(conn, launcher.REFUSED, serving.release.encode())
                return 0
            if len(fds) != 3:
                raise ValueError(f"expected 3 descriptors, got {len(fds)}")
            entry, env, stdin = launcher.decode_request(rest)
            call_fds, fds = fds, []
            return _call(conn, plugins, entry, env, stdin, call_fds)
        if head == launcher.STATUS:
            _reply_json(conn, status(serving))
        elif head == launcher.EXIT:
            _reply_json(conn, dict(status(serving), exiting=True))
            os.write(serving.taken_w, QUIT)
        else:
            raise ValueError(f"unknown request {head[:40]!r}")
        return 0
    except Exception as exc:  # noqa: BLE001 - the caller then sees "helper ended before answering"
        print(f"helper: call failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()


def _reply(conn: socket.socket, kind: bytes, payload: bytes) -> None:
    conn.sendall(kind + len(payload).to_bytes(8, "big") + payload)


def _reply_json(conn: socket.socket, answer: dict[str, object]) -> None:
    import json  # noqa: PLC0415 - loaded by the preloaded plugins already

    _reply(conn, launcher.CONTROL, json.dumps(answer).encode())


def status(serving: Serving) -> dict[str, object]:
    """What ``cnictl helper --status`` shows; asked of a worker, so the helper is its parent."""
    helper_pid = os.getppid()
    return {"version": serving.release, "pid": helper_pid, "socket": serving.socket_path,
            "activated": serving.activated, "uptime": round(time.time() - serving.started, 1),
            "workers": sorted(set(_children(helper_pid)) - {os.getpid()}), "idle_workers": IDLE_WORKERS}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan for the parent pid
        found = []
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if name.isdigit() and len(fields) > 1 and fields[1] == str(pid):
                found.append(int(name))
        return found


def _call(conn: socket.socket, plugins: dict[str, object], entry: str, env: dict[str, str], stdin: bytes,
          fds: list[int]) -> int:
    """Run one plugin call in the caller's namespaces, with its stderr and environment."""
    netns_fd, mntns_fd, stderr_fd = fds
    try:
        from netlink import netns  # noqa: PLC0415

        netns.setns(mntns_fd, CLONE_NEWNS)
        netns.setns(netns_fd, CLONE_NEWNET)
        os.dup2(stderr_fd, 2)
    finally:
        for fd in fds:
            os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    plugin = plugins.get(entry) or _load(entry)
    from cni import skel  # noqa: PLC0415

    out, code = _execute(skel, plugin, env, stdin)
    _reply(conn, launcher.RESULT, bytes([code & 0xFF]) + out)
    if RSS_LOG:
        _log_peak_rss(getattr(plugin, "name", entry), env.get("CNI_COMMAND", ""))
    return 0


def _log_peak_rss(plugin_name: str, command: str) -> None:
    import resource  # noqa: PLC0415

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fd = os.open(RSS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{plugin_name} {command} {peak_kib}\n".encode())
    finally:
        os.close(fd)


def _execute(skel: object, plugin: object, env: dict[str, str], stdin: bytes) -> tuple[bytes, int]:
    """skel.execute, under cProfile when the helper was started with PYCNI_HELPER_PROFILE=<dir>:
    one ``<plugin>-<command>-<pid>.prof`` per call, for finding where a call's time goes."""
    profile_dir = PROFILE_DIR
    if not profile_dir:
        return skel.execute(plugin, env, stdin)  # type: ignore[attr-defined, no-any-return]
    import cProfile  # noqa: PLC0415

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(skel.execute, plugin, env, stdin)  # type: ignore[attr-defined, no-any-return]
    finally:
        name = f"{getattr(plugin, 'name', 'plugin')}-{env.get('CNI_COMMAND', '')}-{os.getpid()}.prof"
        profiler.dump_stats(os.path.join(profile_dir, name))


def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    """One request's body and the descriptors that came with it."""
    data, ancdata, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * 4))
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += [int.from_bytes(payload[i:i + 4], sys.byteorder, signed=True) for i in range(0, len(payload), 4)]
    if len(data) < 8:
        data += launcher.recv_exact(conn, 8 - len(data))
    size = int.from_bytes(data[:8], "big")
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = data[8:]
    if len(body) < size:
        body += launcher.recv_exact(conn, size - len(body))
    return body, fds


def control(path: str, request: bytes, timeout: float = 60.0) -> dict[str, object]:
    """Send a control request (launcher.STATUS or launcher.EXIT); the helper's JSON answer.

    OSError when no helper listens; a socket-activated helper is started by the asking (and its
    first start imports everything, hence the long timeout).
    """
    import json  # noqa: PLC0415

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(len(request).to_bytes(8, "big") + request)
        try:
            kind, payload = launcher.read_reply(sock)
        except EOFError:
            raise OSError(f"the helper on {path} closed the connection without answering") from None
    if kind != launcher.CONTROL:
        raise OSError(f"the helper on {path} gave an unexpected answer ({kind!r})")
    answer = json.loads(payload)
    if not isinstance(answer, dict):
        raise OSError(f"the helper on {path} gave an unexpected answer")
    return answer


def main(argv: list[str] | None = None) -> None:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="Run the resident helper for the installed CNI plugins.")
    parser.add_argument("--socket", default=os.environ.get(launcher.SOCKET_ENV) or launcher.DEFAULT_SOCKET)
    args = parser.parse_args(argv)
    serve(args.socket)


if __name__ == "__main__":
    main()
