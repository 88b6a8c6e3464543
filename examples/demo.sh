#!/usr/bin/env bash
# The end-to-end demo, on a fresh machine: installs what it needs (.ci/bootstrap), then runs
# examples/demo.py as root inside network namespaces of its own, and leaves the machine as it found it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces): sudo $0" >&2; exit 1
fi
python=$("$here/.ci/bootstrap")
exec "$python" "$here/examples/demo.py" "$@"
