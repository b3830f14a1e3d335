#!/usr/bin/env bash
# Chain output equivalence on real captures: every capture in TRACES_DIR/real runs through
# the example chains (figure1, nat, trojan, acl, http_proxy, and port_scan in its
# detect-only form: a blocking firewall has its own equivalence relation, see
# docs/nfs/port_scan.md) with 1-2 workers and 1-4 instances of every vertex, and
# `streamnf check` compares each run with the single-instance run (per-port packet
# multisets, alerts, final state).
#
#   scripts/check-parallel-real.sh [TRACES_DIR] [STREAMNF_BIN]
#
# Prints one line per capture and chain, then "N passed, M failed"; exits 1 on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRACES=${1:-$ROOT/../shared/traces}
BIN=${2:-$ROOT/target/release/streamnf}
[ -x "$BIN" ] || { echo "check-parallel-real: no binary $BIN (cargo build --release --bin streamnf)" >&2; exit 2; }
[ -d "$TRACES/real" ] || { echo "check-parallel-real: no $TRACES/real" >&2; exit 2; }

pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=scripts/example-chains.sh
source "$ROOT/scripts/example-chains.sh"
example_chains "$ROOT" "$tmp"
for trace in "$TRACES"/real/*; do
    [ -f "$trace" ] || continue
    for file in "${chains[@]}"; do
        chain=$(basename "$file" .toml)
        vertices=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$file" | tail -n +2)
        shapes_ok=0
        shapes_bad=""
        for workers in 1 2; do
            for n in 1 2 3 4; do
                args=()
                for v in $vertices; do args+=(--instances "$v=$n"); done
                if out=$(timeout 300 "$BIN" check "$file" --trace "$trace" --workers "$workers" "${args[@]}" 2>&1); then
                    shapes_ok=$((shapes_ok + 1))
                else
                    shapes_bad="$shapes_bad w$workers/i$n"
                    echo "$out" | sed 's/^/    /' | head -8
                fi
            done
        done
        if [ -z "$shapes_bad" ]; then
            pass=$((pass + 1))
            printf '  ok    %-32s %-18s %d shapes equivalent\n' "$(basename "$trace")" "$chain" "$shapes_ok"
        else
            fail=$((fail + 1))
            printf '  FAIL  %-32s %-18s not equivalent:%s\n' "$(basename "$trace")" "$chain" "$shapes_bad"
        fi
    done
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
