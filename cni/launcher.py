"""What an installed plugin executable runs: hand the call to the resident helper, or do it here.

A runtime execs a plugin per container and waits for it; most of a Python plugin's time would be
spent importing its libraries. When the optional resident helper (``cnictl helper``) is running,
the executable only forwards its environment, stdin, stderr and namespaces over a unix socket and
relays the answer: a warm worker of the helper runs the very same ``skel.execute`` inside the
caller's network and mount namespaces. When there is no helper (or ``PYCNI_HELPER=0``), the
executable runs the plugin itself. Either way the observable behaviour is identical.

Each launcher names the release it was installed with (``cni.release``); a helper of another
release refuses the call (it would run other code) and the launcher runs the plugin itself, saying
so on stderr. The wire format (``encode_request``, ``read_reply``) keeps the version check first so
that helpers and launchers of any two releases understand a refusal.

Every exec pays for this module before anything else, so it imports only modules built into the
interpreter (``posix``, ``_socket``, ``sys``: no file is opened to import them) and works on the
raw bytes of the environment and of stdin/stdout.
"""
import _socket
import posix
import sys

DEFAULT_SOCKET = "/run/pycni/helper.sock"
SOCKET_ENV = "PYCNI_HELPER_SOCKET"
DISABLE_ENV = "PYCNI_HELPER"  # "0" = never use the helper
SOL_SOCKET = 1
SCM_RIGHTS = 1
# A request is an 8-byte length and a body whose first field is its head: CALL + the launcher's
# release (then entry, environment, stdin; the caller's netns, mntns and stderr as SCM_RIGHTS), or
# a control request (STATUS, EXIT) without descriptors. A reply is a kind byte, an 8-byte length and
# a payload: RESULT (exit code byte + stdout), REFUSED (the helper's release), or CONTROL (JSON).
CALL = b"call "
STATUS = b"status"
EXIT = b"exit"
RESULT, REFUSED, CONTROL = b"R", b"V", b"C"
HELPER_DIED = (b'{"cniVersion": "1.1.0", "code": 11, "msg": "the plugin helper ended before answering; '
               b'try again later"}\n')


def encode_request(entry: str, env: "dict[bytes, bytes]", stdin: bytes, release: str = "") -> bytes:
    """CALL+release NUL entry NUL, env as K=V NUL-separated, an empty field, then stdin; length-prefixed."""
    head = [CALL + release.encode(), entry.encode()]
    head += [key + b"=" + value for key, value in env.items() if b"\0" not in key + value]
    body = b"\0".join(head) + b"\0\0" + stdin
    return len(body).to_bytes(8, "big") + body


def decode_request(body: bytes) -> "tuple[str, dict[str, str], bytes]":
    """The rest of a CALL body after its head: (entry, environment, stdin)."""
    head, _, stdin = body.partition(b"\0\0")
    fields = head.split(b"\0")
    env = {}
    for item in fields[1:]:
        key, _, value = item.decode(errors="surrogateescape").partition("=")
        env[key] = value
    return fields[0].decode(), env, stdin


def recv_exact(sock: "_socket.socket", size: int) -> bytes:
    """Exactly ``size`` bytes from ``sock``; EOFError when it closes first."""
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = posix.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


def read_reply(sock: "_socket.socket") -> "tuple[bytes, bytes]":
    """(kind, payload) of one reply; EOFError when the helper closes first."""
    header = recv_exact(sock, 9)
    return header[:1], recv_exact(sock, int.from_bytes(header[1:], "big"))


def _via_helper(entry: str, stdin: bytes, release: str) -> "tuple[bytes, int] | None":
    """(stdout, exit code) from the helper, or None when no helper is listening or it refused."""
    environ = posix.environ  # bytes keys and values, exactly what the runtime passed
    path = environ.get(SOCKET_ENV.encode()) or DEFAULT_SOCKET.encode()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None  # no helper: do the work here
        fds = [posix.open("/proc/thread-self/ns/net", posix.O_RDONLY),
               posix.open("/proc/thread-self/ns/mnt", posix.O_RDONLY)]
        try:
            payload = encode_request(entry, environ, stdin, release)
            fd_bytes = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (*fds, 2))
            sock.sendmsg([payload], [(SOL_SOCKET, SCM_RIGHTS, fd_bytes)])
        finally:
            for fd in fds:
                posix.close(fd)
        try:
            kind, payload = read_reply(sock)
        except (EOFError, OSError):
            return HELPER_DIED, 1
        if kind == RESULT and payload:
            return payload[1:], payload[0]
        if kind == REFUSED:  # nothing was run: doing the work here is safe
            posix.write(2, b"pycni: helper runs version " + payload + b", this plugin is "
                        + (release.encode() or b"unknown") + b"; running directly\n")
            return None
        return HELPER_DIED, 1
    finally:
        sock.close()


def main(entry: str, release: str = "") -> None:
    """Run one call of the plugin ``entry``; ``release`` is what ``cnictl install`` installed."""
    environ = posix.environ
    command = environ.get(b"CNI_COMMAND", b"")
    if command and environ.get(DISABLE_ENV.encode(), b"1") != b"0":
        stdin = b"" if command == b"VERSION" else _read_all(0)
        answer = _via_helper(entry, stdin, release)
        if answer is not None:
            out, code = answer
            if out:
                _write_all(1, out)
            posix._exit(code)  # nothing to flush or tear down; the interpreter's shutdown costs ~1 ms
        sys.stdin = _Replay(stdin)  # type: ignore[assignment]  # the local run reads it again
    run_here(entry)


def run_here(entry: str) -> None:
    """Run the plugin in this process, as a launcher without the helper would."""
    from importlib import import_module  # noqa: PLC0415

    from cni import skel  # noqa: PLC0415

    module_name, _, attr = entry.partition(":")
    try:
        plugin = getattr(import_module(module_name), attr or "PLUGIN")
    except (ImportError, AttributeError) as exc:  # a broken install still answers in the protocol
        sys.stdout.write('{"cniVersion": "1.1.0", "code": 999, "msg": "cannot load plugin %s: %s"}\n'
                         % (entry, str(exc).replace('"', "'").replace("\\", "/")))
        sys.exit(1)
    skel.run(plugin)


class _Replay:
    """Stands in for sys.stdin after the bytes were already read for the helper."""

    def __init__(self, data: bytes) -> None:
        import io  # noqa: PLC0415

        self.buffer = io.BytesIO(data)
