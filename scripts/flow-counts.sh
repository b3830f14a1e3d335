#!/usr/bin/env bash
# Flow counts of an NF flow table against tshark (issue 4): for every IPv4 capture in
# TRACES_DIR/real, the NAT's TCP flow table (one mapping per connection it translates) is
# compared with `tshark -q -z conv,tcp`. The NAT's inside is every address that opens a TCP
# connection in the capture (sends a SYN without ACK), as /32s, so every connection with a
# handshake in the capture is an outbound one; the NAT's `new_tcp` counter (mappings
# created, from --state-json) must then equal the number of tshark TCP conversations.
#
#   scripts/flow-counts.sh [TRACES_DIR] [STREAMNF_BIN]     prints a Markdown table
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRACES=${1:-$ROOT/../shared/traces}
BIN=${2:-$ROOT/target/release/streamnf}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
echo "| capture | tshark TCP conversations | NAT TCP mappings created | NAT mappings live at end | agree |"
echo "|---|---|---|---|---|"
for f in "$TRACES"/real/*; do
    [ -f "$f" ] || continue
    clients=$(tshark -r "$f" -Y 'ip && tcp.flags.syn==1 && tcp.flags.ack==0' -T fields -e ip.src 2>/dev/null | sort -u)
    [ -n "$clients" ] || continue
    conv=$(tshark -r "$f" -q -z conv,tcp 2>/dev/null | grep -cE '^[0-9a-f.:]+:[0-9]+ +<->')
    nets=$(printf '"%s/32",' $clients)
    sed -e "s#^internal_nets = .*#internal_nets = [${nets%,}]#" \
        -e 's#^external_ip = .*#external_ip = "100.64.0.1"#' "$ROOT/examples/nat.toml" > "$tmp/nat.toml"
    "$BIN" run "$tmp/nat.toml" --trace "$f" --workers 1 -q --no-progress --state-json "$tmp/state.jsonl"
    created=$(python3 -c '
import json, sys
n = 0
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["object"] == "counters" and r.get("key_text") == "new_tcp":
        n = r["value"]
print(n)' "$tmp/state.jsonl")
    live=$(python3 -c '
import json, sys
print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["object"] == "conn"))' "$tmp/state.jsonl")
    ok=yes
    [ "$conv" -eq "$created" ] || { ok=NO; fail=1; }
    echo "| $(basename "$f") | $conv | $created | $live | $ok |"
done
exit $fail
