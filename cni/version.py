"""Spec versions, their result families, and the comparisons the skeleton needs."""
from __future__ import annotations

ALL_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"

# Results come in three shapes: 0.1/0.2 (ip4/ip6), 0.3/0.4 (ips with "version"), 1.x (ips without).
FAMILY_020 = "020"
FAMILY_040 = "040"
FAMILY_100 = "100"


def parse(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0). Raises ValueError for anything that is not three dot-separated integers."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid version {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def result_family(version: str) -> str:
    v = parse(version)
    if v < (0, 3, 0):
        return FAMILY_020
    if v < (1, 0, 0):
        return FAMILY_040
    return FAMILY_100
