#!/usr/bin/env bash
# The side-by-side benchmark (as root; bootstraps like tests/run.sh). Arguments go to bench.py, e.g.
#   sudo benchmarks/run.sh --sizes 0,100,1000 --cycles 20 --helper
#   sudo benchmarks/run.sh --sides ours-iptables,ours-nftables,ref-1.1.1,ref-1.7.1-nft --sizes 0,100,1000 --helper
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=$("$here/.ci/bootstrap")
exec "$python" "$here/benchmarks/bench.py" "$@"
