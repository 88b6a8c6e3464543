"""A minimal rtnetlink library built on the standard library only.

It replaces pyroute2 in the per-container plugin processes, where pyroute2's
import cost (~160 ms, ~33 MB) dominates. Modules:

- ``netlink.rtnl``: the ``Netlink`` class (links, bridges, veths, addresses, routes);
- ``netlink.netns``: entering network namespaces (setns) and comparing them;
- ``netlink.sysctl``: reading and writing ``/proc/sys`` keys of the current netns;
- ``netlink.records``: the ``Link``, ``Addr``, ``Route`` and ``BridgeVlan`` values;
- ``netlink.errors``: ``NetlinkError``.

This file deliberately imports nothing: ``import netlink.rtnl`` must stay cheap.
"""
