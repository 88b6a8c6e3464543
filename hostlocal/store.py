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

Reading every file costs 10-25 ms per operation at 1,000 reservations, so a store given an
``index_root`` keeps an index beside the data directory (``hostlocal.index``) and, under the lock,
reads only the files that are new since the index last looked, plus the attachment's own
(``Store.reservations()``). GC still reads everything (``Store.snapshot()``), and so does any
operation while the index knows of an unreadable entry, so that it is reported exactly as before.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys

from cni import log
from cni.errors import IO_FAILURE, CNIError
from cni.files import atomic_write, flocked, make_dirs, read_regular, write_all
from hostlocal.addresses import address_of, parse_ip
from hostlocal.index import Index, directory_stamp, owner_key
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
    """Diagnostics go to stderr (stdout belongs to the CNI result), and to the log if there is one."""
    sys.stderr.write(f"host-local: {message}\n")
    log.warning("store problem", msg=message)


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
        """The file's content. surrogateescape: an owner decoded from a file that was not UTF-8 encodes
        back to the same bytes (the runtime's IDs and ifnames are validated ASCII/UTF-8 anyway)."""
        container_id = self.container_id.encode("utf-8", errors="surrogateescape")
        if self.ifname is None:
            return container_id
        return container_id + LINE_BREAK + self.ifname.encode("utf-8", errors="surrogateescape")

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

    __slots__ = ("reservations", "unreadable", "unreadable_addresses", "_occupied")

    def __init__(self) -> None:
        self.reservations: dict[IPAddress, Reservation] = {}
        # Reservation-named entries that could not be read: "<name>: <reason>".
        self.unreadable: list[str] = []
        self.unreadable_addresses: set[IPAddress] = set()
        self._occupied: dict[int, set[int]] = {}  # occupied(version), computed once per family

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

    def taken(self, version: int, value: int) -> bool:
        """Whether the address of this family and integer value must not be handed out."""
        occupied = self._occupied.get(version)
        if occupied is None:
            occupied = self._occupied[version] = self.occupied(version)
        return value in occupied

    def add(self, reservation: Reservation) -> None:
        self.reservations[reservation.address] = reservation
        occupied = self._occupied.get(reservation.address.version)
        if occupied is not None:
            occupied.add(int(reservation.address))


class IndexedReservations:
    """The store seen through its refreshed index (same queries as a ``Snapshot``).

    Nothing is parsed for other attachments: their entries are names and owner hashes. The entries
    whose hash is the attachment's are read again before they are trusted (a hash may collide, and a
    file may have been rewritten in place), and only those become ``Reservation`` objects.
    """

    __slots__ = ("store", "index")

    def __init__(self, store: Store, index: Index) -> None:
        self.store = store
        self.index = index

    def held_by(self, owner: Owner) -> list[Reservation]:
        """Reservations of this attachment, including legacy ones of the same container ID."""
        legacy = Owner(owner.container_id, None)
        keys = {owner_key(owner.encode()), owner_key(legacy.encode())}
        held = []
        for name in self.index.names_with_keys(keys):
            reservation = self.store.reread(name)
            if reservation is not None and (
                reservation.owner == owner or reservation.owner.is_legacy_of(owner.container_id)
            ):
                held.append(reservation)
        return held

    def to_release(self, owner: Owner) -> list[Reservation]:
        """The attachment's reservations; legacy bare-ID ones only when there are none (as the reference)."""
        held = self.held_by(owner)
        exact = [r for r in held if r.owner == owner]
        return exact or held

    def taken(self, version: int, value: int) -> bool:
        """Whether the address of this family and integer value must not be handed out: a string
        lookup of its canonical name (an unreadable entry blocks its address too)."""
        return self.index.blocks(_address_name(version, value))

    def add(self, reservation: Reservation) -> None:
        """Nothing to do: ``Store.reserve`` already recorded it in the index."""


def _emptied(reservations: Snapshot | IndexedReservations, removed: list[Reservation]) -> bool:
    """Whether removing ``removed`` left the store of this full snapshot without any reservation."""
    return (isinstance(reservations, Snapshot) and not reservations.unreadable
            and len(reservations.reservations) == len(removed))


def _address_name(version: int, value: int) -> str:
    """The canonical text of an address, the name of its reservation file (``str(address)``)."""
    if version == 4:
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"  # no ipaddress object
    return str(address_of(6, value))


class Store:
    """The reservations of one network: ``<dataDir>/<network>``.

    ``index_root``: the directory under which the store's index is kept (the records state
    directory); None keeps no index, and every operation reads every reservation file.
    """

    def __init__(self, state_dir: str, index_root: str | None = None) -> None:
        self.state_dir = state_dir
        self.index_root = index_root
        self._locked = False
        self._index: Index | None = None  # the index of the current locked operation, once refreshed

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
            self._locked = True
            try:
                yield
            finally:
                # Still under the lock: the next operation must find the index saved.
                self._locked = False
                self._commit_index()

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every reservation, every file read: for GC, and whenever no index can be trusted."""
        snap = Snapshot()
        for entry in self._list():
            try:
                address = parse_ip(entry.name)
            except ValueError:
                continue  # lock, cursors, temp files: not reservations
            try:
                if entry.is_file(follow_symlinks=False):
                    owner = Owner.decode(_read_reservation(entry.path))
                    snap.add(Reservation(address, entry.name, owner))
                    continue
                problem = "not a regular file"
            except OSError as exc:
                problem = _reason(exc)
            warn(f"skipping reservation {os.path.join(self.state_dir, entry.name)}: {problem}")
            snap.unreadable.append(f"{entry.name}: {problem}")
            snap.unreadable_addresses.add(address)
        return snap

    def _list(self) -> list[os.DirEntry[str]]:
        try:
            return list(os.scandir(self.state_dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"failed to list {self.state_dir}: {_reason(exc)}") from None

    def reservations(self, build_index: bool = False) -> Snapshot | IndexedReservations:
        """What ADD, DEL and CHECK query: the refreshed index when there is one, else a full snapshot.

        The index is used only under ``locked()`` (it is committed when the lock is released), and
        not while it knows of an unreadable entry: the full scan then reports it as it always has.
        A missing index is built only with ``build_index`` (ADD, which saves it once it has reserved
        an address); DEL and CHECK then read everything, as without an index, and create nothing.
        """
        index = self._refreshed_index(build_index)
        if index is None or index.has_unreadable():
            return self.snapshot()
        return IndexedReservations(self, index)

    def _refreshed_index(self, build: bool) -> Index | None:
        if self.index_root is None or not self._locked:
            return None
        index = self._index
        if index is None:
            index = Index(self.index_root, os.path.abspath(self.state_dir))
            try:
                index.load()
            except OSError as exc:
                # Never fail an operation for the index: read everything, as without one.
                warn(f"not using the reservation index {index.path}: {_reason(exc)}")
                self.index_root = None
                return None
            if not index.on_disk and not build:
                return None  # building it costs more than the full scan it would replace
        stamp = directory_stamp(self.state_dir)  # before the listing: a change after it shows next time
        index.refresh(stamp or [], self._list(), _owner_key_of)
        self._index = index
        return index

    def _commit_index(self) -> None:
        index, self._index = self._index, None
        if index is None:
            return
        try:
            index.commit(directory_stamp(self.state_dir))
        except OSError as exc:
            warn(f"failed to update the reservation index {index.path}: {_reason(exc)}")

    def drop_index(self) -> None:
        """Remove the index (GC: it has just read everything; the next ADD builds a new one)."""
        self._index = None
        if self.index_root is None:
            return
        index = Index(self.index_root, os.path.abspath(self.state_dir))
        try:
            index.delete()
        except OSError as exc:
            warn(f"failed to remove the reservation index {index.path}: {_reason(exc)}")

    def reread(self, name: str) -> Reservation | None:
        """One reservation file read again before it is trusted: its owner now, or None (reported
        like the full scan reports it) when it cannot be read. The index learns what was found."""
        index = self._index
        path = self._path(name)
        try:
            data = _read_reservation(path)
        except FileNotFoundError:
            if index is not None:
                index.forget(name)
            return None
        except OSError as exc:
            warn(f"skipping reservation {path}: {_reason(exc)}")
            if index is not None:
                index.set_key(name, None)
            return None
        if index is not None:
            index.set_key(name, owner_key(data))
        return Reservation(parse_ip(name), name, Owner.decode(data))

    def last_reserved(self, set_index: int) -> IPAddress | None:
        """The round-robin cursor of range set N, or None when absent or unusable."""
        path = self._path(f"{LAST_RESERVED_PREFIX}{set_index}")
        try:
            text = _read_reservation(path).decode("ascii", errors="replace").strip()
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
        content = owner.encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            return None
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"failed to reserve {address}: {_reason(exc)}") from None
        try:
            write_all(fd, content)
            if self._index is not None:
                st = os.fstat(fd)
                self._index.record(name, st.st_ino, st.st_ctime_ns, owner_key(content))
        except OSError as exc:
            os.close(fd)
            _unlink_quietly(path)
            if self._index is not None:
                self._index.forget(name)
            raise CNIError(IO_FAILURE, f"failed to reserve {address}: {_reason(exc)}") from None
        os.close(fd)
        self._write_last_reserved(set_index, address)
        return Reservation(address, name, owner)

    def _write_last_reserved(self, set_index: int, address: IPAddress) -> None:
        # Only a round-robin hint: failing to record it must not fail an allocation that succeeded.
        # Atomic (a reader never sees half an address) but not fsync'ed, like the reference: a power
        # loss can only take the cursor back to an earlier address, and the allocator skips taken ones.
        path = self._path(f"{LAST_RESERVED_PREFIX}{set_index}")
        try:
            atomic_write(path, str(address).encode(), FILE_MODE, durable=False)
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
        if self._index is not None:
            self._index.forget(reservation.file_name)
        return None

    def release(self, container_id: str, ifname: str) -> list[IPAddress]:
        """DEL: free every address of the attachment (legacy fallback); idempotent."""
        reservations = self.reservations()
        targets = reservations.to_release(Owner.attachment(container_id, ifname))
        problems = [p for p in (self.remove(r) for r in targets) if p]
        if problems:
            raise CNIError(IO_FAILURE, "; ".join(problems))
        if self._index is None and _emptied(reservations, targets):
            # No index was in use; what a killed save of one may have left goes with the last reservation.
            self.drop_index()
        return [r.address for r in targets]

    def collect_garbage(self, valid: Collection[tuple[str, str]]) -> list[IPAddress]:
        """GC: free reservations of attachments not in ``valid`` ((containerID, ifname) pairs).

        A legacy bare-ID reservation stays while any valid attachment has that container ID.
        Unreadable entries are kept and reported after everything else has been processed.
        """
        valid_pairs = {(container_id.strip(), ifname) for container_id, ifname in valid}
        valid_ids = {container_id for container_id, _ in valid_pairs}
        snap = self.snapshot()
        self.drop_index()
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


def _read_reservation(path: str) -> bytes:
    """A reservation file (or cursor): a regular file of at most MAX_RESERVATION_BYTES, read without
    following a symlink or blocking on a FIFO. A symlink is "not a regular file", as the full scan's
    directory entry type says; everything else that goes wrong raises OSError too."""
    try:
        return read_regular(path, limit=MAX_RESERVATION_BYTES)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.EINVAL, "not a regular file") from None
        raise


def _owner_key_of(entry: os.DirEntry[str]) -> str | None:
    """The owner hash of a new directory entry, None when the full scan would skip it as unreadable."""
    try:
        if entry.is_file(follow_symlinks=False):
            return owner_key(_read_reservation(entry.path))
    except OSError:
        pass
    return None


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
