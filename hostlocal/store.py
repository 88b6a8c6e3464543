"""The on-disk reservation store, byte-compatible with the Go reference (reference §4.2).

Layout of ``<dataDir>/<network>/`` (directories 0755, like the reference):

- ``<ip>``: one file per reserved address, named by the canonical textual IP, created with
  ``O_EXCL`` (mode 0600) and holding ``<containerID>\\r\\n<ifname>`` with no trailing newline.
  Files holding only ``<containerID>`` were written by older reference versions and still count
  as that container's (for any interface).
- ``last_reserved_ip.<setIndex>``: the last address reserved from range set N, the round-robin
  cursor; written atomically, never deleted.
- ``lock``: flock'ed around every whole ADD / DEL / CHECK / GC, so plugin processes (ours and
  the Go binaries, which lock the same file) are serialised per network.

Only names that parse as IP addresses are reservations; the lock, the cursors, temp files of
atomic writes and strays are never read or removed. A reservation file that cannot be read (not a
regular file, unreadable, oversized) is reported on stderr and skipped: it never blocks the
release of other containers' addresses, and it is never handed out again.
"""
from __future__ import annotations

import contextlib
import os
import sys

from cni.errors import IO_FAILURE, CNIError
from cni.files import atomic_write, flocked, make_dirs
from hostlocal.addresses import parse_ip
from hostlocal.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

    from hostlocal.addresses import IPAddress

LOCK_FILE = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LINE_BREAK = b"\r\n"
DIR_MODE = 0o755
FILE_MODE = 0o600
# Reservation files hold an ID and an interface name; anything bigger is not one of ours.
MAX_RESERVATION_BYTES = 64 * 1024


def warn(message: str) -> None:
    """Diagnostics go to stderr; stdout belongs to the CNI result."""
    sys.stderr.write(f"host-local: {message}\n")


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


class Owner(Record):
    """Who holds a reservation: a (container ID, ifname) attachment, or a legacy bare ID."""

    __slots__ = ("container_id", "ifname")

    def __init__(self, container_id: str, ifname: str | None) -> None:
        self.container_id = container_id
        self.ifname = ifname  # None: written by an old version that recorded only the container ID

    @classmethod
    def attachment(cls, container_id: str, ifname: str) -> Owner:
        return cls(container_id.strip(), ifname)

    def encode(self) -> bytes:
        if self.ifname is None:
            return self.container_id.encode()
        return self.container_id.encode() + LINE_BREAK + self.ifname.encode()

    @classmethod
    def decode(cls, data: bytes) -> Owner:
        """File content -> owner; the whole content is whitespace-trimmed first, as the reference does."""
        text = data.strip()
        container_id, sep, ifname = text.partition(LINE_BREAK)
        if not sep:
            return cls(_decode_text(text), None)
        return cls(_decode_text(container_id), _decode_text(ifname))

    def is_legacy_of(self, container_id: str) -> bool:
        return self.ifname is None and self.container_id == container_id.strip()


def _decode_text(data: bytes) -> str:
    # Undecodable bytes survive as surrogates: they never equal a real ID, and never crash.
    return data.decode("utf-8", errors="surrogateescape")


class Reservation(Record):
    """One reservation file: the address, the file's name and who holds it."""

    __slots__ = ("address", "file_name", "owner")

    def __init__(self, address: IPAddress, file_name: str, owner: Owner) -> None:
        self.address = address
        self.file_name = file_name
        self.owner = owner


class Snapshot:
    """Every reservation in the directory, read once (under the lock)."""

    __slots__ = ("reservations", "unreadable", "unreadable_addresses")

    def __init__(self) -> None:
        self.reservations: dict[IPAddress, Reservation] = {}
        # Reservation-named entries that could not be read: "<name>: <reason>".
        self.unreadable: list[str] = []
        self.unreadable_addresses: set[IPAddress] = set()

    def held_by(self, owner: Owner) -> list[Reservation]:
        """Reservations of this attachment, including legacy ones of the same container ID."""
        return [
            r for r in self.reservations.values()
            if r.owner == owner or r.owner.is_legacy_of(owner.container_id)
        ]

    def to_release(self, owner: Owner) -> list[Reservation]:
        """The attachment's reservations; legacy bare-ID ones only when there are none (as the reference)."""
        exact = [r for r in self.reservations.values() if r.owner == owner]
        if exact:
            return exact
        return [r for r in self.reservations.values() if r.owner.is_legacy_of(owner.container_id)]

    def occupied(self, version: int) -> set[int]:
        """Integer values of every address of one family that must not be handed out."""
        taken = {int(a) for a in self.reservations if a.version == version}
        taken.update(int(a) for a in self.unreadable_addresses if a.version == version)
        return taken

    def add(self, reservation: Reservation) -> None:
        self.reservations[reservation.address] = reservation


class Store:
    """The reservations of one network: ``<dataDir>/<network>``."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    def exists(self) -> bool:
        return os.path.isdir(self.state_dir)

    def create(self) -> None:
        try:
            make_dirs(self.state_dir, DIR_MODE, DIR_MODE)
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"mkdir {self.state_dir}: {_reason(exc)}") from None
        self._refuse_symlink()

    def _refuse_symlink(self) -> None:
        """``<dataDir>/<network>`` is ours: a symlink planted there would redirect every reservation.
        (``dataDir`` itself may be a symlink: that is the administrator's choice.)"""
        if os.path.islink(self.state_dir):
            raise CNIError(IO_FAILURE, f"{self.state_dir} is a symlink; refusing to keep reservations through it")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self._refuse_symlink()
        path = self._path(LOCK_FILE)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(flocked(path))
            except OSError as exc:
                raise CNIError(IO_FAILURE, f"failed to lock {path}: {_reason(exc)}") from None
            yield

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        try:
            entries = list(os.scandir(self.state_dir))
        except FileNotFoundError:
            return snap
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"failed to list {self.state_dir}: {_reason(exc)}") from None
        for entry in entries:
            try:
                address = parse_ip(entry.name)
            except ValueError:
                continue  # lock, cursors, temp files: not reservations
            problem = None
            try:
                if entry.is_file(follow_symlinks=False):
                    owner = Owner.decode(_read_small_file(entry.path))
                    snap.add(Reservation(address, entry.name, owner))
                    continue
                problem = "not a regular file"
            except OSError as exc:
                problem = _reason(exc)
            except ValueError as exc:
                problem = str(exc)
            warn(f"skipping reservation {os.path.join(self.state_dir, entry.name)}: {problem}")
            snap.unreadable.append(f"{entry.name}: {problem}")
            snap.unreadable_addresses.add(address)
        return snap

    def last_reserved(self, set_index: int) -> IPAddress | None:
        """The round-robin cursor of range set N, or None when absent or unusable."""
        path = self._path(f"{LAST_RESERVED_PREFIX}{set_index}")
        try:
            text = _read_small_file(path).decode("ascii", errors="replace").strip()
            return parse_ip(text)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            warn(f"ignoring {path}: {exc}")
            return None

    # -- writing ---------------------------------------------------------------------------

    def reserve(self, address: IPAddress, owner: Owner, set_index: int) -> Reservation | None:
        """Claim ``address`` for ``owner``; None when it is already taken (O_EXCL decides)."""
        name = str(address)
        path = self._path(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            return None
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"failed to reserve {address}: {_reason(exc)}") from None
        try:
            _write_all(fd, owner.encode())
        except OSError as exc:
            os.close(fd)
            _unlink_quietly(path)
            raise CNIError(IO_FAILURE, f"failed to reserve {address}: {_reason(exc)}") from None
        os.close(fd)
        self._write_last_reserved(set_index, address)
        return Reservation(address, name, owner)

    def _write_last_reserved(self, set_index: int, address: IPAddress) -> None:
        # Only a round-robin hint: failing to record it must not fail an allocation that succeeded.
        path = self._path(f"{LAST_RESERVED_PREFIX}{set_index}")
        try:
            atomic_write(path, str(address).encode(), FILE_MODE)
        except OSError as exc:
            warn(f"failed to record last reserved IP in {path}: {_reason(exc)}")

    def remove(self, reservation: Reservation) -> str | None:
        """Delete one reservation file; returns a problem description instead of raising."""
        try:
            os.unlink(self._path(reservation.file_name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            return f"failed to release {reservation.address}: {_reason(exc)}"
        return None

    def release(self, container_id: str, ifname: str) -> list[IPAddress]:
        """DEL: free every address of the attachment (legacy fallback); idempotent."""
        targets = self.snapshot().to_release(Owner.attachment(container_id, ifname))
        problems = [p for p in (self.remove(r) for r in targets) if p]
        if problems:
            raise CNIError(IO_FAILURE, "; ".join(problems))
        return [r.address for r in targets]

    def collect_garbage(self, valid: Collection[tuple[str, str]]) -> list[IPAddress]:
        """GC: free reservations of attachments not in ``valid`` ((containerID, ifname) pairs).

        A legacy bare-ID reservation stays while any valid attachment has that container ID.
        Unreadable entries are kept and reported after everything else has been processed.
        """
        valid_pairs = {(container_id.strip(), ifname) for container_id, ifname in valid}
        valid_ids = {container_id for container_id, _ in valid_pairs}
        snap = self.snapshot()
        removed: list[IPAddress] = []
        problems = list(snap.unreadable)
        for reservation in snap.reservations.values():
            owner = reservation.owner
            if owner.ifname is None:
                keep = owner.container_id in valid_ids
            else:
                keep = (owner.container_id, owner.ifname) in valid_pairs
            if keep:
                continue
            problem = self.remove(reservation)
            if problem:
                problems.append(problem)
            else:
                removed.append(reservation.address)
        if problems:
            raise CNIError(IO_FAILURE, "GC: " + "; ".join(problems))
        return removed

    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)


def _read_small_file(path: str) -> bytes:
    # O_NOFOLLOW: never read through a symlink planted in the directory;
    # O_NONBLOCK: a FIFO swapped in after the type check cannot hang the plugin.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        data = os.read(fd, MAX_RESERVATION_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_RESERVATION_BYTES:
        raise ValueError(f"larger than {MAX_RESERVATION_BYTES} bytes")
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
