from __future__ import annotations

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Timed assertions measure this machine, not the code's correctness: they run on a developer's
    # quiet machine (or with PYCNI_TIMED_TESTS=1), never in CI; benchmarks/ measures for real.
    skip_timing = os.environ.get("CI") and os.environ.get("PYCNI_TIMED_TESTS") != "1"
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root and network namespaces"))
        if "timing" in item.keywords and skip_timing:
            item.add_marker(pytest.mark.skip(reason="timed test: not run in CI (see benchmarks/)"))
