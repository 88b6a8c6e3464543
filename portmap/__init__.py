"""The portmap meta plugin: hostPorts to container ports with DNAT, hairpin and masquerade."""
