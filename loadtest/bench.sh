#!/usr/bin/env bash
# Side-by-side load benchmarks: the same str0m client peers against Convene and Janus 1.1.2 in
# one run, then Convene's session scenarios, then the TURN comparison with coturn.
#
# Every server is pinned to SERVER_CORE, the load generator (one thread) to LOAD_CORE. The run
# happens in a network namespace of its own (unshare -n, needs root) holding only lo and a veth
# pair: Convene is measured on 127.0.0.1; Janus (libnice never offers loopback candidates) on the
# veth address 10.99.0.1, which the kernel delivers locally like 127.0.0.1. Nothing leaves the
# namespace. CPU and memory of each server come from /proc/PID (utime+stime, VmRSS).
# Reports land in OUT (JSON, one file per run) and a summary is printed.
#
# Usage: loadtest/bench.sh
#   env: ROUNDS=1 ROOMS=1 PUBLISHERS=2 SUBSCRIBERS=50 DURATION=10   (sfu)
#        SESSIONS=1000 CHAT_SOCKETS=1000 REST_CLIENTS=32 STORM_MAX=100 SKIP=""  (e.g. SKIP="turn janus")
#        OUT=loadtest/results
#        CONVENE=path/to/convene   (another build of the server, e.g. to compare two commits)
# Needs: janus (Debian package, 1.1.2), coturn (TURN part), taskset, python3.
# Not a test: it only prints figures.
set -euo pipefail

ROUNDS=${ROUNDS:-1}
ROOMS=${ROOMS:-1}
PUBLISHERS=${PUBLISHERS:-2}
SUBSCRIBERS=${SUBSCRIBERS:-50}
DURATION=${DURATION:-10}
SESSIONS=${SESSIONS:-1000}
CHAT_SOCKETS=${CHAT_SOCKETS:-1000}
REST_CLIENTS=${REST_CLIENTS:-32}
STORM_MAX=${STORM_MAX:-100}
SKIP=${SKIP:-}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
SECRET=bench-jwt-secret-not-for-production
HTTP_PORT=18080
MEDIA_PORT=17882
JANUS_PORT=18088
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

cd "$(dirname "$0")/.."
OUT=${OUT:-loadtest/results}
mkdir -p "$OUT"
skip() { [[ " $SKIP " == *" $1 "* ]]; }

for tool in taskset python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if ! skip janus; then command -v janus >/dev/null || { echo "missing janus (apt-get install -y janus)" >&2; exit 1; }; fi

cargo build --release -q -p convene -p convene-loadtest
if [ -z "${BENCH_NETNS:-}" ]; then
    exec unshare -n env BENCH_NETNS=1 "$0" "$@"
fi
ip link set lo up
ip link add bench0 type veth peer name bench1
ip addr add 10.99.0.1/24 dev bench0
ip link set bench0 up
ip link set bench1 up
CONVENE=${CONVENE:-$CARGO_TARGET_DIR/release/convene}
LOADTEST="$CARGO_TARGET_DIR/release/convene-loadtest"
WORK=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

wait_http() {
    for _ in $(seq 200); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2; return 1
}

stop_server() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }

start_convene() {
    rm -rf "$WORK/convene"
    taskset -c "$SERVER_CORE" "$CONVENE" serve --http-addr "127.0.0.1:$HTTP_PORT" --data-dir "$WORK/convene" \
        --jwt-secret "$SECRET" --media-bind-ip 127.0.0.1 --advertise-ip 127.0.0.1 --media-udp-port "$MEDIA_PORT" \
        --media-tcp=false --media-workers 1 --turn=false >"$WORK/convene.log" 2>&1 &
    SERVER=$!
    wait_http "http://127.0.0.1:$HTTP_PORT/healthz"
}

# A private Janus config: HTTP transport on 127.0.0.1 only, videoroom the only plugin, ICE on
# the namespace's veth address only.
start_janus() {
    local conf="$WORK/janus" lib=/usr/lib/x86_64-linux-gnu/janus
    rm -rf "$conf"; mkdir -p "$conf"
    local plugins transports
    plugins=$(cd "$lib/plugins" && ls -- *.so | grep -v videoroom | paste -sd, -)
    transports=$(cd "$lib/transports" && ls -- *.so | grep -v http | paste -sd, -)
    cat >"$conf/janus.jcfg" <<EOF
general: {
    configs_folder = "$conf"
    plugins_folder = "$lib/plugins"
    transports_folder = "$lib/transports"
    events_folder = "$lib/events"
    loggers_folder = "$lib/loggers"
    debug_level = 2
}
media: { rtp_port_range = "40000-49000" ipv6 = false }
nat: { ice_enforce_list = "bench0" ignore_mdns = true }
plugins: { disable = "$plugins" }
transports: { disable = "$transports" }
loggers: { disable = "libjanus_jsonlog.so" }
events: { broadcast = false }
EOF
    cat >"$conf/janus.transport.http.jcfg" <<EOF
general: { json = "plain" base_path = "/janus" http = true port = $JANUS_PORT ip = "127.0.0.1" https = false }
admin: { admin_http = false admin_https = false }
EOF
    echo 'general: { }' >"$conf/janus.plugin.videoroom.jcfg"
    taskset -c "$SERVER_CORE" janus -F "$conf" -C "$conf/janus.jcfg" >"$WORK/janus.log" 2>&1 &
    SERVER=$!
    wait_http "http://127.0.0.1:$JANUS_PORT/janus/info"
}

# UDP datagrams the namespace's kernel dropped for full receive or send buffers (any socket:
# server or generator), printed after each sfu run to tell server loss from a starved generator.
udp_counter() { awk -v f="$1" '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == f) c = i; h = 1 } else print $c }' /proc/net/snmp; }
udp_drops() { echo "$(udp_counter RcvbufErrors) $(udp_counter SndbufErrors)"; }
print_drops() {
    read -r r0 s0 <<<"$1"; read -r r1 s1 <<<"$(udp_drops)"
    echo "  UDP drops in the namespace: $((r1 - r0)) receive-buffer, $((s1 - s0)) send-buffer"
}

loadtest() {
    taskset -c "$LOAD_CORE" "$LOADTEST" --url "http://127.0.0.1:$HTTP_PORT" \
        --janus-url "http://127.0.0.1:$JANUS_PORT/janus" --jwt-secret "$SECRET" --server-pid "$SERVER" "$@"
}

echo "== $(date -u '+%F %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
SFU=(sfu --rooms "$ROOMS" --publishers "$PUBLISHERS" --subscribers "$SUBSCRIBERS" --duration "$DURATION")
echo "== sfu: ${SFU[*]}"
for round in $(seq "$ROUNDS"); do
    start_convene
    drops=$(udp_drops)
    loadtest --target convene --json "$OUT/sfu-convene-$round.json" "${SFU[@]}"
    print_drops "$drops"
    echo "  convene's own counters: $(python3 -c "import urllib.request,sys; print(' '.join(l for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith('convene_media_') and ('packets' in l or 'keyframe' in l)))" "http://127.0.0.1:$HTTP_PORT/metrics")"
    stop_server
    if ! skip janus; then
        start_janus
        drops=$(udp_drops)
        loadtest --target janus --client-ip 10.99.0.1 --json "$OUT/sfu-janus-$round.json" "${SFU[@]}"
        print_drops "$drops"
        stop_server
    fi
done
python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(t):
    runs = []
    for r in range(1, rounds + 1):
        try:
            runs.append(json.load(open(f"{out}/sfu-{t}-{r}.json")))
        except FileNotFoundError:
            pass
    return runs
rows = {}
print(f"{'target':8} {'delivered':>10} {'expected':>10} {'loss %':>7} {'pkt/s':>8} {'CPU s':>6} {'CPU µs/pkt':>10} {'delay p50/p99 ms':>17} {'KiB/sub':>8} {'KiB/track':>9}")
for t in ("convene", "janus"):
    runs = load(t)
    if not runs:
        continue
    d = sum(r["delivered_packets"] for r in runs); e = sum(r["expected_packets"] for r in runs)
    cpu = sum(r["server_cpu_s"] or 0 for r in runs)
    rows[t] = cpu * 1e6 / d if d else float("nan")
    for r in runs:
        print(f"{t:8} {r['delivered_packets']:>10} {r['expected_packets']:>10} {r['loss_percent']:>7.3f} "
              f"{r['forwarded_packets_per_s']:>8.0f} {r['server_cpu_s'] or 0:>6.2f} "
              f"{r['server_cpu_us_per_packet'] or 0:>10.2f} {r['delay_ms']['p50']:>8.2f}/{r['delay_ms']['p99']:<8.2f} "
              f"{r['rss_kib_per_subscriber'] or 0:>8.0f} {r['rss_kib_per_subscribed_track'] or 0:>9.0f}")
if "convene" in rows and "janus" in rows:
    print(f"CPU-µs per forwarded packet: convene {rows['convene']:.2f}, janus {rows['janus']:.2f}, "
          f"ratio {rows['convene'] / rows['janus']:.2f} (target ≤ 0.66)")
EOF

# Each session scenario on a fresh server, so memory figures start from the same baseline.
if ! skip sessions; then
    start_convene; loadtest --json "$OUT/signaling.json" signaling --sessions "$SESSIONS"; stop_server
    start_convene; loadtest --json "$OUT/chat.json" chat --sockets "$CHAT_SOCKETS" --messages 20; stop_server
    start_convene; loadtest --json "$OUT/rest.json" rest --clients "$REST_CLIENTS" --duration 10; stop_server
    start_convene; loadtest --json "$OUT/join-storm.json" join-storm --max-rate "$STORM_MAX"; stop_server
fi

if ! skip turn; then
    echo "== turn (turn-server/bench.sh)"
    ROUNDS=1 SERVER_CORE=$SERVER_CORE LOAD_CORE=$LOAD_CORE turn-server/bench.sh
fi
