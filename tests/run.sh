#!/usr/bin/env bash
# Run the whole test suite (as root: the integration tests build network namespaces).
# Bootstraps itself: Debian packages and the venv come from .ci/bootstrap.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=$("$here/.ci/bootstrap")
cd "$here"
exec "$python" -m pytest "$@"
