"""The netfilter layer of the plugins: iptables rules through libiptc (legacy tables).

* :mod:`chains.rule` - the rule model (:class:`~chains.rule.Rule`, ``Match``, ``Target``,
  ``Conditions``), its iptables-save text (``render``) and argument-list parser
  (``parse_args``, ``parse_conditions``). Pure Python, cheap to import.
* :mod:`chains.table` - transactions: ``apply(family, table, fn)`` under the xtables lock,
  one read, one commit, retried on conflicts (``chains.errors.TryAgain`` when they persist).
* :mod:`chains.owned` - ``OwnedChain`` / ``SharedChain``: ensure, check, remove a chain with
  its rules and the jumps into it.
* :mod:`chains.render` - ``table_text``: a whole table as iptables-save prints it.
* :mod:`chains.lock`, :mod:`chains.iptc_loader`, :mod:`chains.libiptc`, :mod:`chains.codec` -
  the machinery underneath.

Importing this package imports nothing else.
"""
