"""The bridge main plugin: a Linux bridge, a veth pair per container, addresses, routes and ipMasq."""

DEFAULT_BRIDGE = "cni0"
