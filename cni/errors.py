"""CNI error codes and the exception every plugin raises to report one.

The skeleton turns a CNIError into the spec's error object on stdout
(``{"cniVersion", "code", "msg", "details"}``) and a non-zero exit.
"""
from __future__ import annotations

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
NOT_AVAILABLE_LIMITED = 51
INTERNAL = 999


class CNIError(Exception):
    """A failure with a well-known CNI error code, a message and optional details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, object]:
        out: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


def invalid_config(msg: str, details: str = "") -> CNIError:
    return CNIError(INVALID_CONFIG, msg, details)


def invalid_value(plugin: str, key: str, value: object, expected: str) -> CNIError:
    """Code 7 naming a config key, what it should be and what it is (shortened):
    ``invalid ptp config: mtu: expected an integer from 0 to 65535 (got 'big')``."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CNIError(INVALID_CONFIG, f"invalid {plugin} config: {key}: expected {expected} (got {shown})")
