"""Everything cnictl reports to a person: one exception family, each with a readable message."""
from __future__ import annotations

# The spec's well-known codes (and the Go library's extras), named for people reading errors.
CODE_NAMES: dict[int, str] = {
    1: "incompatible CNI version",
    2: "unsupported field",
    3: "unknown container",
    4: "invalid environment variables",
    5: "I/O failure",
    6: "decode failure",
    7: "invalid network config",
    8: "invalid network namespace",
    11: "try again later",
    50: "plugin not available",
    51: "plugin not available, existing containers may have limited connectivity",
    999: "internal plugin error",
}


class CnictlError(Exception):
    """A failure cnictl explains to the user; ``str()`` is the whole explanation."""


class ConfigError(CnictlError):
    """A network configuration that cannot be found, read or accepted."""


class CacheError(CnictlError):
    """A result-cache file that exists but cannot be used."""


class PluginError(CnictlError):
    """A plugin that failed: its error object (code, msg, details) and where in the list it ran."""

    def __init__(self, command: str, plugin_type: str, position: int, count: int, network: str,
                 code: int | None, msg: str, details: str = "") -> None:
        self.command = command
        self.plugin_type = plugin_type
        self.position = position  # 1-based, in list order
        self.count = count
        self.network = network
        self.code = code
        self.msg = msg
        self.details = details
        super().__init__(self.describe())

    def describe(self) -> str:
        lines = [f'{self.command} failed in plugin "{self.plugin_type}" '
                 f'({self.position} of {self.count} in network "{self.network}")']
        if self.code is not None:
            lines.append(f"  code:    {self.code} ({CODE_NAMES.get(self.code, 'plugin-specific')})")
        lines.append(f"  msg:     {self.msg}")
        if self.details:
            lines.append(f"  details: {self.details}")
        return "\n".join(lines)


class GCError(CnictlError):
    """GC goes on after a failure; this carries every failure it met, in order."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__(f"GC finished with {len(failures)} error(s):\n" + "\n".join(failures))
