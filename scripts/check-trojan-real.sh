#!/usr/bin/env bash
# Acceptance check of the trojan detector on real captures (issue 4, §5.4): builds the
# captures with scripts/make-trojan-trace.sh, runs the release `streamnf` with
# examples/trojan.toml on each, and asserts exactly 1 `trojan` alert for the host doing the
# four steps in order and 0 for the same flows in wrong orders, on the reference engine
# (1 worker, 1 instance each) and on the parallel engine (2 workers, detector x2, analyzer x2).
#
# The captures' IRC server listens on port 8000, so the chain run here is
# examples/trojan.toml with exactly one edit, made below and printed: 8000 added to
# `irc_ports`. (The .exe download is ftp.pcap's session with the file renamed in its
# payload: see make-trojan-trace.sh.) The unmodified example is also run on the in-order
# capture and must give 0 alerts: without port 8000 it never sees the IRC step.
#
# Usage: scripts/check-trojan-real.sh [WORK_DIR]   (default /tmp/streamnf-trojan-real)
# Env:   REAL=DIR (the real captures), STREAMNF=PATH (default target/release/streamnf, built
#        with cargo when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/tmp/streamnf-trojan-real}
BIN=${STREAMNF:-$ROOT/target/release/streamnf}
if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release -p streamnf-cli)
fi

bash "$ROOT/scripts/make-trojan-trace.sh" "$WORK"

# The chain: examples/trojan.toml with the one documented edit.
CHAIN="$WORK/trojan-real.toml"
sed -e 's/^irc_ports = \[\(.*\)\]/irc_ports = [\1, 8000]/' "$ROOT/examples/trojan.toml" > "$CHAIN"
echo "chain $CHAIN: examples/trojan.toml with these edits:"
diff "$ROOT/examples/trojan.toml" "$CHAIN" | sed 's/^/    /' || true
[ "$(diff "$ROOT/examples/trojan.toml" "$CHAIN" | grep -c '^>')" -eq 1 ] \
    || { echo "error: examples/trojan.toml changed; the edit did not apply" >&2; exit 2; }

fail=0
count() { # chain trace label expected [run options...]
    local chain=$1 trace=$2 label=$3 want=$4
    shift 4
    local alerts="$WORK/$label.alerts.jsonl"
    "$BIN" run "$chain" --trace "$WORK/$trace.pcap" --alerts "$alerts" --summary-json "$WORK/$label.summary.json" \
        "$@" 2>"$WORK/$label.log"
    local n
    n=$(grep -c '"kind":"trojan"' "$alerts" || true)
    local status=ok
    if [ "$n" -ne "$want" ]; then
        status=FAIL
        fail=1
    fi
    # The steps the detector reported (ssh, html, zip, exe, irc), so that "0 alerts" is the
    # order check's doing, not a missed step.
    local sent
    sent=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["vertices"]["detector"]["contexts_out"])' \
        "$WORK/$label.summary.json")
    if [ "$chain" = "$CHAIN" ] && [ "$sent" -ne 5 ]; then
        status=FAIL
        fail=1
    fi
    printf '%-4s %-44s %s alert(s), want %s; %s step messages\n' "$status" "$label" "$n" "$want" "$sent"
    grep '"kind":"trojan"' "$alerts" | sed 's/^/       /' || true
}

for engine in reference parallel; do
    if [ "$engine" = reference ]; then
        opts=(--workers 1 --instances detector=1 --instances analyzer=1)
    else
        opts=(--workers 2 --instances detector=2 --instances analyzer=2)
    fi
    count "$CHAIN" trojan-in-order "in-order.$engine" 1 "${opts[@]}"
    count "$CHAIN" trojan-wrong-order "wrong-order.$engine" 0 "${opts[@]}"
    count "$CHAIN" trojan-reversed "reversed.$engine" 0 "${opts[@]}"
    count "$ROOT/examples/trojan.toml" trojan-in-order "in-order.unmodified-example.$engine" 0 "${opts[@]}"
done

if [ "$fail" -ne 0 ]; then
    echo "FAILED (logs and alerts in $WORK)" >&2
    exit 1
fi
echo "all trojan checks passed"
