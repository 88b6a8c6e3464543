"""GC input: the attachments the runtime still considers valid (spec 1.1.0)."""
from __future__ import annotations

from cni.errors import INVALID_CONFIG, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
