"""A per-store index of host-local reservations, kept beside (never inside) the data directory.

Without it every ADD, DEL and CHECK reads and parses every reservation file of the network (10-25 ms
at 1,000 containers) when it needs the files of one attachment only. The index remembers, for each
reservation-named entry of ``<dataDir>/<network>/``, the entry's inode and change time and a hash of
its owner, so an operation lists the directory, reads only the entries that are new or changed, and
then reads just the attachment's own files.

Change detection. The inode comes with the directory listing (no stat), but alone it cannot tell a
file re-created under the same name: file systems reuse inode numbers (ext4 hands a freed one out
again once its journal has committed). So the index also keeps the directory's own stamp (inode,
mtime, ctime) as it was when the index was last committed, under the lock:
- stamp unchanged: nobody has created, removed or renamed anything since, so same name and same
  inode is the same file (one ``stat`` of the directory, none per entry: the common case, where
  only our plugins, which keep the index, write the directory);
- stamp changed (the Go reference or anything else that does not keep the index wrote there, or one
  of ours died before committing): every entry is ``lstat``-ed and one whose inode or ctime differs
  is read again. A re-created file has a new ctime even when it got the old inode.
Not detected: a file rewritten in place (same inode) while the directory stamp is unchanged; no
writer does that (reservations are only ever created with ``O_EXCL`` and unlinked), and the files
an operation acts on are read again anyway.

Where: ``<stateDir>/host-local/<sha256(absolute store dir)[:32]>.index``, with ``<stateDir>`` the
records state directory (``cni.records.state_dir``); directories 0700, file 0600, reached without
following symlinks, written atomically. The data directory stays byte for byte what the Go
reference writes. The name does not end in ``.json``: the state directory's ``*.json`` files are
ownership records, one per attachment, and this file belongs to no attachment.

Content (JSON, sorted keys)::

    {"format": 1, "store": "<store dir>", "directory": [<inode>, <mtime ns>, <ctime ns>],
     "entries": {"<file name>": [<inode>, <ctime ns>, "<owner key hash>" or null]},
     "ignored": ["<name>", ...],                  (only when not empty)
     "aliases": {"<name>": "<canonical name>"}}   (only when not empty)

- the owner key hash is a truncated sha256 of the file's whitespace-trimmed content (what
  ``Owner.decode`` works from), so an attachment's entries are found by comparing hashes, and no
  container ID is copied out of the data directory (GC and the tests that check that nothing of a
  collected attachment survives see it only there); null marks an entry that could not be read or
  is not a regular file;
- ``ignored``: names that look like addresses but do not parse (never reservations, whatever they
  hold), kept so that they are not parsed again at every operation;
- ``aliases``: reservations whose file name is not the canonical text of their address (an
  IPv4-mapped IPv6 name, upper-case hex): the canonical name is blocked for allocation too.

The index is a hint, never the truth. It is refreshed from the directory under the store's lock
before every use, so anything that happened while it was not looking (a crash between a reservation
and the index update, an upgrade, the Go binary writing the same directory, a file re-created under
the same name) is picked up; a missing or corrupt index is simply rebuilt; and every file the
operation acts on is read again first. Only ADD builds a missing index, and it creates the file
only once it has reserved an address: DEL and CHECK create no state (without an index they read
everything, as they always did). The file is removed when the store has no reservation left, and
GC, which reads everything anyway, drops it (the next ADD builds it again): after GC nothing it kept
can still describe a collected attachment.
"""
from __future__ import annotations

import errno
import os

from cni.files import atomic_write_at, is_leftover_of, make_dirs, open_dir_below, read_regular, unlink_quietly
from hostlocal.addresses import parse_ip

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable
    from typing import Any

INDEX_DIR = "host-local"
INDEX_SUFFIX = ".index"
INDEX_FORMAT = 1
DIR_MODE = 0o700
FILE_MODE = 0o600
NAME_HASH_CHARS = 32
# A key hash only says which few files to read again: a collision costs one read, never a wrong answer.
KEY_HASH_CHARS = 16
_SAVE_ATTEMPTS = 5  # a save racing another network's removal of the empty index directory retries
# Every character an IPv4 or IPv6 address can be written with; lock, cursors and temp files have others.
_ADDRESS_CHARS = "0123456789abcdefABCDEF.:"
_MAX_INDEX_BYTES = 64 * 1024 * 1024


def looks_like_address(name: str) -> bool:
    """A cheap test run on every directory entry at every operation (no parsing)."""
    return not name.strip(_ADDRESS_CHARS) and ("." in name or ":" in name)


def owner_key(content: bytes) -> str:
    """The hash of a reservation's owner: ``content`` as in the file, or as ``Owner.encode`` gives it."""
    return _sha256_hex(content.strip())[:KEY_HASH_CHARS]


class Index:
    """The index of one store: loaded, refreshed against the directory, then committed."""

    __slots__ = ("root", "store_dir", "name", "stamp", "entries", "ignored", "aliases", "_alias_targets",
                 "_on_disk", "_dirty", "_reserved")

    def __init__(self, root: str, store_dir: str) -> None:
        self.root = root  # the records state directory
        self.store_dir = store_dir  # absolute
        digest = _sha256_hex(store_dir.encode("utf-8", errors="surrogateescape"))
        self.name = digest[:NAME_HASH_CHARS] + INDEX_SUFFIX
        self.stamp: list[int] | None = None  # the store directory's, when the index was last committed
        # name -> [inode, ctime ns, owner key hash or None]; lists, as JSON gives them back
        self.entries: dict[str, list[Any]] = {}
        self.ignored: set[str] = set()
        self.aliases: dict[str, str] = {}
        self._alias_targets: set[str] = set()
        self._on_disk = False  # an index file was found (corrupt or not)
        self._dirty = False  # differs from what is on disk
        self._reserved = False  # this session reserved an address: it may create the file

    @property
    def path(self) -> str:
        return os.path.join(self.root, INDEX_DIR, self.name)

    @property
    def on_disk(self) -> bool:
        return self._on_disk

    # -- loading and refreshing ------------------------------------------------------------------

    def load(self) -> None:
        """Read the saved index. Missing or corrupt: left empty, and the refresh rebuilds it.
        Raises OSError when the index cannot even be looked for (EACCES, a symlink in the path)."""
        try:
            raw = self._read()
        except FileNotFoundError:
            return
        decoded = _decode(raw, self.store_dir)
        if decoded is None:
            self._dirty = True  # corrupt: whatever the refresh finds is worth saving over it
            self._on_disk = True
            return
        self.stamp, self.entries, self.ignored, self.aliases = decoded
        self._alias_targets = set(self.aliases.values())
        self._on_disk = True

    def _read(self) -> bytes:
        """The saved index; b"" (corrupt, replaced by the next save) for a symlink, something not a
        regular file, or a file far larger than anything we write."""
        dir_fd = open_dir_below(self.root, [INDEX_DIR])
        try:
            return read_regular(self.name, dir_fd, limit=_MAX_INDEX_BYTES)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EINVAL, errno.EFBIG):
                return b""
            raise
        finally:
            os.close(dir_fd)

    def refresh(self, stamp: list[int], listing: Iterable[os.DirEntry[str]],
                key_of: Callable[[os.DirEntry[str]], str | None]) -> None:
        """Bring the index in line with a listing of the store directory, whose stamp is ``stamp``.

        Entries known to be unchanged keep what the index knew (see the module's "Change
        detection"); new or changed ones are examined (``key_of`` reads the file); names no longer
        listed are dropped.
        """
        trusted = stamp == self.stamp  # nothing created, removed or renamed since our last commit
        old_entries, old_ignored, old_aliases = self.entries, self.ignored, self.aliases
        entries: dict[str, list[Any]] = {}
        ignored: set[str] = set()
        aliases: dict[str, str] = {}
        examined = False
        for entry in listing:
            name = entry.name
            if not looks_like_address(name):
                continue
            if name in old_ignored:
                ignored.add(name)
                continue
            known = old_entries.get(name)
            if known is not None and known[0] == entry.inode() and (trusted or _ctime(entry) == known[1]):
                entries[name] = known
                if name in old_aliases:
                    aliases[name] = old_aliases[name]
                continue
            examined = True
            try:
                canonical = str(parse_ip(name))
            except ValueError:
                ignored.add(name)
                continue
            ctime = _ctime(entry)
            if ctime is None:
                continue  # gone since the listing
            entries[name] = [entry.inode(), ctime, key_of(entry)]
            if canonical != name:
                aliases[name] = canonical
        dropped = len(entries) + len(ignored) != len(old_entries) + len(old_ignored)
        if examined or dropped or not trusted:
            self._dirty = True
        self.entries, self.ignored, self.aliases = entries, ignored, aliases
        self._alias_targets = set(aliases.values())

    # -- queries ---------------------------------------------------------------------------------

    def has_unreadable(self) -> bool:
        return any(value[2] is None for value in self.entries.values())

    def names_with_keys(self, keys: Collection[str]) -> list[str]:
        """Entries whose owner hash is one of ``keys``, in directory order."""
        return [name for name, value in self.entries.items() if value[2] in keys]

    def blocks(self, name: str) -> bool:
        """Whether a reservation named ``name`` (canonical) exists, under that name or an alias."""
        return name in self.entries or name in self._alias_targets

    # -- updates ---------------------------------------------------------------------------------

    def record(self, name: str, inode: int, ctime: int, key: str | None) -> None:
        """A reservation this process just created (under its canonical name: no alias)."""
        self.entries[name] = [inode, ctime, key]
        self._dirty = True
        self._reserved = True

    def set_key(self, name: str, key: str | None) -> None:
        """What a fresh read of one entry found (its owner changed in place, or it became unreadable)."""
        value = self.entries.get(name)
        if value is not None and value[2] != key:
            value[2] = key
            self._dirty = True

    def forget(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self._dirty = True
        if self.aliases.pop(name, None) is not None:
            self._alias_targets = set(self.aliases.values())

    # -- persistence -----------------------------------------------------------------------------

    def commit(self, stamp: list[int] | None) -> None:
        """Save what changed, with the store directory's ``stamp`` after this operation's changes, or
        remove the file when no reservation is left. Raises OSError."""
        if not self.entries or stamp is None:
            self.delete()
        elif (self._dirty or stamp != self.stamp) and (self._on_disk or self._reserved):
            self.stamp = stamp
            self._save()
        self._dirty = False

    def _save(self) -> None:
        import json  # noqa: PLC0415 - not on the VERSION path, which gets by without it

        body: dict[str, Any] = {"format": INDEX_FORMAT, "store": self.store_dir, "directory": self.stamp,
                                "entries": self.entries}
        if self.ignored:
            body["ignored"] = sorted(self.ignored)
        if self.aliases:
            body["aliases"] = self.aliases
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8", errors="surrogateescape")
        missing: OSError | None = None
        for _ in range(_SAVE_ATTEMPTS):
            try:
                make_dirs(self.root, DIR_MODE)
                dir_fd = open_dir_below(self.root, [INDEX_DIR], create=True, mode=DIR_MODE)
                try:
                    atomic_write_at(dir_fd, self.name, payload, FILE_MODE, durable=False)
                    self._remove_leftovers(dir_fd)
                finally:
                    os.close(dir_fd)
                self._on_disk = True
                return
            except FileNotFoundError as exc:
                # Another network's last DEL removed the index directory it found empty between our
                # mkdir and our write: create it again.
                missing = exc
        assert missing is not None
        raise missing

    def delete(self) -> None:
        """Remove the file, the temporary files of saves that were killed, and the directory when empty."""
        try:
            root_fd = open_dir_below(self.root, [])
        except FileNotFoundError:
            return  # no state directory (lost with a tmpfs, or never created): nothing to remove
        try:
            try:
                dir_fd = open_dir_below(self.root, [INDEX_DIR])
            except FileNotFoundError:
                return
            try:
                unlink_quietly(self.name, dir_fd)
                self._remove_leftovers(dir_fd)
            finally:
                os.close(dir_fd)
            try:
                os.rmdir(INDEX_DIR, dir_fd=root_fd)  # only succeeds when empty: other networks' indexes stay
            except OSError:
                pass
        finally:
            os.close(root_fd)
        self._on_disk = False

    def _remove_leftovers(self, dir_fd: int) -> None:
        # Saves happen under the store's lock, so a temporary file of this index is never a live one.
        for entry in os.listdir(dir_fd):
            if is_leftover_of(entry, self.name):
                unlink_quietly(entry, dir_fd)


def _decode(raw: bytes, store_dir: str) -> tuple[list[int], dict[str, list[Any]], set[str], dict[str, str]] | None:
    """The saved stamp, entries, ignored names and aliases; None for anything but a well-formed index
    of this store."""
    import json  # noqa: PLC0415

    try:
        data = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or data.get("store") != store_dir:
        return None
    stamp, entries = data.get("directory"), data.get("entries")
    ignored, aliases = data.get("ignored", []), data.get("aliases", {})
    if not (_is_ints(stamp, 3) and isinstance(entries, dict) and isinstance(ignored, list)
            and isinstance(aliases, dict)):
        return None
    for value in entries.values():
        if not (type(value) is list and len(value) == 3 and type(value[0]) is int and type(value[1]) is int
                and (value[2] is None or type(value[2]) is str)):
            return None
    if not all(type(v) is str for v in ignored) or not all(type(v) is str for v in aliases.values()):
        return None
    return stamp, entries, set(ignored), {name: target for name, target in aliases.items() if name in entries}


def _is_ints(value: object, length: int) -> bool:
    return type(value) is list and len(value) == length and all(type(v) is int for v in value)


def _ctime(entry: os.DirEntry[str]) -> int | None:
    """The entry's change time (an ``lstat``, cached by the entry); None when it is gone."""
    try:
        return entry.stat(follow_symlinks=False).st_ctime_ns
    except FileNotFoundError:
        return None


def directory_stamp(path: str) -> list[int] | None:
    """What changes whenever an entry of the directory is created, removed or renamed; None when the
    directory is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


_SHA256: list[Callable[[bytes], Any]] = []  # imported on first use: a VERSION exec has no use for it


def _sha256_hex(data: bytes) -> str:
    if not _SHA256:
        _SHA256.append(_import_sha256())
    return _SHA256[0](data).hexdigest()


def _import_sha256() -> Callable[[bytes], Any]:
    # The builtin module: hashlib would load OpenSSL's bindings (~3 ms) on every plugin exec.
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # noqa: PLC0415 - Python < 3.12
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]  # noqa: PLC0415 - Python >= 3.12
        except ImportError:
            from hashlib import sha256  # noqa: PLC0415
    return sha256
