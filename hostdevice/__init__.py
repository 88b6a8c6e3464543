"""The host-device main plugin: an existing link of the node moved into the container, and back on DEL."""
