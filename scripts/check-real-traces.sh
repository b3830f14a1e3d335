#!/usr/bin/env bash
# Runs streamnf over real and malformed captures and checks it against Wireshark's tools.
#
#   scripts/check-real-traces.sh [TRACES_DIR] [STREAMNF_BIN]
#
#   TRACES_DIR    holds real/ and malformed/   (default: ../shared/traces from the repo root)
#   STREAMNF_BIN  the binary to test           (default: target/release/streamnf;
#                                               build it: cargo build --release --bin streamnf)
#
# real/*       examples/figure1.toml and examples/nat.toml, each with --out, --alerts and
#              --summary-json under `timeout 300`: exit 0, no panic, summary packets_in ==
#              `capinfos -c -M`, every output capture's `tshark -r` count == summary
#              packets_out for its port, alerts file lines == summary alerts.
# malformed/*  figure1 under `timeout 60`: exit 0 with malformed counts reported (and
#              packets_in == capinfos when capinfos reads the file), or exit 2 with one
#              one-line "streamnf: error:" message naming the file. Exit 101 (panic), 124
#              (timeout), any other code, or "panicked" on stderr fails.
#
# Prints a table and a final line "N passed, M failed"; exits 1 if any check failed.
# KEEP=1 keeps the work directory (outputs, summaries, stderr) for inspection.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRACES=${1:-$ROOT/../shared/traces}
BIN=${2:-$ROOT/target/release/streamnf}
FIGURE1=$ROOT/examples/figure1.toml
NAT=$ROOT/examples/nat.toml

die() { echo "check-real-traces: $*" >&2; exit 2; }

for tool in capinfos tshark jq timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool (apt-get install -y tshark jq coreutils; capinfos comes with tshark/wireshark-common)"
done
[[ -x $BIN ]] || die "no streamnf binary at $BIN (build it: cargo build --release --bin streamnf)"
[[ -d $TRACES/real && -d $TRACES/malformed ]] || die "$TRACES must hold real/ and malformed/"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
TRACES=$(cd "$TRACES" && pwd)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-real-traces.XXXXXX")
if [[ ${KEEP:-0} == 1 ]]; then
    echo "work directory: $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

passed=0
failed=0
notes=()
FMT='%-44s %-8s %8s %8s %-14s %-14s %9s %6s  %s\n'

# Packets in a capture according to capinfos; empty output when capinfos cannot read it.
capinfos_count() {
    local out
    if out=$(capinfos -c -M -T -r "$1" 2>/dev/null); then
        awk -F'\t' 'NR == 1 { print $NF }' <<<"$out"
    fi
}

# Packets in a capture according to tshark; empty output when tshark cannot read it.
tshark_count() {
    local out
    if out=$(tshark -n -r "$1" -T fields -e frame.number 2>/dev/null); then
        grep -c . <<<"$out" || true
    fi
}

# row TRACE CHAIN PACKETS CAPINFOS OUT TSHARK MALFORMED ALERTS RESULT
row() { printf "$FMT" "$@"; }

# Checks the outputs of a run that exited 0. Sets: packets out_desc tshark_desc malformed
# alerts, and appends failure reasons to `reasons`.
check_outputs() {
    local dir=$1 summary=$1/summary.json port n file t
    packets=- out_desc=- tshark_desc=- malformed=- alerts=-
    if ! jq -e 'type == "object"' "$summary" >/dev/null 2>&1; then
        reasons+=("no valid --summary-json")
        return
    fi
    packets=$(jq -r '.packets_in // "missing"' "$summary")
    if jq -e '(.malformed | type == "object") and all(.malformed[]; type == "number")' "$summary" >/dev/null; then
        malformed=$(jq -r '[.malformed[]] | add // 0' "$summary")
    else
        reasons+=("summary has no malformed counts")
    fi
    alerts=$(jq -r '[.alerts[]?] | add // 0' "$summary")
    local panics
    panics=$(jq -r '[.vertices[]? | .nf_panics // 0] | add // 0' "$summary")
    [[ $panics == 0 ]] || reasons+=("$panics NF panics counted")
    if [[ -f $dir/alerts.jsonl ]]; then
        local lines
        lines=$(grep -c . "$dir/alerts.jsonl" || true)
        [[ $lines == "$alerts" ]] || reasons+=("alerts file has $lines lines, summary $alerts")
        jq -e -c . "$dir/alerts.jsonl" >/dev/null 2>&1 || [[ $lines == 0 ]] || reasons+=("alerts file is not JSON lines")
    else
        reasons+=("no alerts file")
    fi
    local outs=() tsh=()
    while read -r port n; do
        [[ -n $port ]] || continue
        file=$dir/out/$port.pcap
        if [[ ! -f $file ]]; then
            t=missing
            reasons+=("no output capture for port $port")
        else
            t=$(tshark_count "$file")
            if [[ -z $t ]]; then
                t=unreadable
                reasons+=("tshark cannot read $port.pcap")
            elif [[ $t != "$n" ]]; then
                reasons+=("port $port: tshark $t != summary $n")
            fi
        fi
        outs+=("$port=$n")
        tsh+=("$port=$t")
    done < <(jq -r '.packets_out // {} | to_entries[] | "\(.key) \(.value)"' "$summary")
    if ((${#outs[@]})); then
        out_desc=$(IFS=,; echo "${outs[*]}")
        tshark_desc=$(IFS=,; echo "${tsh[*]}")
    fi
}

# run_streamnf DIR TIMEOUT CHAIN TRACE: runs with every output; sets rc.
run_streamnf() {
    local dir=$1 limit=$2 chain=$3 trace=$4
    mkdir -p "$dir"
    rc=0
    timeout "$limit" "$BIN" run "$chain" --trace "$trace" --out "$dir/out" --alerts "$dir/alerts.jsonl" \
        --summary-json "$dir/summary.json" --no-progress >"$dir/stdout" 2>"$dir/stderr" || rc=$?
}

verdict() {
    local label=$1
    if ((${#reasons[@]})); then
        failed=$((failed + 1))
        result="FAIL"
        local r
        for r in "${reasons[@]}"; do notes+=("FAIL $label: $r"); done
    else
        passed=$((passed + 1))
        result=${ok_word:-ok}
    fi
}

row trace chain packets capinfos "out/port" "tshark/port" malformed alerts result
row "-----" "-----" "-------" "--------" "--------" "-----------" "---------" "------" "------"

shopt -s nullglob
i=0
for trace in "$TRACES"/real/*; do
    [[ -f $trace ]] || continue
    name=real/$(basename "$trace")
    cap=$(capinfos_count "$trace")
    for chain in "$FIGURE1" "$NAT"; do
        cname=$(basename "$chain" .toml)
        i=$((i + 1))
        dir=$WORK/$i
        reasons=()
        ok_word=ok
        run_streamnf "$dir" 300 "$chain" "$trace"
        packets=- out_desc=- tshark_desc=- malformed=- alerts=-
        if [[ $rc != 0 ]]; then
            case $rc in
                101) reasons+=("exit 101 (panic)") ;;
                124) reasons+=("timed out after 300 s") ;;
                *) reasons+=("exit $rc: $(grep -m1 'streamnf: error:' "$dir/stderr" || tail -n1 "$dir/stderr")") ;;
            esac
        else
            check_outputs "$dir"
        fi
        if grep -q panicked "$dir/stderr"; then
            reasons+=("panicked: $(grep -m1 panicked "$dir/stderr")")
        fi
        if [[ -z $cap ]]; then
            reasons+=("capinfos cannot read the trace")
        elif [[ $rc == 0 && $packets != "$cap" ]]; then
            reasons+=("packets_in $packets != capinfos $cap")
        fi
        verdict "$name [$cname]"
        row "$name" "$cname" "$packets" "${cap:--}" "$out_desc" "$tshark_desc" "$malformed" "$alerts" "$result"
    done
done

for trace in "$TRACES"/malformed/*; do
    [[ -f $trace ]] || continue
    name=malformed/$(basename "$trace")
    cap=$(capinfos_count "$trace")
    i=$((i + 1))
    dir=$WORK/$i
    reasons=()
    ok_word=ok
    run_streamnf "$dir" 60 "$FIGURE1" "$trace"
    packets=- out_desc=- tshark_desc=- malformed=- alerts=-
    case $rc in
        0)
            check_outputs "$dir"
            if [[ -n $cap && $packets != "$cap" ]]; then
                reasons+=("packets_in $packets != capinfos $cap")
            fi
            ;;
        2)
            ok_word="ok (exit 2)"
            mapfile -t errs < <(grep '^streamnf: error:' "$dir/stderr" || true)
            last=$(grep . "$dir/stderr" | tail -n1 || true)
            if ((${#errs[@]} != 1)); then
                reasons+=("exit 2 with ${#errs[@]} 'streamnf: error:' lines")
            elif [[ $last != "${errs[0]}" ]]; then
                reasons+=("error message is not one line (continues: $last)")
            elif [[ ${errs[0]} != *"$trace"* ]]; then
                reasons+=("error does not name the file: ${errs[0]}")
            else
                notes+=("exit 2 $name: ${errs[0]#streamnf: error: }${cap:+ [capinfos reads $cap packets]}")
            fi
            ;;
        101) reasons+=("exit 101 (panic)") ;;
        124) reasons+=("timed out after 60 s") ;;
        *) reasons+=("exit $rc") ;;
    esac
    if grep -q panicked "$dir/stderr"; then
        reasons+=("panicked: $(grep -m1 panicked "$dir/stderr")")
    fi
    verdict "$name"
    row "$name" figure1 "$packets" "${cap:--}" "$out_desc" "$tshark_desc" "$malformed" "$alerts" "$result"
done

if ((${#notes[@]})); then
    echo
    printf '%s\n' "${notes[@]}"
fi
echo
echo "$passed passed, $failed failed"
((failed == 0))
