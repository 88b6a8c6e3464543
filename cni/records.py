"""Ownership records: what one attachment owns on the node, kept on disk.

A record is written *before* the resources it names are created and removed only after they are
gone, so DEL, CHECK and GC can act exactly on what an attachment owns without prevResult, without
runtime arguments, after a crash half-way through ADD, or after another program rewrote the
tables. One JSON file per (owner plugin, network, container ID, ifname):

    <stateDir>/<owner>/<network>/<containerID>/<ifname>.json

The path components are validated names (network and container ID by the spec's regex, ifname
by the kernel's rules), so none of them can climb out of the state directory.
"""
from __future__ import annotations

import json
import os
import sys
TYPE_CHECKING = False  # typing itself costs ~2 ms to import; annotations are strings here

from cni.errors import IO_FAILURE, CNIError
from cni.files import atomic_write

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

DEFAULT_STATE_DIR = "/var/lib/cni/pycni"
STATE_DIR_ENV = "PYCNI_STATE_DIR"
RECORD_FORMAT = 1


def state_dir(config: dict[str, Any]) -> str:
    """The state directory: the plugin config's ``stateDir``, else $PYCNI_STATE_DIR, else the default."""
    configured = config.get("stateDir")
    if isinstance(configured, str) and configured:
        if not os.path.isabs(configured):
            raise CNIError(7, f"stateDir must be an absolute path: {configured!r}")
        return os.path.normpath(configured)
    return os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


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


class RecordStore:
    """The records of one owner plugin under one state directory."""

    def __init__(self, root: str, owner: str) -> None:
        self.base = os.path.join(root, _safe_component(owner))

    def path(self, att: Attachment) -> str:
        return os.path.join(self.base, _safe_component(att.network), _safe_component(att.container_id),
                            _safe_component(att.ifname) + ".json")

    def load(self, att: Attachment) -> dict[str, Any] | None:
        """The record's data, None when there is none. A corrupt record raises CNIError (code 5)."""
        path = self.path(att)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot read ownership record {path}: {exc}") from None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
                raise ValueError("not a record of this format")
        except ValueError as exc:
            raise CNIError(IO_FAILURE, f"corrupt ownership record {path}: {exc}") from None
        return data

    def save(self, att: Attachment, data: dict[str, Any]) -> None:
        path = self.path(att)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        body = {"format": RECORD_FORMAT, "network": att.network, "containerID": att.container_id,
                "ifname": att.ifname}
        body.update(data)
        atomic_write(path, json.dumps(body, sort_keys=True).encode(), 0o600)

    def delete(self, att: Attachment) -> None:
        path = self.path(att)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        for directory in (os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            try:
                os.rmdir(directory)  # only succeeds when empty; that is the point
            except OSError:
                break

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
