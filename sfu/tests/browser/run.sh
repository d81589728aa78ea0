#!/usr/bin/env bash
# Three headless Chromium pages meet through the SFU, inside a fresh network namespace that has
# only a loopback interface, so no media can touch any other address. Needs root (unshare -n),
# /usr/bin/chromium and node; installs playwright-core here on first use.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/playwright-core ] || npm install --no-save --silent playwright-core >/dev/null
target="${CARGO_TARGET_DIR:-../../../target}"
cargo build -q -p convene-sfu --example browser_room
exec unshare -n bash -c "
  ip link set lo up
  '$target/debug/examples/browser_room' 127.0.0.1:8090 > /tmp/convene-browser-room.log 2>&1 &
  server=\$!
  for _ in \$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8090) 2>/dev/null && break; sleep 0.1; done
  status=0; node run.js || status=\$?
  kill \$server; exit \$status
"
