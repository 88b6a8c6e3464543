"""Network configuration lists: found by network name in a directory and validated like libcni.

A directory (``NETCONFPATH``, default /etc/cni/net.d) holds ``*.conflist`` files and, for old
setups, single-plugin ``*.conf`` / ``*.json`` files. Conflists are searched first, in file-name
order, then the single-plugin files, which are wrapped into a one-plugin list as libcni does.

Unlike libcni, a file whose network has a *different* name is not validated beyond its name, so a
broken unrelated network does not stop this one from loading; a file that is not even a JSON
object with a string ``name`` still stops the search, because it might be the one asked for.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cni import version as versions
from cni.skel import valid_name
from cnictl.errors import ConfigError

DEFAULT_CONF_DIR = "/etc/cni/net.d"
LIST_EXTENSIONS = (".conflist",)
SINGLE_EXTENSIONS = (".conf", ".json")
NAME_PATTERN = "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
# What the spec says an empty or absent cniVersion means.
IMPLIED_VERSION = "0.1.0"


@dataclass(frozen=True)
class NetworkList:
    """One validated network configuration list."""

    name: str
    cni_version: str  # the version negotiated from cniVersion / cniVersions
    plugins: tuple[dict[str, Any], ...]  # the plugin objects, untouched
    raw: bytes  # the conflist bytes (what the result cache stores as "config")
    source: str = ""
    disable_check: bool = False
    disable_gc: bool = False
    load_only_inlined_plugins: bool = False

    def plugin_type(self, index: int) -> str:
        return str(self.plugins[index]["type"])


def conf_dir_from_env(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("NETCONFPATH") or DEFAULT_CONF_DIR


def find(name: str, conf_dir: str) -> NetworkList:
    """The network called ``name`` in ``conf_dir``: conflists first, then single-plugin files."""
    lists = _files_with(conf_dir, LIST_EXTENSIONS)
    for path in lists:
        data, raw = _read_object(path)
        if _declared_name(data, path) == name:
            return _list_with_dir_plugins(parse_list_object(data, raw, path, require_plugins=False), path)
    singles = _files_with(conf_dir, SINGLE_EXTENSIONS)
    for path in singles:
        data, _ = _read_object(path)
        if _declared_name(data, path) == name:
            return wrap_single(data, path)
    if not lists and not singles:
        missing = "" if os.path.isdir(conf_dir) else " (the directory does not exist)"
        raise ConfigError(f"no network configurations found in {conf_dir}{missing}")
    raise ConfigError(f'no network configuration with name "{name}" in {conf_dir}')


def names(conf_dir: str) -> list[str]:
    """Every network name the directory configures, in the order :func:`find` searches; a file that
    cannot be read or names no network is skipped (``find`` reports it when that name is asked for)."""
    found: list[str] = []
    for path in _files_with(conf_dir, LIST_EXTENSIONS) + _files_with(conf_dir, SINGLE_EXTENSIONS):
        try:
            name = _declared_name(_read_object(path)[0], path)
        except ConfigError:
            continue
        if name not in found:
            found.append(name)
    return found


def load_file(path: str) -> NetworkList:
    """One file, as a list: a ``.conflist`` as is, anything else as a single-plugin config."""
    data, raw = _read_object(path)
    if path.endswith(LIST_EXTENSIONS):
        return _list_with_dir_plugins(parse_list_object(data, raw, path, require_plugins=False), path)
    return wrap_single(data, path)


def parse_list(raw: bytes, source: str = "<config>") -> NetworkList:
    """Conflist bytes -> a validated list (no plugins from a directory: there is none)."""
    return parse_list_object(_decode_object(raw, source), raw, source)


def parse_list_object(data: dict[str, Any], raw: bytes, source: str, *,
                      require_plugins: bool = True) -> NetworkList:
    name = _declared_name(data, source)
    if not valid_name(name):
        raise ConfigError(f'{source}: invalid network name "{name}": must match {NAME_PATTERN}')
    inlined_only = _read_bool(data, "loadOnlyInlinedPlugins", source)
    if "plugins" in data or inlined_only or require_plugins:
        plugins = _read_plugins(data, source)
    else:
        plugins = ()  # libcni: the plugins may all live in <dir>/<name>/*.conf
    return NetworkList(
        name=name,
        cni_version=_negotiate_version(data, source),
        plugins=plugins,
        raw=raw,
        source=source,
        disable_check=_read_bool(data, "disableCheck", source),
        disable_gc=_read_bool(data, "disableGC", source),
        load_only_inlined_plugins=inlined_only,
    )


def wrap_single(plugin: dict[str, Any], source: str) -> NetworkList:
    """A single-plugin config -> a one-plugin list, the way libcni up-converts a ``.conf``."""
    _check_plugin(plugin, source)
    listed = {"cniVersion": plugin.get("cniVersion", ""), "name": plugin.get("name"), "plugins": [plugin]}
    # libcni marshals the synthesised list from maps, hence sorted keys and no spaces.
    raw = json.dumps(listed, sort_keys=True, separators=(",", ":")).encode()
    return parse_list_object(listed, raw, source)


def _list_with_dir_plugins(net: NetworkList, path: str) -> NetworkList:
    """Append ``<dir>/<name>/*.conf`` plugins unless the list says loadOnlyInlinedPlugins."""
    if net.load_only_inlined_plugins:
        return net
    extra = []
    for plugin_path in _files_with(os.path.join(os.path.dirname(path), net.name), (".conf",)):
        plugin, _ = _read_object(plugin_path)
        _check_plugin(plugin, plugin_path)
        extra.append(plugin)
    plugins = net.plugins + tuple(extra)
    if not plugins:
        raise ConfigError(f'{path}: network "{net.name}" has no plugins')
    return replace(net, plugins=plugins)


def _files_with(directory: str, extensions: tuple[str, ...]) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot list {directory}: {exc.strerror}") from None
    paths = [os.path.join(directory, n) for n in sorted(names) if os.path.splitext(n)[1] in extensions]
    return [p for p in paths if not os.path.isdir(p)]


def _read_object(path: str) -> tuple[dict[str, Any], bytes]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return _decode_object(raw, path), raw


def _decode_object(raw: bytes, source: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a JSON object, not {type(data).__name__}")
    return data


def _declared_name(data: dict[str, Any], source: str) -> str:
    name = data.get("name")
    if name is None or name == "":
        raise ConfigError(f'{source}: missing network "name"')
    if not isinstance(name, str):
        raise ConfigError(f'{source}: network "name" must be a string')
    return name


def _read_plugins(data: dict[str, Any], source: str) -> tuple[dict[str, Any], ...]:
    plugins = data.get("plugins")
    if plugins is None:
        raise ConfigError(f'{source}: no "plugins" list')
    if not isinstance(plugins, list):
        raise ConfigError(f'{source}: "plugins" must be a list')
    if not plugins:
        raise ConfigError(f'{source}: "plugins" is empty')
    for index, plugin in enumerate(plugins):
        _check_plugin(plugin, f"{source}: plugin {index}")
    return tuple(plugins)


def _check_plugin(plugin: object, where: str) -> None:
    if not isinstance(plugin, dict):
        raise ConfigError(f"{where}: must be a JSON object")
    plugin_type = plugin.get("type")
    if not plugin_type or not isinstance(plugin_type, str):
        raise ConfigError(f'{where}: missing plugin "type"')
    if "/" in plugin_type or plugin_type in (".", ".."):
        raise ConfigError(f'{where}: invalid plugin type "{plugin_type}"')
    capabilities = plugin.get("capabilities", {})
    if not isinstance(capabilities, dict) or not all(isinstance(v, bool) for v in capabilities.values()):
        raise ConfigError(f'{where}: "capabilities" must map names to true or false')


def _read_bool(data: dict[str, Any], key: str, source: str) -> bool:
    """A boolean, or the strings "true" / "false" in any case (libcni accepts both)."""
    value = data.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f'{source}: "{key}" must be true or false, not {json.dumps(value)}')


def _negotiate_version(data: dict[str, Any], source: str) -> str:
    """The highest supported version among ``cniVersion`` and ``cniVersions``.

    Like libcni, versions newer than this implementation are ignored when a ``cniVersions``
    list offers alternatives; a lone unsupported ``cniVersion`` is an error here (libcni would
    pass it on and let every plugin fail).
    """
    declared = data.get("cniVersion", "")
    if not isinstance(declared, str):
        raise ConfigError(f'{source}: "cniVersion" must be a string')
    if declared:
        _parse_version(declared, source, '"cniVersion"')
    offered = data.get("cniVersions")
    if offered is None:
        if not declared:
            return IMPLIED_VERSION
        if declared not in versions.ALL_VERSIONS:
            raise ConfigError(f'{source}: unsupported cniVersion "{declared}" '
                              f"(supported: {', '.join(versions.ALL_VERSIONS)})")
        return declared
    if not isinstance(offered, list) or not all(isinstance(v, str) for v in offered):
        raise ConfigError(f'{source}: "cniVersions" must be a list of strings')
    for index, candidate in enumerate(offered):
        _parse_version(candidate, source, f'"cniVersions" entry {index}')
    supported = [v for v in [*offered, declared] if v in versions.ALL_VERSIONS]
    if not supported:
        listed = ", ".join(offered + ([declared] if declared else []))
        raise ConfigError(f"{source}: none of the CNI versions [{listed}] is supported "
                          f"(supported: {', '.join(versions.ALL_VERSIONS)})")
    return max(supported, key=versions.parse)


def _parse_version(value: str, source: str, what: str) -> None:
    try:
        versions.parse(value)
    except ValueError:
        raise ConfigError(f'{source}: {what} "{value}" is not a version like 1.0.0') from None
