#!/usr/bin/env bash
# Impaired networks between Chromium participants and the real `convene serve`, inside a fresh
# network namespace with only a loopback interface (nothing can reach any other address): the
# server advertises 127.0.0.2, where the scripts relay (relay.js) to its socket on 127.0.0.1.
# impairment.js drops 10 % of the datagrams and checks that video keeps decoding, NACKs and
# retransmissions are counted and the lossy connection is rated below excellent; bandwidth.js
# caps what the SFU sends one viewer at 250 kbit/s and checks that he drops to the lowest
# simulcast layer with audio flowing, stays there without flapping, and gets his layer back once
# the cap is lifted. One media worker, so every room is on the one UDP port the relay listens on.
# Needs root (unshare -n), /usr/bin/chromium and node; installs playwright-core here on first use.
# IMPAIRMENT_TESTS="bandwidth.js" runs just one.
#
#   web/tests/impairment.sh [path/to/convene]   (default: $CARGO_TARGET_DIR or target, debug build)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/convene}"
[ -x "$bin" ] || { echo "no convene binary at $bin: build it with 'cargo build -p convene'" >&2; exit 1; }
cd "$here"
[ -d node_modules/playwright-core ] || npm install --no-audit --no-fund --no-save --silent >/dev/null
data="$(mktemp -d)"
log="$data/convene.log"
trap 'rm -rf "$data"' EXIT
# IMPAIRMENT_TESTS picks scripts (default: both); each prints its own "N passed, M failed".
scripts="${IMPAIRMENT_TESTS:-impairment.js bandwidth.js}"
unshare -n bash -c "
  ip link set lo up
  '$bin' serve --http-addr 127.0.0.1:8093 --data-dir '$data' --media-bind-ip 127.0.0.1 \
    --advertise-ip 127.0.0.2 --media-udp-port 7990 --media-workers 1 --media-tcp=false --turn-addr 127.0.0.1:0 \
    > '$log' 2>&1 &
  server=\$!
  for _ in \$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8093) 2>/dev/null && break; sleep 0.1; done
  status=0
  for script in $scripts; do
    echo \"== \$script\"
    BASE_URL=http://127.0.0.1:8093 MEDIA_PORT=7990 node \$script || status=\$?
  done
  kill \$server; wait \$server 2>/dev/null || true
  [ \$status -eq 0 ] || tail -n 30 '$log'
  exit \$status
"
