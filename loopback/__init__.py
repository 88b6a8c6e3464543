"""The loopback plugin: brings ``lo`` up in the container's network namespace."""
