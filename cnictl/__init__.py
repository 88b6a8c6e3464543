"""cnictl: a cnitool/libcni-like runner for people, and the installer of the plugin executables.

``config`` finds and validates network configuration lists, ``cache`` keeps libcni's result cache,
``runtime`` runs a list's plugins the way libcni does, ``install`` writes the plugin launchers and
``cli`` is the ``cnictl`` command.
"""
