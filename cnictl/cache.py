"""libcni's result cache, file for file: what lets DEL, CHECK and GC know what ADD did.

One file per attachment, ``<cacheDir>/results/<network>-<containerID>-<ifname>`` (directory 0700,
file 0600), holding compact JSON with the keys and omissions of libcni's ``cachedInfo``:
``kind`` ("cniCacheV1"), ``containerId``, ``config`` (the conflist bytes, base64 like a Go byte
slice), ``ifName``, ``networkName`` and, only when not empty, ``netns``, ``cniArgs`` (list of
``[key, value]``), ``capabilityArgs`` and ``result``. Files from old libcni versions that hold a
bare result are still read. Because the format is libcni's, a cache written by cnictl is usable by
containerd/CRI-O tooling and vice versa.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cni.files import atomic_write, ensure_dir
from cnictl.errors import CacheError

DEFAULT_CACHE_DIR = "/var/lib/cni"
KIND = "cniCacheV1"


@dataclass
class CacheEntry:
    """One cached attachment: who it is, how it was set up, and the final ADD result."""

    network_name: str
    container_id: str
    ifname: str
    config: bytes = b""
    netns: str = ""
    cni_args: list[tuple[str, str]] | None = None
    capability_args: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    legacy: bool = False  # a bare result written by an old libcni: no args, no config


def cache_dir_from_env(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("CNI_CACHE_DIR") or DEFAULT_CACHE_DIR


def results_dir(cache_dir: str) -> str:
    return os.path.join(cache_dir, "results")


def entry_path(cache_dir: str, network: str, container_id: str, ifname: str) -> str:
    parts = (network, container_id, ifname)
    if not all(parts) or any("/" in p for p in parts):
        raise CacheError(f"cache file path needs a network name, container ID and interface name "
                         f"without '/', got {network!r}, {container_id!r}, {ifname!r}")
    return os.path.join(results_dir(cache_dir), f"{network}-{container_id}-{ifname}")


def encode(entry: CacheEntry) -> bytes:
    out: dict[str, Any] = {
        "kind": KIND,
        "containerId": entry.container_id,
        "config": base64.b64encode(entry.config).decode(),
        "ifName": entry.ifname,
        "networkName": entry.network_name,
    }
    # Go's omitempty: empty values are left out rather than written as "" / [] / {}.
    if entry.netns:
        out["netns"] = entry.netns
    if entry.cni_args:
        out["cniArgs"] = [[k, v] for k, v in entry.cni_args]
    if entry.capability_args:
        out["capabilityArgs"] = entry.capability_args
    if entry.result:
        out["result"] = entry.result
    return json.dumps(out, separators=(",", ":")).encode()


def decode(data: bytes, source: str, network: str = "", container_id: str = "", ifname: str = "") -> CacheEntry:
    """A cache file's bytes -> an entry; ``network``/``container_id``/``ifname`` name a legacy file."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheError(f"cache file {source} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CacheError(f"cache file {source} is not a JSON object")
    if "kind" not in obj and "cniVersion" in obj:
        return CacheEntry(network, container_id, ifname, result=obj, legacy=True)
    if obj.get("kind") != KIND:
        raise CacheError(f"cache file {source} has kind {obj.get('kind')!r}, expected {KIND!r}")
    return CacheEntry(
        network_name=_string(obj, "networkName", source),
        container_id=_string(obj, "containerId", source),
        ifname=_string(obj, "ifName", source),
        config=_config_bytes(obj, source),
        netns=_string(obj, "netns", source),
        cni_args=_cni_args(obj, source),
        capability_args=_object(obj, "capabilityArgs", source),
        result=_object(obj, "result", source),
    )


def write(cache_dir: str, entry: CacheEntry) -> str:
    path = entry_path(cache_dir, entry.network_name, entry.container_id, entry.ifname)
    ensure_dir(results_dir(cache_dir), 0o700)
    atomic_write(path, encode(entry), 0o600)
    return path


def read(cache_dir: str, network: str, container_id: str, ifname: str) -> CacheEntry | None:
    """The cached attachment, None when there is none; CacheError when the file is unusable."""
    path = entry_path(cache_dir, network, container_id, ifname)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError(f"cannot read cache file {path}: {exc.strerror}") from None
    return decode(data, path, network, container_id, ifname)


def remove(cache_dir: str, network: str, container_id: str, ifname: str) -> bool:
    try:
        os.unlink(entry_path(cache_dir, network, container_id, ifname))
    except FileNotFoundError:
        return False
    return True


def attachments(cache_dir: str) -> list[CacheEntry]:
    """Every readable cniCacheV1 entry, in file-name order; anything else is skipped, as libcni does."""
    directory = results_dir(cache_dir)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CacheError(f"cannot list {directory}: {exc.strerror}") from None
    found = []
    for name in names:
        if name.startswith("."):  # atomic_write's temporary files
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                entry = decode(f.read(), path)
        except (OSError, CacheError):
            continue
        if not entry.legacy and entry.network_name and entry.ifname:
            found.append(entry)
    return found


def _string(obj: dict[str, Any], key: str, source: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise CacheError(f'cache file {source}: "{key}" must be a string')
    return value


def _object(obj: dict[str, Any], key: str, source: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        raise CacheError(f'cache file {source}: "{key}" must be a JSON object')
    return value


def _config_bytes(obj: dict[str, Any], source: str) -> bytes:
    value = obj.get("config") or ""
    if not isinstance(value, str):
        raise CacheError(f'cache file {source}: "config" must be a base64 string')
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CacheError(f'cache file {source}: "config" is not base64') from None


def _cni_args(obj: dict[str, Any], source: str) -> list[tuple[str, str]] | None:
    value = obj.get("cniArgs")
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair) for pair in value
    ):
        raise CacheError(f'cache file {source}: "cniArgs" must be a list of [key, value] strings')
    return [(k, v) for k, v in value]
