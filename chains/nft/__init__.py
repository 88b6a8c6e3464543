"""The nftables backend of ``chains``: nf_tables netlink messages of our own, no libnftables.

Why not libnftables (the library behind ``nft``): before every command it fetches a cache of the
table it touches (all chains, and for some commands all rules and set elements), so with 5,000
containers on a node one ``add``/``list chain``/``delete`` costs ~12/90/250 ms instead of
~0.6/0.2/0.4 ms (measured on the 2-core VM, see ``benchmarks/README.md``). Here every operation
addresses exactly the objects it needs by name or key:

* :mod:`chains.nft.wire` - constants and attribute encoders of the nf_tables netlink API.
* :mod:`chains.nft.expr` - statements (``Stmt``): nft text for people and the kernel's
  expressions for the kernel, built together; rules (``NftRule``) are lists of them.
* :mod:`chains.nft.conditions` - the nft-syntax conditions portmap accepts (``conditionsV4/V6``).
* :mod:`chains.nft.session` - one NETLINK_NETFILTER socket: single gets, filtered dumps and
  one atomic batch per commit.
* :mod:`chains.nft.tx` - ``transaction()``: our lock, lookups by name/key, staged changes and
  one commit, the nftables twin of :func:`chains.table.apply`.
* :mod:`chains.nft.prefixsets` - subnet matches on per-container pairs with hash sets (one per
  prefix length) instead of interval sets.

Two kernel costs shape the layouts built on this: every change that adds a jump or goto makes the
kernel re-validate the table's whole graph of jumps (so per-container data lives in sets, not in
chains reached through verdict maps, wherever it can), and the first close of a netfilter socket
after a deleting commit waits for an RCU grace period (so sockets are closed with the process).

Importing this package imports nothing else.
"""
