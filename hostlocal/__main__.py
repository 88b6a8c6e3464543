"""``python -m hostlocal``: run the host-local plugin."""
from __future__ import annotations

from hostlocal.plugin import main

main()
