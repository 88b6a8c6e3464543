"""The firewall meta plugin: lets container traffic through FORWARD (iptables backend)."""
