"""``python -m cnictl``: the same as the ``cnictl`` console script."""
from __future__ import annotations

from cnictl.cli import main

raise SystemExit(main())
