"""Exceptions raised by the chains package.

Plugins map :class:`TryAgain` to CNI error code 11 ("try again later"); everything else
is a hard failure of the operation.
"""
from __future__ import annotations


class ChainsError(Exception):
    """A netfilter operation failed; the message says which and why."""


class TryAgain(ChainsError):
    """A transient failure: the xtables lock stayed busy or the table kept changing.

    ``code`` is the CNI error code plugins should report for it.
    """

    code = 11


class LockTimeout(TryAgain):
    """The xtables lock could not be taken within the allowed wait."""


class IptcError(ChainsError):
    """libiptc refused an operation; ``errno`` is the C errno it left (0 if none)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno
