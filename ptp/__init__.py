"""The ptp main plugin: a veth pair per container, routed (not bridged) through the node."""
