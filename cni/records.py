"""Ownership records: what one attachment owns on the node, kept on disk.

A record is written *before* the resources it names are created and removed only after they are
gone, so DEL, CHECK and GC can act exactly on what an attachment owns without prevResult, without
runtime arguments, after a crash half-way through ADD, or after another program rewrote the
tables. One JSON file per (owner plugin, network, container ID, ifname):

    <stateDir>/<owner>/<network>/<containerID>/<ifname>.json

The path components are validated names (network and container ID by the spec's regex, ifname
by the kernel's rules), so none of them can climb out of the state directory, and every directory
below it is opened without following symlinks: one planted there redirects no write and no unlink
(the record is then unreadable, as a corrupt one is). Directories are created 0700, records 0600.

Every record also names its **origin**: the boot (``/proc/sys/kernel/random/boot_id``) and the
network namespace (st_dev/st_ino of ``/proc/thread-self/ns/net`` plus the namespace's cookie, which
unlike the inode number is never reused within a boot) it was written in. A record describes rules
in the tables of that namespace during that boot only: when a node loses its tables and namespaces
without DELs (a reboot with /var/lib kept, a node namespace deleted), its records are *foreign* to
the node that comes after, never keep a rule or a claim alive there, and are collected by GC.
"""
from __future__ import annotations

import os
import sys
TYPE_CHECKING = False  # typing itself costs ~2 ms to import; annotations are strings here

from cni.errors import IO_FAILURE, CNIError
from cni.files import atomic_write_at, is_leftover_of, make_dirs, open_dir_below, read_regular, unlink_quietly

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

DEFAULT_STATE_DIR = "/var/lib/cni/pycni"
STATE_DIR_ENV = "PYCNI_STATE_DIR"
RECORD_FORMAT = 1
# A save racing other attachments' deletes of empty directories retries this often: each try is a few
# syscalls, and two busy peers once made a save lose 5 in a row.
_SAVE_ATTEMPTS = 100


def state_dir(config: dict[str, Any]) -> str:
    """The state directory: the plugin config's ``stateDir``, else $PYCNI_STATE_DIR, else the default."""
    configured = config.get("stateDir")
    if isinstance(configured, str) and configured:
        if not os.path.isabs(configured):
            raise CNIError(7, f"stateDir must be an absolute path: {configured!r}")
        return os.path.normpath(configured)
    return os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


ORIGIN_KEY = "origin"
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
_SO_NETNS_COOKIE = 71  # linux/socket.h; Python's socket module names it only from 3.13 on
_origin: tuple[int, dict[str, Any]] | None = None  # (pid, origin): read once per process


def current_origin() -> dict[str, Any]:
    """Where this process runs: ``{"bootID": str, "netns": "dev:ino", "netnsCookie": int}``.

    Read once per process, in the thread that runs the plugin (plugins run in the node namespace).
    Cached per pid: the resident helper forks its workers before they join the caller's namespace,
    so a value computed in a parent is never trusted in a child. A field that cannot be read is left
    out and then never makes a record foreign.
    """
    global _origin
    pid = os.getpid()
    if _origin is None or _origin[0] != pid:
        _origin = (pid, _read_origin())
    return _origin[1]


def _read_origin() -> dict[str, Any]:
    origin: dict[str, Any] = {}
    try:
        with open(_BOOT_ID_FILE, "rb") as f:
            origin["bootID"] = f.read().decode().strip()
    except OSError:
        pass
    for path in ("/proc/thread-self/ns/net", "/proc/self/ns/net"):
        try:
            st = os.stat(path)
        except OSError:
            continue
        origin["netns"] = f"{st.st_dev}:{st.st_ino}"
        break
    try:
        import _socket  # noqa: PLC0415 - the C half; the socket wrapper costs ~6 ms

        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            origin["netnsCookie"] = int.from_bytes(sock.getsockopt(_socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8),
                                                   sys.byteorder)
        finally:
            sock.close()
    except OSError:  # kernels before 5.14: the inode number alone then
        pass
    return origin


def same_origin(a: Any, b: Any) -> bool:
    """Whether two origins may be the same boot and namespace: only fields both name are compared."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return True
    return all(a[key] == b[key] for key in ("bootID", "netns", "netnsCookie") if key in a and key in b)


def origin_of(data: dict[str, Any]) -> str:
    """``"current"``, ``"unknown"`` (a record written before records named their origin),
    ``"another boot"`` or ``"another network namespace"``."""
    recorded = data.get(ORIGIN_KEY)
    if not isinstance(recorded, dict):
        return "unknown"
    here = current_origin()
    if "bootID" in recorded and "bootID" in here and recorded["bootID"] != here["bootID"]:
        return "another boot"
    return "current" if same_origin(recorded, here) else "another network namespace"


def is_foreign(data: dict[str, Any]) -> bool:
    """Whether a record describes another boot's or another namespace's tables, so that nothing it names
    exists here. Records without an origin (written by earlier versions) are *not* foreign: they are
    trusted as before, since nothing says they are stale."""
    return not same_origin(data.get(ORIGIN_KEY), current_origin())


def _safe_component(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise CNIError(7, f"unsafe name for a state file: {name!r}")
    return name


class Attachment(tuple):  # noqa: SLOT001 - a plain tuple: hashable, comparable, free to import
    """(network, container ID, ifname): what one record is about."""

    __slots__ = ()

    def __new__(cls, network: str, container_id: str, ifname: str) -> "Attachment":
        return tuple.__new__(cls, (network, container_id, ifname))

    network = property(lambda self: self[0])
    container_id = property(lambda self: self[1])
    ifname = property(lambda self: self[2])

    @classmethod
    def of(cls, req: Any) -> "Attachment":
        """The attachment a plugin call (``cni.skel.Request``) is about."""
        return cls(req.network, req.container_id, req.ifname)


class RecordStore:
    """The records of one owner plugin under one state directory."""

    @classmethod
    def of(cls, req: Any, owner: str) -> "RecordStore":
        """``owner``'s records in the state directory a plugin call's config names."""
        return cls(state_dir(req.config), owner)

    def __init__(self, root: str, owner: str) -> None:
        self.root = root
        self.owner = _safe_component(owner)
        self.base = os.path.join(root, self.owner)

    def path(self, att: Attachment) -> str:
        return os.path.join(self.root, *self._dirs(att), self._name(att))

    def _dirs(self, att: Attachment) -> list[str]:
        return [self.owner, _safe_component(att.network), _safe_component(att.container_id)]

    @staticmethod
    def _name(att: Attachment) -> str:
        return _safe_component(att.ifname) + ".json"

    def keeps_records(self) -> bool:
        """Whether this owner has kept records under this state directory (its directory exists).

        Then a missing record is authoritative: records are written before anything they name is
        created and removed after it is gone, so an attachment without one owns nothing. Without the
        directory (a fresh node, or a state directory lost with a tmpfs) nothing can be concluded.
        """
        return os.path.isdir(self.base)

    def load(self, att: Attachment) -> dict[str, Any] | None:
        """The record's data, None when there is none. A corrupt record raises CNIError (code 5)."""
        path = self.path(att)
        try:
            dir_fd = open_dir_below(self.root, self._dirs(att))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot read ownership record {path}: {exc}") from None
        try:
            raw = read_regular(self._name(att), dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot read ownership record {path}: {exc}") from None
        finally:
            os.close(dir_fd)
        import json  # noqa: PLC0415 - ~8 ms with re; VERSION and the helper client never need it

        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
                raise ValueError("not a record of this format")
        except ValueError as exc:
            raise CNIError(IO_FAILURE, f"corrupt ownership record {path}: {exc}") from None
        return data

    def save(self, att: Attachment, data: dict[str, Any]) -> None:
        body = {"format": RECORD_FORMAT, "network": att.network, "containerID": att.container_id,
                "ifname": att.ifname}
        body.update(data)
        body[ORIGIN_KEY] = current_origin()  # after the payload: a record re-saved from a load is made here now
        import json  # noqa: PLC0415

        payload = json.dumps(body, sort_keys=True).encode()
        for _ in range(_SAVE_ATTEMPTS):
            try:
                make_dirs(self.root, 0o700)
                dir_fd = open_dir_below(self.root, self._dirs(att), create=True, mode=0o700)
                try:
                    atomic_write_at(dir_fd, self._name(att), payload, 0o600, durable=False)
                finally:
                    os.close(dir_fd)
                return
            except FileNotFoundError as exc:
                # Another attachment's delete removed a directory it found empty (the network's, when
                # its last record went) between our mkdir and our use of it: create it again.
                missing = exc
            except OSError as exc:
                raise CNIError(IO_FAILURE, f"cannot write ownership record {self.path(att)}: {exc}") from None
        raise CNIError(IO_FAILURE, f"cannot write ownership record {self.path(att)}: {missing}")

    def load_for_delete(self, att: Attachment) -> dict[str, Any] | None:
        """The record a DEL acts on: the record itself; ``{}`` (unknown: tear down by name) when it
        cannot be read or there is no state directory at all (lost, or a fresh node); None when there
        is none, or when it is another boot's or network namespace's (it owns nothing here)."""
        from cni import log  # noqa: PLC0415

        try:
            record = self.load(att)
        except CNIError as err:  # a corrupt record must not make DEL fail
            print(f"{self.owner}: {err}; tearing down without it", file=sys.stderr)
            log.warning("unreadable record", msg=f"{err}; tearing down without it")
            return {}
        if record is None:
            return None if self.keeps_records() else {}
        return None if is_foreign(record) else record

    def delete(self, att: Attachment) -> None:
        """Remove the record (and the temporary file of a save that was killed), then its directories
        when they are empty. Nothing is removed through a symlink: a path that has one is not ours."""
        dirs, name = self._dirs(att), self._name(att)
        try:
            dir_fd = open_dir_below(self.root, dirs)
        except FileNotFoundError:
            return
        except OSError as exc:
            print(f"not removing ownership record {self.path(att)}: {exc}", file=sys.stderr)
            return
        try:
            for entry in os.listdir(dir_fd):
                if entry == name or is_leftover_of(entry, name):
                    unlink_quietly(entry, dir_fd)
        finally:
            os.close(dir_fd)
        for depth in (len(dirs) - 1, len(dirs) - 2):  # the container's directory, then the network's
            try:
                parent_fd = open_dir_below(self.root, dirs[:depth])
            except OSError:
                return
            try:
                os.rmdir(dirs[depth], dir_fd=parent_fd)  # only succeeds when empty; that is the point
            except OSError:
                return
            finally:
                os.close(parent_fd)

    def attachments(self, network: str | None = None) -> Iterator[Attachment]:
        """Every attachment with a record (of one network, or of all), corrupt ones included."""
        networks = [network] if network else _listdir(self.base)
        for net in networks:
            net_dir = os.path.join(self.base, net)
            for cid in _listdir(net_dir):
                for name in _listdir(os.path.join(net_dir, cid)):
                    if name.endswith(".json") and not name.startswith("."):
                        yield Attachment(net, cid, name[: -len(".json")])

    def any_other_than(self, att: Attachment) -> bool:
        """Whether any attachment but ``att`` has a record (stops at the first one found)."""
        return any(other != att for other in self.attachments())


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError as exc:
        print(f"cannot list {path}: {exc}", file=sys.stderr)
        return []
