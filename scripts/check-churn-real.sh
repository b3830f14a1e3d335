#!/usr/bin/env bash
# Chain output equivalence under churn on real captures: every capture in TRACES_DIR runs
# through the example chains (figure1, nat, acl, http_proxy, trojan, and port_scan in its
# detect-only form: a blocking firewall has its own equivalence relation, see
# docs/nfs/port_scan.md) with 2 workers and K random churn events (scale up/down, fail,
# kill, clone, straggle) drawn from seeds 1..N, plus once with 2 instances of every vertex
# and the events of seed 1; `streamnf check` compares each run with the single-instance
# run without events. Every run is one schedule.
#
#   scripts/check-churn-real.sh [TRACES_DIR] [STREAMNF_BIN]
#
#   TRACES_DIR  captures (default: ../shared/traces/real from the repository root)
#   SEEDS=N     seeds per capture and chain (default 2)
#   EVENTS=K    random events per schedule (default 5)
#   JOBS=J      checks run in parallel (default 2)
#   TIMEOUT=T   seconds before a check counts as hung, and failed (default 60; a check of
#               the largest capture takes well under a second)
#
# The binary is copied first, so a rebuild during the run does not mix two versions.
#
# Prints one line per capture and chain, the command and the first 15 lines of output of
# every failing schedule, then "check-churn-real: N schedules, F failed" (plus the
# schedules skipped because check refused a damaged capture); exits 1 on any failure.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRACES=${1:-$ROOT/../shared/traces/real}
BIN=${2:-$ROOT/target/release/streamnf}
SEEDS=${SEEDS:-2}
EVENTS=${EVENTS:-5}
JOBS=${JOBS:-2}
TIMEOUT=${TIMEOUT:-60}

if [ ! -d "$TRACES" ]; then
    echo "check-churn-real: no captures in $TRACES, skipped"
    exit 0
fi
[ -x "$BIN" ] || { echo "check-churn-real: no binary $BIN (cargo build --release --bin streamnf)" >&2; exit 2; }

tmp=$(mktemp -d)
xargs_pid=
cleanup() {
    if [ -n "$xargs_pid" ]; then
        kill "$xargs_pid" 2>/dev/null
        # Checks still running (a pid file and no exit status yet).
        for f in "$tmp"/res/*.pid; do
            [ -f "$f" ] && [ ! -f "${f%.pid}.rc" ] && kill "$(cat "$f")" 2>/dev/null
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$tmp/jobs" "$tmp/res"
cp "$BIN" "$tmp/streamnf" || { echo "check-churn-real: cannot copy $BIN" >&2; exit 2; }

# shellcheck source=scripts/example-chains.sh
source "$ROOT/scripts/example-chains.sh"
example_chains "$ROOT" "$tmp"

# One job = one schedule: its arguments, one a line, in $tmp/jobs/G.J; the worker leaves
# the output in $tmp/res/G.J.out and then (atomically) the exit status in $tmp/res/G.J.rc.
run_job() {
    local id=$1 rc
    local args=()
    mapfile -t args < "$JOBS_DIR/$id"
    args[0]=$SNAP_BIN
    timeout "$TIMEOUT" "${args[@]}" > "$RES_DIR/$id.out" 2>&1 &
    echo $! > "$RES_DIR/$id.pid"
    wait $!
    rc=$?
    { echo "$rc" > "$RES_DIR/$id.rc.tmp" && mv "$RES_DIR/$id.rc.tmp" "$RES_DIR/$id.rc"; } 2>/dev/null
}
export -f run_job
export JOBS_DIR=$tmp/jobs RES_DIR=$tmp/res SNAP_BIN=$tmp/streamnf TIMEOUT

groups=()      # "capture chain-file" per group, in order
njobs=()       # schedules per group
g=0
for trace in "$TRACES"/*; do
    [ -f "$trace" ] || continue
    for file in "${chains[@]}"; do
        # Vertex names: the first `name =` after each [[vertex]] header.
        vertices=$(awk '/^\[\[/ { inv = ($0 ~ /^\[\[vertex\]\]/); next }
                        inv && /^name *= *"/ { sub(/^name *= *"/, ""); sub(/".*/, ""); print; inv = 0 }' "$file")
        j=0
        for seed in $(seq 1 "$SEEDS"); do
            printf '%s\n' "$BIN" check "$file" --trace "$trace" --workers 2 \
                --random-events "$EVENTS" --seed "$seed" > "$tmp/jobs/$g.$j"
            j=$((j + 1))
        done
        {
            printf '%s\n' "$BIN" check "$file" --trace "$trace" --workers 2
            for v in $vertices; do printf '%s\n' --instances "$v=2"; done
            printf '%s\n' --random-events "$EVENTS" --seed 1
        } > "$tmp/jobs/$g.$j"
        j=$((j + 1))
        groups+=("$trace $file")
        njobs+=("$j")
        g=$((g + 1))
    done
done

if [ "$g" -eq 0 ]; then
    echo "check-churn-real: no captures in $TRACES, skipped"
    exit 0
fi

# Run every schedule, JOBS at a time, in the background; report group by group, in order.
(cd "$tmp/jobs" && ls | sort -t. -k1,1n -k2,2n) \
    | xargs -P "$JOBS" -I{} bash -c 'run_job "$1"' _ {} &
xargs_pid=$!

total=0
failed=0
skipped=0
for ((g = 0; g < ${#groups[@]}; g++)); do
    trace=${groups[$g]%% *}
    file=${groups[$g]#* }
    chain=$(basename "$file" .toml)
    ok=0
    bad=0
    damaged=0
    details=""
    for ((j = 0; j < ${njobs[$g]}; j++)); do
        id=$g.$j
        while [ ! -f "$tmp/res/$id.rc" ]; do
            if ! kill -0 "$xargs_pid" 2>/dev/null && [ ! -f "$tmp/res/$id.rc" ]; then
                echo "lost" > "$tmp/res/$id.rc"
                break
            fi
            sleep 0.05
        done
        rc=$(cat "$tmp/res/$id.rc")
        total=$((total + 1))
        if [ "$rc" = 0 ]; then
            ok=$((ok + 1))
        elif [ "$rc" = 2 ] && grep -q damaged "$tmp/res/$id.out" 2>/dev/null; then
            damaged=$((damaged + 1))
            skipped=$((skipped + 1))
        else
            bad=$((bad + 1))
            failed=$((failed + 1))
            cmd=$(mapfile -t a < "$tmp/jobs/$id"; printf '%q ' "${a[@]}")
            details+="    exit $rc: ${cmd% }"$'\n'
            [ "$rc" = 124 ] && details+="      (timed out after ${TIMEOUT}s: hung; check prints its events only when the run ends)"$'\n'
            [ -s "$tmp/res/$id.out" ] &&
                details+=$(head -n 15 "$tmp/res/$id.out" | sed 's/^/      /')$'\n'
        fi
    done
    if [ "$bad" -gt 0 ]; then
        printf '  FAIL  %-32s %-18s %d/%d schedules equivalent, %d failed\n' \
            "$(basename "$trace")" "$chain" "$ok" "${njobs[$g]}" "$bad"
        printf '%s' "$details"
    elif [ "$damaged" -gt 0 ]; then
        printf '  skip  %-32s %-18s %d schedules skipped (damaged capture), %d equivalent\n' \
            "$(basename "$trace")" "$chain" "$damaged" "$ok"
    else
        printf '  ok    %-32s %-18s %d schedules equivalent\n' "$(basename "$trace")" "$chain" "$ok"
    fi
done
wait "$xargs_pid" 2>/dev/null
xargs_pid=

if [ "$skipped" -gt 0 ]; then
    echo "check-churn-real: $total schedules, $failed failed, $skipped skipped (damaged capture)"
else
    echo "check-churn-real: $total schedules, $failed failed"
fi
[ "$failed" -eq 0 ]
