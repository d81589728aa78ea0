#!/usr/bin/env bash
# Relay throughput of convene-turn against coturn's turnserver, side by side in one run.
#
# The same turnutils_uclient load (REST credentials, ChannelData to a turnutils_peer echo)
# runs against each server; both servers are pinned to the same core (SERVER_CORE), the load
# generator and the peer to another (LOAD_CORE). Reported per run: messages sent and received,
# loss, server CPU seconds (user and system, from /proc/PID/stat) and relayed packets per
# CPU-second, where every message that came back counts as two relayed packets (client->peer
# and peer->client) and a lost message counts for nothing, wherever it was lost. Both servers relay on one thread: convene's UDP plane is one thread, and
# coturn gets `--relay-threads 1` (its default is one per CPU of the machine, not of the
# taskset; COTURN_THREADS overrides).
#
# Usage: turn-server/bench.sh            (env: ROUNDS=3 CLIENTS=50 MSGS=2000 LEN=170 INTERVAL=1)
# Needs: coturn (turnserver, turnutils_uclient, turnutils_peer), taskset (util-linux).
# Not a test: it only prints figures.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
MSGS=${MSGS:-2000}
LEN=${LEN:-170}
INTERVAL=${INTERVAL:-1}
COTURN_THREADS=${COTURN_THREADS:-1}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
SECRET=bench-secret
PORT=3790
PEER_PORT=3791
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

for tool in turnserver turnutils_uclient turnutils_peer taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y coturn util-linux)" >&2; exit 1; }
done

cd "$(dirname "$0")/.."
cargo build --release -q -p convene-turn --example relay
RELAY="$CARGO_TARGET_DIR/release/examples/relay"
TICK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

taskset -c "$LOAD_CORE" turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >/dev/null 2>&1 &
PIDS+=($!)

# utime and stime in clock ticks.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
secs() { awk -v t="$1" -v h="$TICK" 'BEGIN{printf "%.2f", t/h}'; }

# Waits until the server answers STUN on PORT.
wait_ready() {
    for _ in $(seq 100); do
        # stunclient does not give up on a lost request: bound it.
        if timeout 2 turnutils_stunclient -p "$PORT" 127.0.0.1 >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "server did not come up" >&2; return 1
}

start_server() {
    case "$1" in
        convene)
            taskset -c "$SERVER_CORE" "$RELAY" --listen "127.0.0.1:$PORT" --secret "$SECRET" \
                --allow-peers 127.0.0.1/32 --ports 49160-49400 --threads 1 --user-quota 100000 \
                2>"$WORK/convene.log" &
            ;;
        coturn)
            taskset -c "$SERVER_CORE" turnserver -n --no-cli --no-tls --no-dtls -L 127.0.0.1 -E 127.0.0.1 \
                --listening-port "$PORT" --use-auth-secret --static-auth-secret="$SECRET" -r convene \
                --allow-loopback-peers --min-port 49160 --max-port 49400 --relay-threads "$COTURN_THREADS" \
                --log-file stdout >"$WORK/coturn.log" 2>&1 &
            ;;
    esac
    SERVER=$!
    PIDS+=("$SERVER")
    wait_ready
}

LOAD=(-W "$SECRET" -u bench -e 127.0.0.1 -r "$PEER_PORT" -n "$MSGS" -m "$CLIENTS" -l "$LEN" -z "$INTERVAL" -c
      -p "$PORT" 127.0.0.1)
echo "load: turnutils_uclient ${LOAD[*]}"
printf '%-8s %5s %10s %9s %8s %7s %7s %7s %14s\n' server round sent recv lost user_s sys_s cpu_s pkts_per_cpu_s
declare -A TOTAL_PKTS TOTAL_TICKS TOTAL_SENT TOTAL_LOST
for round in $(seq "$ROUNDS"); do
    for server in ${SERVERS:-convene coturn}; do
        start_server "$server"
        read -r user_before sys_before < <(cpu_ticks "$SERVER")
        out=$(taskset -c "$LOAD_CORE" turnutils_uclient "${LOAD[@]}" 2>&1 || true)
        read -r user_after sys_after < <(cpu_ticks "$SERVER")
        kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
        sent=$(grep -o 'tot_send_msgs=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
        recv=$(grep -o 'tot_recv_msgs=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
        lost=$(grep -o 'Total lost packets [0-9]*' <<<"$out" | awk '{print $4}')
        user=$((user_after - user_before))
        sys=$((sys_after - sys_before))
        ticks=$((user + sys))
        pkts=$((2 * recv))
        TOTAL_PKTS[$server]=$(( ${TOTAL_PKTS[$server]:-0} + pkts ))
        TOTAL_TICKS[$server]=$(( ${TOTAL_TICKS[$server]:-0} + ticks ))
        TOTAL_SENT[$server]=$(( ${TOTAL_SENT[$server]:-0} + sent ))
        TOTAL_LOST[$server]=$(( ${TOTAL_LOST[$server]:-0} + ${lost:-0} ))
        printf '%-8s %5s %10s %9s %8s %7s %7s %7s %14s\n' "$server" "$round" "$sent" "$recv" "${lost:-?}" \
            "$(secs "$user")" "$(secs "$sys")" "$(secs "$ticks")" \
            "$(awk -v p="$pkts" -v t="$ticks" -v h="$TICK" 'BEGIN{ if (t>0) printf "%.0f", p/(t/h); else print "inf"}')"
    done
done
awk -v cp="${TOTAL_PKTS[convene]}" -v ct="${TOTAL_TICKS[convene]}" \
    -v tp="${TOTAL_PKTS[coturn]}" -v tt="${TOTAL_TICKS[coturn]}" -v h="$TICK" \
    -v cl="${TOTAL_LOST[convene]}" -v cs="${TOTAL_SENT[convene]}" \
    -v tl="${TOTAL_LOST[coturn]}" -v ts="${TOTAL_SENT[coturn]}" 'BEGIN {
    c = cp / (ct / h); t = tp / (tt / h);
    printf "relayed packets per CPU-second: convene %.0f, coturn %.0f, ratio %.2f\n", c, t, c / t
    printf "loss: convene %.2f %%, coturn %.2f %%\n", 100 * cl / cs, 100 * tl / ts }'
