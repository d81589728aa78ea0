#!/usr/bin/env bash
# Side-by-side load benchmarks: the same str0m client peers against Convene, Janus 1.1.2 and
# str0m's `chat` example in one run (a fixed load, then a search for each one's maximum load and a
# window at 80 % of it), a ≥ 500-subscriber run against Convene, then Convene's session
# scenarios, then the TURN comparison with coturn.
#
# Every server is pinned to SERVER_CORE, the load generator (one thread) to LOAD_CORE. The run
# happens in a network namespace of its own (unshare -n, needs root) holding only lo and a veth
# pair: Convene is measured on 127.0.0.1; Janus (libnice never offers loopback candidates) on the
# veth address 10.99.0.1, which the kernel delivers locally like 127.0.0.1; str0m's chat example
# picks the first non-loopback address itself, the same 10.99.0.1. Nothing leaves the
# namespace. The chat example is built from the str0m crate's own source (the registry copy
# cargo already has, copied to a temp dir; its test-only dev-dependencies and unused crypto
# back-ends are dropped from the manifest) and never committed. CPU and memory of each server come from /proc/PID (utime+stime, VmRSS).
# Reports land in OUT (JSON, one file per run) and a summary is printed.
#
# Usage: loadtest/bench.sh
#   env: ROUNDS=1 ROOMS=1 PUBLISHERS=2 SUBSCRIBERS=50 DURATION=10   (sfu, fixed load)
#        SEARCH_PUBLISHERS=1 SEARCH_START=20 SEARCH_FACTOR=1.5 SEARCH_MAX=600 STEP_DURATION=5
#          (sfu --search: steps from SEARCH_START subscribers up to SEARCH_MAX, STEP_DURATION s
#          each; then DURATION s at 80 % of the maximum; about 3-4 minutes per target)
#        SEARCH_MAX_P99=250   (a step whose p99 one-way delay exceeds this many ms saturates: a
#          delay blow-up, not the pacing tail of keyframe bursts)
#        BIG_ROOMS=10 BIG_SUBSCRIBERS=50   (the ≥ 500-subscriber run: rooms × 1 publisher × subscribers)
#        BIG_MEDIA=""   (extra sfu flags for that run, e.g. "--no-video": 500 audio subscriptions
#          fit one server core where 500 × (audio + 1 Mbit/s video) do not)
#        SESSIONS=1000 CHAT_SOCKETS=1000 REST_CLIENTS=32 STORM_MAX=100
#        SKIP=""  words from: janus chat search big sessions turn (e.g. SKIP="turn sessions")
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
SEARCH_PUBLISHERS=${SEARCH_PUBLISHERS:-1}
SEARCH_START=${SEARCH_START:-20}
SEARCH_FACTOR=${SEARCH_FACTOR:-1.5}
SEARCH_MAX=${SEARCH_MAX:-600}
STEP_DURATION=${STEP_DURATION:-5}
SEARCH_MAX_P99=${SEARCH_MAX_P99:-250}
BIG_ROOMS=${BIG_ROOMS:-10}
BIG_SUBSCRIBERS=${BIG_SUBSCRIBERS:-50}
BIG_MEDIA=${BIG_MEDIA:-}
SKIP=${SKIP:-}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
SECRET=bench-jwt-secret-not-for-production
HTTP_PORT=18080
MEDIA_PORT=17882
JANUS_PORT=18088
CHAT_PORT=3000 # fixed in str0m's example
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
CARGO_TARGET_DIR=$(realpath -m "$CARGO_TARGET_DIR")

cd "$(dirname "$0")/.."
OUT=${OUT:-loadtest/results}
mkdir -p "$OUT"
skip() { [[ " $SKIP " == *" $1 "* ]]; }

for tool in taskset python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if ! skip janus; then command -v janus >/dev/null || { echo "missing janus (apt-get install -y janus)" >&2; exit 1; }; fi

CHAT="$CARGO_TARGET_DIR/str0m-chat/release/examples/chat"
if [ -z "${BENCH_NETNS:-}" ]; then
    cargo build --release -q -p convene -p convene-loadtest
    if ! skip chat && [ ! -x "$CHAT" ]; then
        # str0m's chat example from the crate source cargo fetched for the workspace (built
        # once: remove $CHAT to rebuild).
        src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/str0m-"$(cargo pkgid -p str0m | sed 's/.*@//')" | head -1)
        build=$(mktemp -d)
        cp -r "$src/." "$build"
        python3 loadtest/str0m-chat-manifest.py "$build/Cargo.toml"
        cp Cargo.lock "$build/" # the workspace's versions: already downloaded
        (cd "$build" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/str0m-chat" cargo build --release -q --example chat)
        rm -rf "$build"
    fi
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
        # (https: the chat example's self-signed certificate)
        if python3 -c "import ssl,urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1, context=ssl._create_unverified_context())" "$1" 2>/dev/null; then
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

start_chat() {
    taskset -c "$SERVER_CORE" "$CHAT" >"$WORK/chat.log" 2>&1 &
    SERVER=$!
    wait_http "https://127.0.0.1:$CHAT_PORT/"
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
        --janus-url "http://127.0.0.1:$JANUS_PORT/janus" --chat-url "https://127.0.0.1:$CHAT_PORT/" \
        --jwt-secret "$SECRET" --server-pid "$SERVER" "$@"
}

# A target's server, and its generator flags (Janus and the chat example offer only the veth
# address).
start_target() {
    case "$1" in
        convene) start_convene ;;
        janus) start_janus ;;
        str0m-chat) start_chat ;;
    esac
}
target_args() {
    case "$1" in
        convene) echo "--target convene" ;;
        *) echo "--target $1 --client-ip 10.99.0.1" ;;
    esac
}
TARGETS=(convene)
skip janus || TARGETS+=(janus)
skip chat || TARGETS+=(str0m-chat)

echo "== $(date -u '+%F %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
SFU=(sfu --rooms "$ROOMS" --publishers "$PUBLISHERS" --subscribers "$SUBSCRIBERS" --duration "$DURATION")
echo "== sfu: ${SFU[*]}"
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        start_target "$t"
        drops=$(udp_drops)
        # shellcheck disable=SC2046
        loadtest $(target_args "$t") --json "$OUT/sfu-$t-$round.json" "${SFU[@]}"
        print_drops "$drops"
        if [ "$t" = convene ]; then
            echo "  convene's own counters: $(python3 -c "import urllib.request,sys; print(' '.join(l for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith('convene_media_') and ('packets' in l or 'keyframe' in l)))" "http://127.0.0.1:$HTTP_PORT/metrics")"
        fi
        stop_server
    done
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
print(f"{'target':10} {'delivered':>10} {'expected':>10} {'unit':>7} {'loss %':>7} {'pkt/s':>8} {'CPU s':>6} {'CPU µs/pkt':>10} {'delay p50/p99 ms':>17} {'KiB/sub':>8} {'KiB/track':>9} {'gen %':>5}")
for t in ("convene", "janus", "str0m-chat"):
    runs = load(t)
    if not runs:
        continue
    d = sum(r["forwarded_packets"] for r in runs)
    cpu = sum(r["server_cpu_s"] or 0 for r in runs)
    rows[t] = cpu * 1e6 / d if d else float("nan")
    for r in runs:
        print(f"{t:10} {r['delivered_packets']:>10} {r['expected_packets']:>10} {r['unit']:>7} {r['loss_percent']:>7.3f} "
              f"{r['forwarded_packets_per_s']:>8.0f} {r['server_cpu_s'] or 0:>6.2f} "
              f"{r['server_cpu_us_per_packet'] or 0:>10.2f} {r['delay_ms']['p50']:>8.2f}/{r['delay_ms']['p99']:<8.2f} "
              f"{r['rss_kib_per_subscriber'] or 0:>8.0f} {r['rss_kib_per_subscribed_track'] or 0:>9.0f} "
              f"{r['generator_cpu_percent']:>5.0f}{' GENERATOR-BOUND' if r['generator_bound'] else ''}")
if "convene" in rows:
    print("CPU-µs per forwarded packet: " + ", ".join(f"{t} {v:.2f}" for t, v in rows.items()))
    for t in ("janus", "str0m-chat"):
        if t in rows:
            print(f"  convene / {t}: {rows['convene'] / rows[t]:.2f}" + (" (target ≤ 0.66)" if t == "janus" else ""))
EOF

# Each target's maximum load and its loss and delay at 80 % of it (sfu --search).
if ! skip search; then
    echo "== sfu --search: $SEARCH_PUBLISHERS publisher(s), subscribers from $SEARCH_START ×$SEARCH_FACTOR up to $SEARCH_MAX, ${STEP_DURATION} s steps, ${DURATION} s at 80 %; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    for t in "${TARGETS[@]}"; do
        # The chat example has no leave: it drops a step's clients when their ICE times out.
        settle=3; [ "$t" = str0m-chat ] && settle=10
        start_target "$t"
        # shellcheck disable=SC2046
        loadtest $(target_args "$t") --json "$OUT/search-$t.json" sfu --search --publishers "$SEARCH_PUBLISHERS" \
            --subscribers "$SEARCH_START" --factor "$SEARCH_FACTOR" --max-subscribers "$SEARCH_MAX" \
            --step-duration "$STEP_DURATION" --max-p99-ms "$SEARCH_MAX_P99" --settle "$settle" --duration "$DURATION" 2>"$WORK/search-$t.log" \
            || { cat "$WORK/search-$t.log" >&2; exit 1; }
        stop_server
        echo "  $t done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    done
    python3 - "$OUT" "${TARGETS[@]}" <<'EOF'
import json, sys
out, targets = sys.argv[1], sys.argv[2:]
print(f"{'target':10} {'stopped by':>15} {'max pkt/s':>9} {'at subs':>7} | 80 %: {'subs':>5} {'pkt/s':>7} {'loss %':>7} {'p50/p99 ms':>13} {'CPU µs/pkt':>10} {'server %':>8} {'gen %':>5} target")
for t in targets:
    r = json.load(open(f"{out}/search-{t}.json")); a = r["at_80_percent"]
    print(f"{t:10} {r['stopped_by']:>15} {r['max_forwarded_packets_per_s']:>9.0f} {r['max_at_subscribers_per_room']:>7} | "
          f"{a['subscribers_per_room']:>11} {a['forwarded_packets_per_s']:>7.0f} {a['loss_percent']:>7.3f} "
          f"{a['delay_ms']['p50']:>6.2f}/{a['delay_ms']['p99']:<6.2f} {a['server_cpu_us_per_packet'] or 0:>10.2f} "
          f"{a['server_cpu_percent'] or 0:>8.0f} {a['generator_cpu_percent']:>5.0f} "
          f"{'met' if r['target_met'] else 'not met'}{' (generator-bound: max is a lower bound)' if r['generator_bound'] else ''}")
    for s in r["steps"]:
        print(f"    step {s['subscribers_per_room']:>4} subs: {s['forwarded_packets_per_s']:>7.0f} pkt/s, loss {s['loss_percent']:.3f} %, "
              f"p99 {s['delay_ms']['p99']:.1f} ms, server {s['server_cpu_percent'] or 0:.0f} %, generator {s['generator_cpu_percent']:.0f} %")
EOF
fi

# ≥ 500 subscriber peers driven by the one generator thread.
if ! skip big; then
    echo "== sfu: $BIG_ROOMS rooms × 1 publisher × $BIG_SUBSCRIBERS subscribers $BIG_MEDIA against convene; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    start_convene
    drops=$(udp_drops)
    loadtest --json "$OUT/sfu-big-convene.json" sfu --rooms "$BIG_ROOMS" --publishers 1 \
        --subscribers "$BIG_SUBSCRIBERS" --duration "$DURATION" $BIG_MEDIA
    print_drops "$drops"
    # An overloaded server must still take the generator's leaves and stop when told: its peer
    # connections back to none, then SIGTERM's graceful stop (waited for up to 30 s).
    python3 - "http://127.0.0.1:$HTTP_PORT/metrics" <<'EOF'
import re, sys, time, urllib.request
t0, peers, late = time.time(), None, None
while time.time() - t0 < 60:
    try:
        text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
    except OSError:  # the media worker does not answer
        continue
    peers = int(re.search(r"^convene_media_peer_connections (\d+)", text, re.M).group(1))
    late = re.search(r"^convene_media_worker_late_timeouts_total (\d+)", text, re.M)
    late = late.group(1) if late else "?"  # (an older build, CONVENE=)
    if peers == 0:
        break
    time.sleep(0.5)
print(f"  after the generator left: {peers} peer connections ({time.time() - t0:.1f} s); "
      f"timeouts handled 20 ms late or more: {late}")
EOF
    t0=$(date +%s.%N)
    kill "$SERVER"
    for _ in $(seq 300); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVER" 2>/dev/null; then
        echo "  SIGTERM: still running after 30 s (killed)"; kill -9 "$SERVER"
    else
        echo "  SIGTERM: stopped in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
    fi
    wait "$SERVER" 2>/dev/null || true; SERVER=
fi

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
