"""GC input: the attachments the runtime still considers valid (spec 1.1.0)."""
from __future__ import annotations

from cni.errors import INVALID_CONFIG, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import Attachment, RecordStore

VALID_KEY = "cni.dev/valid-attachments"
LEGACY_KEY = "cni.dev/attachments"  # libcni also sends the spec's misspelled key


def valid_attachments(config: dict[str, Any]) -> set[tuple[str, str]]:
    """{(containerID, ifname)} from the GC config; a malformed list is a config error, never 'none valid'."""
    raw = config.get(VALID_KEY, config.get(LEGACY_KEY))
    if raw is None:
        raise CNIError(INVALID_CONFIG, f"GC requires {VALID_KEY}")
    if not isinstance(raw, list):
        raise CNIError(INVALID_CONFIG, f"{VALID_KEY} must be a list")
    valid: set[tuple[str, str]] = set()
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("containerID"), str) \
                or not isinstance(entry.get("ifname"), str):
            raise CNIError(INVALID_CONFIG, f"{VALID_KEY} entries need string containerID and ifname: {entry!r}"[:300])
        valid.add((entry["containerID"], entry["ifname"]))
    return valid


def collectable(store: RecordStore, network: str, valid: set[tuple[str, str]]) -> list[tuple[Attachment, bool]]:
    """The records of ``network`` a GC removes, each with whether it is *foreign*.

    A record is collected when the runtime no longer lists its attachment, or when it was written in
    another boot or another network namespace (``cni.records.is_foreign``) even if listed: its rules
    were in tables that are gone, so only the record (and what it claims on disk) goes, and no table
    is touched on its account. A corrupt record is collected (as not foreign) only when not listed.
    """
    from cni.records import is_foreign  # noqa: PLC0415

    found = []
    for att in list(store.attachments(network)):
        try:
            data = store.load(att)
        except CNIError:
            data = None
        foreign = data is not None and is_foreign(data)
        if foreign or (att.container_id, att.ifname) not in valid:
            found.append((att, foreign))
    return found
