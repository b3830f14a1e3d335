#!/usr/bin/env bash
# Every example chain over every real and malformed capture, on the reference engine: each
# run must end with exit 0 or 2 (a damaged file: one clear error), and no NF may panic or
# fail on any input (`nf_panics` and `nf_errors` in --summary-json are 0 everywhere).
#
#   scripts/check-nf-robustness.sh [TRACES_DIR] [STREAMNF_BIN]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRACES=${1:-$ROOT/../shared/traces}
BIN=${2:-$ROOT/target/release/streamnf}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
runs=0
bad=0
for chain in "$ROOT"/examples/*.toml; do
    for trace in "$TRACES"/real/* "$TRACES"/malformed/*; do
        [ -f "$trace" ] || continue
        runs=$((runs + 1))
        rc=0
        timeout 120 "$BIN" run "$chain" --trace "$trace" --workers 1 -q --no-progress \
            --summary-json "$tmp/s.json" >/dev/null 2>"$tmp/err" || rc=$?
        if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
            echo "  FAIL  $(basename "$chain") $(basename "$trace"): exit $rc: $(head -c 300 "$tmp/err")"
            bad=$((bad + 1))
            continue
        fi
        [ -s "$tmp/s.json" ] || continue
        faults=$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(sum(v.get("nf_panics", 0) + v.get("nf_errors", 0) for v in s.get("vertices", {}).values()))
' "$tmp/s.json")
        rm -f "$tmp/s.json"
        if [ "$faults" -ne 0 ]; then
            echo "  FAIL  $(basename "$chain") $(basename "$trace"): $faults NF panics/errors"
            bad=$((bad + 1))
        fi
    done
done
echo "$runs runs, $bad failed"
[ "$bad" -eq 0 ]
