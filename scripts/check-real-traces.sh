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
# KEEP=1 keeps the work directory (outputs, summaries, stderr) for inspection;
# REAL_TIMEOUT / MALFORMED_TIMEOUT (seconds, default 300 / 60) change the time limits.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRACES=${1:-$ROOT/../shared/traces}
BIN=${2:-$ROOT/target/release/streamnf}
FIGURE1=$ROOT/examples/figure1.toml
NAT=$ROOT/examples/nat.toml
REAL_TIMEOUT=${REAL_TIMEOUT:-300}
MALFORMED_TIMEOUT=${MALFORMED_TIMEOUT:-60}

die() { echo "check-real-traces: $*" >&2; exit 2; }

for tool in capinfos tshark timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool (apt-get install -y tshark wireshark-common coreutils)"
done
if command -v jq >/dev/null 2>&1; then
    JSON=${FORCE_JSON:-jq}
elif command -v python3 >/dev/null 2>&1; then
    JSON=python3
else
    die "needs jq or python3 to read --summary-json (apt-get install -y jq)"
fi
[[ -x $BIN ]] || die "no streamnf binary at $BIN (build it: cargo build --release --bin streamnf)"
[[ -d $TRACES/real && -d $TRACES/malformed ]] || die "$TRACES must hold real/ and malformed/"
[[ -f $FIGURE1 && -f $NAT ]] || die "example chains missing: $FIGURE1, $NAT"
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
FMT='%-52s %-8s %8s %8s %-14s %-14s %9s %6s  %s\n'

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

# The facts the checks need from a --summary-json, one per line:
#   packets_in N | malformed TOTAL (or "malformed bad") | alerts TOTAL | panics N | port NAME N ...
# "invalid" when the file is not a JSON object. Uses jq, or python3 when jq is missing.
SUMMARY_JQ='if type != "object" then "invalid" else
    "packets_in \(.packets_in // "missing")",
    (if (.malformed | type) == "object" and all(.malformed[]; type == "number")
     then "malformed \([.malformed[]] | add // 0)" else "malformed bad" end),
    "alerts \([.alerts[]?] | add // 0)",
    "panics \([.vertices[]? | .nf_panics // 0] | add // 0)",
    (.packets_out // {} | to_entries[] | "port \(.key) \(.value)")
  end'
SUMMARY_PY='
import json, sys
try:
    s = json.load(open(sys.argv[1]))
    assert isinstance(s, dict)
except Exception:
    print("invalid"); sys.exit()
print("packets_in", s.get("packets_in", "missing"))
m = s.get("malformed")
if isinstance(m, dict) and all(isinstance(v, int) for v in m.values()):
    print("malformed", sum(m.values()))
else:
    print("malformed bad")
print("alerts", sum((s.get("alerts") or {}).values()))
print("panics", sum(v.get("nf_panics", 0) for v in (s.get("vertices") or {}).values()))
for k, v in (s.get("packets_out") or {}).items():
    print("port", k, v)
'
ALERTS_PY='
import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        assert isinstance(json.loads(line), dict)
'
summary_facts() {
    if [[ $JSON == jq ]]; then
        jq -r "$SUMMARY_JQ" "$1" 2>/dev/null || echo invalid
    else
        python3 -c "$SUMMARY_PY" "$1"
    fi
}
alerts_are_json_lines() {
    if [[ $JSON == jq ]]; then
        jq -e 'type == "object"' "$1" >/dev/null 2>&1
    else
        python3 -c "$ALERTS_PY" "$1" 2>/dev/null
    fi
}

# Checks the outputs of a run (its summary, alerts file and output captures). Sets:
# packets out_desc tshark_desc malformed alerts, and appends failure reasons to `reasons`.
check_outputs() {
    local dir=$1 key a b file t panics=0 lines
    local outs=() tsh=() ports=()
    packets=- out_desc=- tshark_desc=- malformed=- alerts=-
    if [[ ! -f $dir/summary.json ]]; then
        reasons+=("no --summary-json written")
        return
    fi
    while read -r key a b; do
        case $key in
            invalid) reasons+=("--summary-json is not a JSON object"); return ;;
            packets_in) packets=$a ;;
            malformed)
                if [[ $a == bad ]]; then reasons+=("summary has no malformed counts"); else malformed=$a; fi ;;
            alerts) alerts=$a ;;
            panics) panics=$a ;;
            port) ports+=("$a $b") ;;
        esac
    done < <(summary_facts "$dir/summary.json")
    [[ $panics == 0 ]] || reasons+=("$panics NF panics counted")
    if [[ -f $dir/alerts.jsonl ]]; then
        lines=$(grep -c . "$dir/alerts.jsonl" || true)
        [[ $lines == "$alerts" ]] || reasons+=("alerts file has $lines lines, summary $alerts")
        ((lines == 0)) || alerts_are_json_lines "$dir/alerts.jsonl" || reasons+=("alerts file is not JSON lines")
    else
        reasons+=("no alerts file")
    fi
    for a in "${ports[@]}"; do
        read -r key b <<<"$a"
        file=$dir/out/$key.pcap
        if [[ ! -f $file ]]; then
            t=missing
            reasons+=("no output capture for port $key")
        else
            t=$(tshark_count "$file")
            if [[ -z $t ]]; then
                t=unreadable
                reasons+=("tshark cannot read $key.pcap")
            elif [[ $t != "$b" ]]; then
                reasons+=("port $key: tshark $t != summary $b")
            fi
        fi
        outs+=("$key=$b")
        tsh+=("$key=$t")
    done
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
        run_streamnf "$dir" "$REAL_TIMEOUT" "$chain" "$trace"
        packets=- out_desc=- tshark_desc=- malformed=- alerts=-
        if [[ $rc != 0 ]]; then
            case $rc in
                101) reasons+=("exit 101 (panic)") ;;
                124) reasons+=("timed out after $REAL_TIMEOUT s") ;;
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
    run_streamnf "$dir" "$MALFORMED_TIMEOUT" "$FIGURE1" "$trace"
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
            # Damage after some records: the summary is still written; it must be consistent.
            [[ -f $dir/summary.json ]] && check_outputs "$dir"
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
        124) reasons+=("timed out after $MALFORMED_TIMEOUT s") ;;
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
