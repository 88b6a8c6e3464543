"""One NETLINK_NETFILTER socket talking nf_tables: single gets, filtered dumps, atomic batches.

A batch (``NFNL_MSG_BATCH_BEGIN`` ... ``NFNL_MSG_BATCH_END``) is one nftables transaction: the
kernel applies all of its messages or none. Only the last message asks for an ACK (errors are
reported for any message; acknowledging each one would overflow the socket on a big batch); the
kernel handles the whole batch inside ``send``, so by then every answer is queued and is read
without waiting.
The socket belongs to the network namespace of the thread that opened it.
"""
from __future__ import annotations

import _socket
import errno as errnos
import os

from chains.nft import wire as w
from netlink import wire as nl

RECEIVE_BUFFER_SIZE = 1 << 17
DUMP_ATTEMPTS = 10
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SO_SNDBUFFORCE = 32  # socket(7); not in Python's socket module


class NftError(OSError):
    """The kernel refused an nf_tables request; ``errno`` is its errno, the message names the request."""


class Session:
    """A socket plus the sequence numbers of its requests."""

    def __init__(self) -> None:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, w.NETLINK_NETFILTER)
        try:
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                try:
                    sock.setsockopt(SOL_NETLINK, option, 1)
                except OSError:
                    pass
            sock.bind((0, 0))
            sock.connect((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = int.from_bytes(os.urandom(2), "little") << 8  # leftovers of another socket never match
        self._buffer = bytearray(RECEIVE_BUFFER_SIZE)

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _receive(self, flags: int = 0) -> bytes:
        length = self._sock.recv_into(self._buffer, 0, flags | _socket.MSG_TRUNC)
        if length > len(self._buffer):
            raise NftError(errnos.EMSGSIZE, f"nftables reply of {length} bytes truncated")
        return bytes(memoryview(self._buffer)[:length])

    # ------------------------------------------------------------------ reads

    def _request(self, command: int, family: int, attrs: bytes, flags: int, what: str) -> list[dict[int, bytes]]:
        seq = self._next_seq()
        self._sock.send(nl.message(w.msg_type(command), nl.NLM_F_REQUEST | flags, seq, w.nfgenmsg(family) + attrs))
        replies: list[dict[int, bytes]] = []
        self.interrupted = False
        while True:
            for kind, reply_flags, reply_seq, body in nl.iter_messages(self._receive()):
                if reply_seq != seq or kind == nl.NLMSG_NOOP:
                    continue
                if kind in (nl.NLMSG_ERROR, nl.NLMSG_DONE):
                    code = nl.error_code(body) if len(body) >= 4 else 0
                    if code:
                        raise _error(code, what, nl.error_ext_message(body, reply_flags) if kind == nl.NLMSG_ERROR else "")
                    return replies
                self.interrupted |= bool(reply_flags & nl.NLM_F_DUMP_INTR)
                replies.append(nl.parse_attrs(body, 4))
                if not reply_flags & nl.NLM_F_MULTI:
                    return replies

    def get(self, command: int, family: int, attrs: bytes, what: str) -> dict[int, bytes] | None:
        """One object (table, chain, set element) by name or key; None if it does not exist."""
        try:
            replies = self._request(command, family, attrs, 0, what)
        except NftError as err:
            if err.errno == errnos.ENOENT:
                return None
            raise
        return replies[0] if replies else None

    def dump(self, command: int, family: int, attrs: bytes, what: str) -> list[dict[int, bytes]]:
        """A dump narrowed by ``attrs`` (e.g. the rules of one chain)."""
        for _attempt in range(DUMP_ATTEMPTS):
            try:
                replies = self._request(command, family, attrs, nl.NLM_F_DUMP, what)
            except NftError as err:
                if err.errno == errnos.ENOENT:
                    return []
                raise
            if not self.interrupted:
                return replies
        raise NftError(errnos.EINTR, f"{what}: dump interrupted by concurrent changes")

    def first_dump_reply(self, command: int, family: int, attrs: bytes, what: str) -> list[dict[int, bytes]]:
        """The messages of the first datagram of a dump; the rest is left unread (close this session
        afterwards)."""
        seq = self._next_seq()
        self._sock.send(nl.message(w.msg_type(command), nl.NLM_F_REQUEST | nl.NLM_F_DUMP, seq,
                                   w.nfgenmsg(family) + attrs))
        replies = []
        for kind, _flags, reply_seq, body in nl.iter_messages(self._receive()):
            if reply_seq != seq or kind == nl.NLMSG_NOOP:
                continue
            if kind in (nl.NLMSG_ERROR, nl.NLMSG_DONE):
                code = nl.error_code(body) if len(body) >= 4 else 0
                if code and code != errnos.ENOENT:
                    raise _error(code, what, "")
                break
            replies.append(nl.parse_attrs(body, 4))
        return replies

    # ------------------------------------------------------------------ batches

    def commit(self, messages: list[tuple[int, int, int, bytes, str]]) -> None:
        """Send ``(command, family, flags, attrs, description)`` messages as one transaction."""
        if not messages:
            return
        first = self._next_seq()
        parts = [nl.message(w.NFNL_MSG_BATCH_BEGIN, nl.NLM_F_REQUEST, first,
                            w.nfgenmsg(0, w.NFNL_SUBSYS_NFTABLES))]
        described: dict[int, str] = {}
        for index, (command, family, flags, attrs, what) in enumerate(messages):
            seq = self._next_seq()
            described[seq] = what
            ack = nl.NLM_F_ACK if index == len(messages) - 1 else 0
            parts.append(nl.message(w.msg_type(command), nl.NLM_F_REQUEST | ack | flags, seq,
                                    w.nfgenmsg(family) + attrs))
        parts.append(nl.message(w.NFNL_MSG_BATCH_END, nl.NLM_F_REQUEST, self._next_seq(),
                                w.nfgenmsg(0, w.NFNL_SUBSYS_NFTABLES)))
        batch = b"".join(parts)
        _fit_send_buffer(self._sock, len(batch))
        self._sock.send(batch)
        last = max(described)
        failure: NftError | None = None
        receive_flags = 0
        while True:
            try:
                data = self._receive(receive_flags)
            except BlockingIOError:
                break
            receive_flags = _socket.MSG_DONTWAIT  # the kernel answered the whole batch inside send()
            done = False
            for kind, reply_flags, seq, body in nl.iter_messages(data):
                if kind != nl.NLMSG_ERROR or seq not in described:
                    continue
                code = nl.error_code(body)
                if code and failure is None:
                    failure = _error(code, described[seq], nl.error_ext_message(body, reply_flags))
                done |= seq == last
            if done:
                break
        if failure is not None:
            raise failure


def _fit_send_buffer(sock: _socket.socket, size: int) -> None:
    """Let the socket take a batch of ``size`` bytes in one message, as nft does: the kernel runs a batch
    from one message, and refuses one longer than the send buffer (EMSGSIZE; the default buffer holds
    about a thousand container chains' worth). The kernel doubles what it is given."""
    if size + 64 <= sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF):
        return
    for option in (SO_SNDBUFFORCE, _socket.SO_SNDBUF):  # FORCE passes net.core.wmem_max (CAP_NET_ADMIN)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, option, size + 64)
            return
        except OSError:
            continue


def _error(code: int, what: str, ext: str) -> NftError:
    text = os.strerror(code)
    return NftError(code, f"{what}: {text}" + (f" ({ext})" if ext else ""))
