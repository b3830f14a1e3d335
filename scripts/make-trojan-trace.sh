#!/usr/bin/env bash
# Builds trojan test captures from the real captures in /work/shared/traces/real (§5.4):
# one internal host (10.20.30.40) does, one after the other,
#   1. ssh.pcap                 an inbound SSH session (it is the server, port 22)
#   2. http_veth_generated.pcap the first TCP connection with `GET /….html` (one connection)
#   3. ftp.pcap                 an FTP session with `RETR 1MB.zip` (passive data connections)
#   3b. ftp.pcap again          the same session with `1MB.zip` renamed `1MB.exe` in every
#                               payload (same length; checksums fixed) and the server moved
#                               to another address: the .exe download
#   4. irc.pcap                 an IRC session on port 8000 with `NICK` and `JOIN`
# Addresses are rewritten with tcprewrite (pseudo-NAT, checksums fixed), each capture is
# shifted in time with editcap -t so it starts 1 s after the previous one ends, and mergecap
# merges them in time order. Two more captures hold the same flows in wrong orders.
#
# What the real captures contain (and do not): ftp.pcap downloads only `1MB.zip` (no capture
# here has a RETR of an .exe, and tcprewrite cannot rewrite payloads, so step 3b edits the
# bytes itself), and irc.pcap talks to freenode on port 8000, so
# scripts/check-trojan-real.sh adds port 8000 to the detector's `irc_ports`.
#
# Usage: scripts/make-trojan-trace.sh [OUT_DIR]   (default /tmp/streamnf-trojan-real)
# Env:   REAL=DIR  the real captures (default /work/shared/traces/real)
# Writes OUT_DIR/trojan-in-order.pcap (ssh, http, ftp, ftp-exe, irc), trojan-wrong-order.pcap
# (ssh, ftp, ftp-exe, http, irc: the html comes after the downloads) and trojan-reversed.pcap
# (irc, ftp-exe, ftp, http, ssh).
set -euo pipefail

REAL=${REAL:-/work/shared/traces/real}
OUT=${1:-/tmp/streamnf-trojan-real}
HOST=10.20.30.40          # the infected internal host
SSH_CLIENT=198.51.100.22  # the external SSH client (ssh.pcap's client is 172.16.238.1, internal)
FTP_EXE=198.51.100.33     # the server of the .exe download (a second copy of ftp.pcap's session)

for tool in tshark tcprewrite editcap mergecap capinfos python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 2; }
done
for f in ssh ftp irc http_veth_generated; do
    [ -r "$REAL/$f.pcap" ] || { echo "error: $REAL/$f.pcap is missing" >&2; exit 2; }
done
mkdir -p "$OUT"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# --- 1. the HTTP part: the first TCP connection that GETs an .html file ---------------------
stream=$(tshark -r "$REAL/http_veth_generated.pcap" \
    -Y 'http.request.method == "GET" && http.request.uri matches "\\.html$"' \
    -T fields -e tcp.stream 2>/dev/null | sed -n 1p)
[ -n "$stream" ] || { echo "error: no GET of an .html file in http_veth_generated.pcap" >&2; exit 2; }
tshark -r "$REAL/http_veth_generated.pcap" -Y "tcp.stream eq $stream" -F pcap -w "$W/http-raw.pcap" 2>/dev/null
uri=$(tshark -r "$W/http-raw.pcap" -Y http.request -T fields -e http.request.uri 2>/dev/null | sed -n 1p)
client=$(tshark -r "$W/http-raw.pcap" -Y http.request -T fields -e ip.src 2>/dev/null | sed -n 1p)
echo "http: tcp stream $stream of http_veth_generated.pcap, client $client, GET $uri ($(capinfos -c -M "$W/http-raw.pcap" | awk '/Number of packets/ {print $NF}') packets)"

# --- 2. rewrite addresses: the internal endpoint of every capture becomes $HOST -------------
rewrite() { # in out pnat-map
    tcprewrite --infile="$1" --outfile="$2" --pnat="$3" --fixcsum
}
rewrite "$REAL/ssh.pcap" "$W/ssh.pcap" "172.16.238.168/32:$HOST/32,172.16.238.1/32:$SSH_CLIENT/32"
rewrite "$W/http-raw.pcap" "$W/http.pcap" "$client/32:$HOST/32"
rewrite "$REAL/ftp.pcap" "$W/ftp.pcap" "192.168.1.212/32:$HOST/32"
rewrite "$REAL/irc.pcap" "$W/irc.pcap" "10.180.156.249/32:$HOST/32"

# The .exe download: ftp.pcap's session with `1MB.zip` renamed in every payload. The name
# keeps its length, so only checksums change (tcprewrite --fixcsum recomputes them).
python3 - "$REAL/ftp.pcap" "$W/ftp-exe-raw.pcap" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
magic = struct.unpack("<I", data[:4])[0]
order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
out, i, n, body = [data[:24]], 0, 0, data[24:]
while i + 16 <= len(body):
    incl = struct.unpack(order + "I", body[i + 8:i + 12])[0]
    frame = body[i + 16:i + 16 + incl]
    n += frame.count(b"1MB.zip")
    out += [body[i:i + 16], frame.replace(b"1MB.zip", b"1MB.exe")]
    i += 16 + incl
open(sys.argv[2], "wb").write(b"".join(out))
print(f"ftp-exe: renamed 1MB.zip to 1MB.exe {n} times")
PY
rewrite "$W/ftp-exe-raw.pcap" "$W/ftp-exe.pcap" "192.168.1.212/32:$HOST/32,90.130.70.73/32:$FTP_EXE/32"

# What each part shows (checked, so a changed capture fails loudly here).
retr=$(tshark -r "$W/ftp.pcap" -Y 'ftp.request.command == "RETR"' -T fields -e ftp.request.arg 2>/dev/null | tr '\n' ' ')
retr_exe=$(tshark -r "$W/ftp-exe.pcap" -Y 'ftp.request.command == "RETR"' -T fields -e ftp.request.arg 2>/dev/null | tr '\n' ' ')
bad=$(tshark -r "$W/ftp-exe.pcap" -o tcp.check_checksum:TRUE -Y 'tcp.checksum.status == 0' 2>/dev/null | wc -l)
irc=$(tshark -r "$W/irc.pcap" -Y "ip.src == $HOST && tcp.len > 0" -T fields -e tcp.payload 2>/dev/null \
    | xxd -r -p | grep -a -E '^(NICK|JOIN) ' | tr -d '\r' | tr '\n' ';' || true)
synack=$(tshark -r "$W/ssh.pcap" -Y "ip.src == $HOST && tcp.srcport == 22 && tcp.flags.syn == 1 && tcp.flags.ack == 1" 2>/dev/null | wc -l)
echo "ssh:  $SSH_CLIENT -> $HOST:22, SYN/ACKs from the host: $synack"
echo "ftp:  RETR of: ${retr:-nothing}; the copy: RETR of: ${retr_exe:-nothing} (bad TCP checksums: $bad)"
echo "irc:  client lines: ${irc:-none}"
[ "$synack" -ge 1 ] && [ -n "$retr" ] && [ -n "$retr_exe" ] && [ -n "$irc" ] && [ "$bad" -eq 0 ] \
    || { echo "error: a step is missing" >&2; exit 1; }

# --- 3. shift in time and merge --------------------------------------------------------------
first() { capinfos -T -r -a -S "$1" | cut -f2; }
last() { capinfos -T -r -e -S "$1" | cut -f2; }
T0=1700000000
place() { # out part... : shifts each part to start 1 s after the previous one ends, then merges
    local out=$1 t=$T0 i=0 parts=()
    shift
    for p in "$@"; do
        local delta
        delta=$(awk -v t="$t" -v f="$(first "$W/$p.pcap")" 'BEGIN { printf "%.6f", t - f }')
        editcap -t "$delta" "$W/$p.pcap" "$W/$out-$i-$p.pcap"
        parts+=("$W/$out-$i-$p.pcap")
        t=$(awk -v e="$(last "$W/$out-$i-$p.pcap")" 'BEGIN { printf "%.6f", e + 1 }')
        i=$((i + 1))
    done
    mergecap -F pcap -w "$OUT/$out.pcap" "${parts[@]}"
    echo "wrote $OUT/$out.pcap ($*: $(capinfos -c -M "$OUT/$out.pcap" | awk '/Number of packets/ {print $NF}') packets)"
}
place trojan-in-order ssh http ftp ftp-exe irc
place trojan-wrong-order ssh ftp ftp-exe http irc
place trojan-reversed irc ftp-exe ftp http ssh
