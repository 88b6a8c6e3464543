"""Which code is installed: the package version plus a digest of the source tree.

``cnictl install`` writes this string into every launcher, and the resident helper computes it
when it starts. A launcher hands a call only to a helper of its own release, so a helper never
runs code other than what is installed: after an upgrade (or any edit of the installed sources)
the digest differs, the old helper refuses, and the launcher runs the plugin itself.
"""
from __future__ import annotations

import hashlib
import os

# The top-level packages of the project (pyproject's packages.find; a test keeps the two in step).
PACKAGES = ("cni", "chains", "bridge", "hostlocal", "portmap", "firewall", "netlink", "cnictl", "loopback",
            "tuning", "ptp", "hostdevice")
DIGEST_CHARS = 12


def package_version() -> str:
    from importlib import metadata  # noqa: PLC0415 - costs ~20 ms; install and helper start only

    try:
        return metadata.version("pycni")
    except metadata.PackageNotFoundError:  # run from a source tree that was never pip-installed
        return "0"


def tree_digest(root: str) -> str:
    """sha256 of every ``.py`` file of PACKAGES under ``root``: their relative paths and contents."""
    digest = hashlib.sha256()
    for path in sorted(_sources(root)):
        digest.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:DIGEST_CHARS]


def _sources(root: str) -> list[str]:
    found = []
    for package in PACKAGES:
        for directory, subdirs, files in os.walk(os.path.join(root, package)):
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
            found += [os.path.join(directory, name) for name in files if name.endswith(".py")]
    return found


def project_root() -> str:
    """The directory holding the ``cni`` package this process imported (and its siblings)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def current(root: str | None = None) -> str:
    """``<package version>+<tree digest>``, e.g. ``0.1.0+3f9a2b1c4d5e``."""
    return f"{package_version()}+{tree_digest(root or project_root())}"
