# Sourced by the real-capture checks: sets the array `chains` to the example chains that
# have one reference behaviour under any number of instances and any schedule — figure1,
# nat, acl, http_proxy, trojan, port_scan in its detect-only form (a blocking firewall
# has its own equivalence relation, see docs/nfs/port_scan.md), and nat with its reads
# prefetched per batch (`mode = "async"`), the last two written into DIR.
#
#   source scripts/example-chains.sh; example_chains ROOT DIR
example_chains() {
    local root=$1 dir=$2 c
    # port_scan, detect only: the firewall does not enforce the analyzer's decisions.
    sed '/^analyzer = /d' "$root/examples/port_scan.toml" > "$dir/port_scan_detect.toml"
    chains=()
    for c in figure1 nat acl http_proxy trojan; do
        [ -f "$root/examples/$c.toml" ] && chains+=("$root/examples/$c.toml")
    done
    chains+=("$dir/port_scan_detect.toml")
    # nat, asynchronous: must match the synchronous single-instance run.
    sed '/^\[vertex.params\]/a mode = "async"' "$root/examples/nat.toml" > "$dir/nat_async.toml"
    chains+=("$dir/nat_async.toml")
}
