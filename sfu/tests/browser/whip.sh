#!/usr/bin/env bash
# WHIP from one headless Chromium page, WHEP into another, through the real `convene serve`,
# inside a fresh network namespace with only a loopback interface (no media can touch any other
# address). Needs root (unshare -n), /usr/bin/chromium and node; installs playwright-core here
# on first use. Exit status 0 when the viewer decoded the publisher's video.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/playwright-core ] || npm install --no-save --silent playwright-core >/dev/null
target="${CARGO_TARGET_DIR:-../../../target}"
cargo build -q -p convene --bin convene
data="$(mktemp -d)"
log="${WHIP_LOG:-$data/convene.log}"
trap 'rm -rf "$data"' EXIT
unshare -n bash -c "
  ip link set lo up
  '$target/debug/convene' serve --http-addr 127.0.0.1:8091 --data-dir '$data' \
    --media-bind-ip 127.0.0.1 --advertise-ip 127.0.0.1 --media-udp-port 0 --media-tcp=false \
    > '$log' 2>&1 &
  server=\$!
  for _ in \$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8091) 2>/dev/null && break; sleep 0.1; done
  status=0; URL=http://127.0.0.1:8091 node whip.js || status=\$?
  kill \$server; wait \$server 2>/dev/null || true
  [ \$status -eq 0 ] || tail -n 30 '$log'
  exit \$status
"
