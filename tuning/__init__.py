"""The tuning plugin: sysctls and link attributes of the container interface, restored on DEL."""
