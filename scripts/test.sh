#!/usr/bin/env bash
# The whole test suite: lint, unit and integration tests on SQLite, then the API suite again on
# a private PostgreSQL server this script starts (and stops). Installs missing Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests (SQLite)"
cargo test --workspace --locked

echo "== dashboard charts (Node)"
(cd web/dashboard && node --test)

echo "== browser: TURN relay (Chromium, relay-only, UDP and TCP)"
(cd turn-server/tests/browser && npm ci --no-audit --no-fund --silent >/dev/null)
cargo test --locked -p convene-turn --test browser_relay -- --ignored

echo "== browser: the web client end to end (meeting, simulcast: three Chromium pages each; recording checked with ffprobe; speakers and quality with two)"
cargo build --locked -p convene
web/tests/run.sh "${CARGO_TARGET_DIR:-$PWD/target}/debug/convene"

echo "== browser: WHIP publisher to WHEP viewer (Chromium, own network namespace)"
sfu/tests/browser/whip.sh

echo "== browser: 10 % packet loss and a 250 kbit/s cap between Chromium participants and the SFU (own network namespace)"
web/tests/impairment.sh "${CARGO_TARGET_DIR:-$PWD/target}/debug/convene"

echo "== API tests (PostgreSQL)"
pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -n1)")
pg_dir=$(mktemp -d /tmp/convene-pg.XXXXXX)
pg_port=${CONVENE_TEST_PG_PORT:-55432}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w start \
  -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null
trap 'as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pg_dir"' EXIT
CONVENE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port" cargo test --locked -p convene --test api --test cli
