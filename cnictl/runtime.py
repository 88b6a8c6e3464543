"""Running a network list's plugins the way libcni does.

For every plugin the runtime builds a request config (``build_request``: the plugin object with
the list's ``name`` and ``cniVersion``, ``prevResult`` and ``runtimeConfig`` injected) and execs the
plugin found in CNI_PATH with the ``CNI_*`` variables set:

- ADD runs the plugins in order, each getting the previous one's result, and caches the final
  result (``cnictl.cache``);
- DEL runs them in reverse order with the cached result (converted to the list's version) as
  prevResult, and removes the cache entry afterwards; a corrupt cache entry is reported and removed
  and DEL goes on without prevResult;
- CHECK runs them in order with the cached result (nothing when ``disableCheck``);
- GC first DELs every cached attachment of the network that is not in the valid set, then (1.1.0
  lists) sends GC with ``cni.dev/valid-attachments`` to every plugin, collecting all failures;
- STATUS asks every plugin in order (1.1.0 lists) and stops at the first that is not ready.

DEL and CHECK reuse the CNI_ARGS and capability arguments cached by ADD unless the caller gives
its own. A plugin's stderr goes straight to ours; its error object becomes a ``PluginError``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from cni import version as versions
from cni.errors import CNIError
from cni.skel import ifname_problem, valid_name
from cnictl import cache
from cnictl.config import NAME_PATTERN, NetworkList
from cnictl.errors import CacheError, CnictlError, GCError, PluginError

DEFAULT_CNI_PATH = "/opt/cni/bin"
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"

Result = dict[str, Any]
Notify = Callable[[str], None]


@dataclass(frozen=True)
class Attachment:
    """One container interface as the runtime describes it (libcni's RuntimeConf).

    ``cni_args`` / ``capability_args`` of None mean "not given": DEL and CHECK then use the ones
    ADD cached. An empty list / dict is an explicit "none".
    """

    container_id: str
    netns: str
    ifname: str = "eth0"
    cni_args: list[tuple[str, str]] | None = None
    capability_args: dict[str, Any] | None = None


def runtime_config(plugin: dict[str, Any], capability_args: dict[str, Any]) -> dict[str, Any]:
    """``{capability: value}`` for every capability the plugin declares true and the caller supplies."""
    declared = plugin.get("capabilities") or {}
    return {cap: capability_args[cap] for cap, enabled in declared.items()
            if enabled is True and cap in capability_args}


def build_request(net: NetworkList, index: int, prev_result: Result | None = None,
                  capability_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stdin config for plugin ``index``: what libcni's buildOneConfig produces.

    Like libcni, ``capabilities`` stays in the object and a ``runtimeConfig`` the plugin object
    already has is kept unless capability arguments replace it.
    """
    plugin = net.plugins[index]
    request = dict(plugin)
    request["name"] = net.name
    request["cniVersion"] = net.cni_version
    if prev_result is not None:
        request["prevResult"] = prev_result
    injected = runtime_config(plugin, capability_args or {})
    if injected:
        request["runtimeConfig"] = injected
    return request


def convert_result(result: Result, target_version: str) -> Result:
    """A cached result in the list's version, as libcni converts it before DEL and CHECK."""
    from cni import result as results  # noqa: PLC0415 - only DEL and CHECK need it

    return results.from_canonical(results.to_canonical(result, target_version), target_version)


def format_cni_args(pairs: Iterable[tuple[str, str]]) -> str:
    return ";".join(f"{k}={v}" for k, v in pairs)


def plugin_env(command: str, attachment: Attachment | None, cni_path: list[str]) -> dict[str, str]:
    """Our environment plus the CNI_* variables; GC and STATUS send them empty, like libcni."""
    env = dict(os.environ)
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=attachment.container_id if attachment else "",
        CNI_NETNS=attachment.netns if attachment else "",
        CNI_ARGS=format_cni_args(attachment.cni_args or []) if attachment else "",
        CNI_IFNAME=attachment.ifname if attachment else "",
        CNI_PATH=os.pathsep.join(cni_path),
    )
    return env


def _stderr_notice(message: str) -> None:
    print(f"cnictl: {message}", file=sys.stderr)


class Runtime:
    """libcni's CNIConfig: a plugin search path, a cache directory, and the five list operations."""

    def __init__(self, cni_path: list[str], cache_dir: str = cache.DEFAULT_CACHE_DIR,
                 notify: Notify = _stderr_notice) -> None:
        self.cni_path = cni_path
        self.cache_dir = cache_dir
        self.notify = notify  # where warnings and progress notes go (stderr for the CLI)

    def add(self, net: NetworkList, attachment: Attachment) -> Result:
        _validate(net, attachment)
        result: Result | None = None
        for index in range(len(net.plugins)):
            request = build_request(net, index, result, attachment.capability_args)
            out = self._invoke(net, index, "ADD", request, attachment)
            result = _parse_result(out, net, index)
        assert result is not None  # a NetworkList always has plugins
        entry = cache.CacheEntry(
            network_name=net.name, container_id=attachment.container_id, ifname=attachment.ifname,
            config=net.raw, netns=attachment.netns, cni_args=attachment.cni_args,
            capability_args=attachment.capability_args, result=result,
        )
        try:
            cache.write(self.cache_dir, entry)
        except OSError as exc:
            raise CnictlError(f'failed to cache the result of network "{net.name}" in {self.cache_dir}: '
                              f"{exc.strerror or exc}") from None
        return result

    def delete(self, net: NetworkList, attachment: Attachment) -> None:
        _validate(net, attachment)
        cached = self._cached_for_delete(net, attachment)
        attachment = _with_cached_args(attachment, cached)
        prev_result = None
        # libcni hands DEL a prevResult only from 0.4.0 on, when the spec introduced it.
        if cached is not None and cached.result and versions.at_least(net.cni_version, "0.4.0"):
            try:
                prev_result = convert_result(cached.result, net.cni_version)
            except CNIError as exc:
                self.notify(f"warning: cached result cannot be converted to {net.cni_version} ({exc}); "
                            "DEL continues without prevResult")
        for index in reversed(range(len(net.plugins))):
            request = build_request(net, index, prev_result, attachment.capability_args)
            self._invoke(net, index, "DEL", request, attachment)
        cache.remove(self.cache_dir, net.name, attachment.container_id, attachment.ifname)

    def check(self, net: NetworkList, attachment: Attachment) -> bool:
        """True when the plugins were asked; False when the list says ``disableCheck``."""
        if not versions.at_least(net.cni_version, "0.4.0"):
            raise CnictlError(f'network "{net.name}": configuration version "{net.cni_version}" '
                              "does not support the CHECK command (needs 0.4.0 or later)")
        if net.disable_check:
            return False
        _validate(net, attachment)
        cached = cache.read(self.cache_dir, net.name, attachment.container_id, attachment.ifname)
        if cached is None or not cached.result:
            raise CnictlError(f'no cached ADD result for network "{net.name}", container '
                              f'"{attachment.container_id}", interface "{attachment.ifname}" in '
                              f"{self.cache_dir}: CHECK needs a completed ADD")
        attachment = _with_cached_args(attachment, cached)
        try:
            prev_result = convert_result(cached.result, net.cni_version)
        except CNIError as exc:
            raise CnictlError(f"cached result cannot be converted to {net.cni_version}: {exc}") from None
        for index in range(len(net.plugins)):
            request = build_request(net, index, prev_result, attachment.capability_args)
            self._invoke(net, index, "CHECK", request, attachment)
        return True

    def gc(self, net: NetworkList, valid: Iterable[tuple[str, str]] = ()) -> bool:
        """Clean up every attachment of ``net`` but the ``(containerID, ifname)`` pairs in ``valid``.

        True when GC ran, False when the list says ``disableGC``. Raises GCError listing every
        failure after trying everything.
        """
        if net.disable_gc:
            return False
        keep = list(dict.fromkeys(valid))  # de-duplicated, in the caller's order
        failures = self._delete_stale(net, set(keep))
        if versions.at_least(net.cni_version, "1.1.0"):
            listed = [{"containerID": container_id, "ifname": ifname} for container_id, ifname in keep]
            for index in range(len(net.plugins)):
                request = build_request(net, index)
                request[VALID_ATTACHMENTS_KEY] = listed
                try:
                    self._invoke(net, index, "GC", request, None)
                except CnictlError as exc:
                    failures.append(str(exc))
        if failures:
            raise GCError(failures)
        return True

    def status(self, net: NetworkList) -> bool:
        """True when every plugin said it is ready; False when the list is older than 1.1.0."""
        if not versions.at_least(net.cni_version, "1.1.0"):
            return False
        for index in range(len(net.plugins)):
            self._invoke(net, index, "STATUS", build_request(net, index), None)
        return True

    def _delete_stale(self, net: NetworkList, keep: set[tuple[str, str]]) -> list[str]:
        failures = []
        for entry in cache.attachments(self.cache_dir):
            if entry.network_name != net.name or (entry.container_id, entry.ifname) in keep:
                continue
            self.notify(f"GC: deleting stale attachment container {entry.container_id} "
                        f"interface {entry.ifname}")
            stale = Attachment(entry.container_id, entry.netns, entry.ifname,
                               entry.cni_args or [], entry.capability_args or {})
            try:
                self.delete(net, stale)
            except CnictlError as exc:
                failures.append(f"failed to delete stale attachment {entry.container_id} {entry.ifname}: {exc}")
        return failures

    def _cached_for_delete(self, net: NetworkList, attachment: Attachment) -> cache.CacheEntry | None:
        try:
            return cache.read(self.cache_dir, net.name, attachment.container_id, attachment.ifname)
        except CacheError as exc:
            self.notify(f"warning: {exc}; removing it, DEL continues without prevResult")
            cache.remove(self.cache_dir, net.name, attachment.container_id, attachment.ifname)
            return None

    def _invoke(self, net: NetworkList, index: int, command: str, request: dict[str, Any],
                attachment: Attachment | None) -> bytes:
        executable = self._find(net, index, command)
        env = plugin_env(command, attachment, self.cni_path)
        try:
            proc = subprocess.run([executable], input=json.dumps(request).encode(), env=env,
                                  stdout=subprocess.PIPE, check=False)
        except OSError as exc:
            raise _plugin_error(net, index, command, None,
                                f"cannot execute {executable}: {exc.strerror}") from None
        if proc.returncode != 0:
            raise _failure(net, index, command, proc.stdout, proc.returncode)
        return proc.stdout

    def _find(self, net: NetworkList, index: int, command: str) -> str:
        from cni import invoke  # noqa: PLC0415

        try:
            return invoke.find(net.plugin_type(index), self.cni_path)
        except CNIError:
            searched = os.pathsep.join(self.cni_path) or "(empty)"
            raise _plugin_error(net, index, command, None,
                                f"executable not found in CNI_PATH {searched}") from None


def _validate(net: NetworkList, attachment: Attachment) -> None:
    """What libcni checks before exec'ing anything, with messages that say what to fix."""
    if not valid_name(attachment.container_id):
        raise CnictlError(f'invalid container ID "{attachment.container_id}": must match {NAME_PATTERN}')
    problem = ifname_problem(attachment.ifname)
    if problem:
        raise CnictlError(f'invalid interface name "{attachment.ifname}": {problem}')
    if not valid_name(net.name):
        raise CnictlError(f'invalid network name "{net.name}": must match {NAME_PATTERN}')


def _with_cached_args(attachment: Attachment, cached: cache.CacheEntry | None) -> Attachment:
    if cached is None:
        return attachment
    return replace(
        attachment,
        cni_args=attachment.cni_args if attachment.cni_args is not None else cached.cni_args,
        capability_args=(attachment.capability_args if attachment.capability_args is not None
                         else cached.capability_args),
    )


def _parse_result(out: bytes, net: NetworkList, index: int) -> Result:
    if not out.strip():
        raise _plugin_error(net, index, "ADD", None, "succeeded but printed no result")
    try:
        result = json.loads(out)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _plugin_error(net, index, "ADD", None, f"printed an invalid result: {exc}",
                            _excerpt(out)) from None
    if not isinstance(result, dict):
        raise _plugin_error(net, index, "ADD", None, "printed a result that is not a JSON object", _excerpt(out))
    # libcni's fix-up: a result without a version is in the config's version.
    result.setdefault("cniVersion", net.cni_version)
    return result


def _failure(net: NetworkList, index: int, command: str, out: bytes, returncode: int) -> PluginError:
    """The plugin's own error object when it printed one, else what we know about the exit."""
    try:
        obj = json.loads(out)
    except (ValueError, UnicodeDecodeError):
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("code"), int) and not isinstance(obj.get("code"), bool):
        return _plugin_error(net, index, command, obj["code"], str(obj.get("msg", "")),
                             str(obj.get("details") or ""))
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    return _plugin_error(net, index, command, None, f"{how} without printing an error object", _excerpt(out))


def _plugin_error(net: NetworkList, index: int, command: str, code: int | None, msg: str,
                  details: str = "") -> PluginError:
    return PluginError(command, net.plugin_type(index), index + 1, len(net.plugins), net.name, code, msg, details)


def _excerpt(out: bytes, limit: int = 500) -> str:
    text = out.decode(errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
