#!/usr/bin/env bash
# End-to-end tests of the web client: headless Chromium pages (fake camera, microphone and
# screen) hold a meeting through a real `convene serve` on 127.0.0.1 (meeting.js), then a host
# records one, checked with ffprobe, across kill -9 and a graceful stop (recording.js),
# simulcast layer selection and dynacast are exercised (simulcast.js), and two more show who
# speaks and how their connections are (quality.js).
#
#   web/tests/run.sh [path/to/convene]     (default: $CARGO_TARGET_DIR or target, debug build)
#
# Needs node + npm, Debian's /usr/bin/chromium and ffprobe: as root it apt-get installs chromium
# and ffmpeg when missing; it installs playwright-core here on first use (never a browser of its own). The last
# line is "N passed, M failed"; the exit status is non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/convene}"
fail() { echo "$1" >&2; echo "0 passed, 1 failed"; exit 1; }
[ -x "$bin" ] || fail "no convene binary at $bin: build it with 'cargo build -p convene' or pass its path"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ] && [ "$(id -u)" = 0 ]; then
  echo "== installing chromium" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || fail "no Chromium: apt-get install -y chromium"
if ! command -v ffprobe >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== installing ffmpeg (ffprobe checks recordings)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
fi
command -v ffprobe >/dev/null || fail "no ffprobe: apt-get install -y ffmpeg"
command -v npm >/dev/null || fail "no node/npm: apt-get install -y nodejs npm"
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
  npm install --no-audit --no-fund --no-save --silent >/dev/null || fail "npm install playwright-core failed"
fi

data="$(mktemp -d)"
log="$(mktemp -t convene-web-e2e.XXXXXX.log)" # kept when a test fails
server=
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

"$bin" serve --data-dir "$data" --http-addr 127.0.0.1:0 --log-format json \
  --media-udp-port 0 --media-tcp-port 0 --media-bind-ip 127.0.0.1 --turn-addr 127.0.0.1:0 --turn-allow-peers 127.0.0.1/32 >"$log" 2>&1 &
server=$!
addr=
for _ in $(seq 100); do
  addr="$(sed -n 's/.*"message":"listening".*"addr":"\([0-9.:]*\)".*/\1/p' "$log" | head -n 1)"
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  cat "$log" >&2
  fail "convene did not start"
fi

status=0
# WEB_TESTS picks scripts (default: all); each prints its own "N passed, M failed".
tests="${WEB_TESTS:-meeting.js simulcast.js quality.js recording.js}"
for script in $tests; do
  [ "$script" = recording.js ] && continue
  echo "== $script"
  BASE_URL="http://$addr" SERVER_LOG="$log" node "$script" || status=$?
done
[ "$status" -eq 0 ] && rm -f "$log"
# Recording starts, kills and restarts servers of its own (recording.js).
case " $tests " in
  *" recording.js "*) echo "== recording.js"; CONVENE_BIN="$bin" node recording.js || status=$? ;;
esac
exit "$status"
