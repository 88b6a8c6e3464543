"""The CNI protocol layer: the plugin skeleton, errors, result types and version conversion."""
