"""Chain names and comments. Changing any of these breaks upgrades: DEL of containers added by an
older version must still find their chains, and operators' scripts grep for them."""
from __future__ import annotations

from cni.digest import sha512_hex

TOPLEVEL_DNAT = "CNI-HOSTPORT-DNAT"
SETMARK = "CNI-HOSTPORT-SETMARK"
MASQ = "CNI-HOSTPORT-MASQ"
DNAT_PREFIX = "CNI-DN-"
SETMARK_COMMENT = "CNI portfwd masquerade mark"
MASQ_JUMP_COMMENT = "CNI portfwd requiring masquerade"
MAX_COMMENT = 255


def container_hash(network: str, container_id: str) -> str:
    """SHA-512 of network name + container ID, hex, as the reference derives its chain names."""
    return sha512_hex((network + container_id).encode())


def dnat_chain(network: str, container_id: str) -> str:
    """``CNI-DN-`` + 21 hex digits (28 characters, inside iptables' 28-character chain-name limit)."""
    return DNAT_PREFIX + container_hash(network, container_id)[:21]


def dnat_comment(network: str, container_id: str) -> str:
    """The entry rules' comment, cut to fit the kernel's 255-byte limit.

    The reference cuts to 253 characters + '...' (256, one more than the kernel takes); names are
    ASCII by the spec's regex, so characters are bytes here.
    """
    comment = f'dnat name: "{network}" id: "{container_id}"'
    if len(comment) > MAX_COMMENT:
        comment = comment[: MAX_COMMENT - 3] + "..."
    return comment
