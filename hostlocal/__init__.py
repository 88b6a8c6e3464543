"""host-local IPAM: addresses from configured ranges, one reservation file per IP on local disk.

Modules:
- ``addresses``: textual IP / CIDR parsing with the reference's (Go ``net``) rules.
- ``config``: the IPAM config, canonicalised and validated (range sets, requested IPs, routes).
- ``store``: the on-disk store ``<dataDir>/<network>/<ip>`` shared with the Go reference.
- ``index``: an index of the store kept under the records state directory, so that ADD / DEL /
  CHECK read the files of one attachment, not all of them.
- ``allocator``: round-robin allocation per range set.
- ``dns``: resolv.conf parsing for the result's ``dns``.
- ``plugin``: the ADD / DEL / CHECK / GC / STATUS handlers, ``PLUGIN`` and ``main()``.
- ``record``: value semantics for small ``__slots__`` classes (cheaper than dataclasses).
"""
