#!/usr/bin/env bash
# Checks the server against its own OpenAPI document with schemathesis (PyPI): every route but
# the two event streams (which never end) gets generated requests, valid and invalid, and every
# answer is checked against the document (no 5xx, documented statuses, content types, headers
# and bodies, valid requests accepted, invalid ones refused). The exceptions the document cannot
# state are configured in scripts/schemathesis.toml, each with its reason.
#
# 1. Builds the server (`cargo build --bin kuota`, into CARGO_TARGET_DIR if set), unless
#    KUOTA_BIN names a built one (scripts/test.sh hands it the one `cargo test` built: a plain
#    `cargo build` would build the workspace again without the tests' features).
# 2. Installs schemathesis into a virtual environment kept between runs
#    (KUOTA_SCHEMATHESIS_VENV, default ${TMPDIR:-/tmp}/kuota-schemathesis-VERSION).
# 3. Starts the server on a free 127.0.0.1 port over a throw-away embedded SQLite store, creates
#    one event, runs schemathesis with a fixed seed, stops the server and deletes its data.
#
# Environment:
#   KUOTA_SCHEMATHESIS_VERSION       the schemathesis release (default below)
#   KUOTA_SCHEMATHESIS_VENV          where its virtual environment lives
#   KUOTA_SCHEMATHESIS_MAX_EXAMPLES  generated cases per operation and phase (default 30)
#   KUOTA_BIN                        the server binary to check (default: build it)
# Extra arguments go to `schemathesis run` (e.g. --seed 7, --max-examples 200).
set -euo pipefail

VERSION=${KUOTA_SCHEMATHESIS_VERSION:-4.32.5}
VENV=${KUOTA_SCHEMATHESIS_VENV:-${TMPDIR:-/tmp}/kuota-schemathesis-$VERSION}
MAX_EXAMPLES=${KUOTA_SCHEMATHESIS_MAX_EXAMPLES:-30}
ADMIN_TOKEN=schemathesis-admin-token

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=""
SERVER_PID=""

log() { printf '[schemathesis.sh] %s\n' "$*" >&2; }

cleanup() {
  local rc=$?
  trap - EXIT
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n $WORK ]]; then
    if ((rc != 0)) && [[ -s $WORK/server.log ]]; then
      log "the server's log:"
      tail -n 20 "$WORK/server.log" >&2 || true
    fi
    rm -rf -- "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cd "$ROOT"
if [[ -n ${KUOTA_BIN:-} ]]; then
  SERVER_BIN=$KUOTA_BIN
else
  log "building the server"
  cargo build --quiet --bin kuota
  SERVER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/kuota"
fi
[[ $SERVER_BIN == /* ]] || SERVER_BIN="$ROOT/$SERVER_BIN"
[[ -x $SERVER_BIN ]] || { log "no server binary at $SERVER_BIN"; exit 1; }

if [[ ! -x $VENV/bin/schemathesis ]]; then
  log "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kuota-schemathesis.XXXXXX")
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
# Rate limits off: the run sends hundreds of requests a second from one address, and a 429 would
# only hide what the request itself gets.
KUOTA_LISTEN="127.0.0.1:$PORT" \
  KUOTA_DATABASE_URL="sqlite://$WORK/kuota.db" \
  KUOTA_ADMIN_TOKEN="$ADMIN_TOKEN" \
  KUOTA_RATE_LIMIT_IP_PER_SECOND=0 \
  KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE=0 \
  "$SERVER_BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for ((i = 0; i < 150; i++)); do
  curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { log "the server exited during startup"; exit 1; }
  sleep 0.2
done
curl -fsS "$BASE/healthz" >/dev/null || { log "the server did not answer within 30 s"; exit 1; }

# One event, so that some generated requests find it (most generated ids find nothing: 404).
curl -fsS -o /dev/null -X POST "$BASE/v1/events" \
  -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
  -d '{"id":"city-race","name":"City Race","categories":[{"code":"10K","name":"10 km","capacity":1000000}]}'

log "running schemathesis $VERSION against $BASE"
# From the throw-away folder: schemathesis keeps a cache (.schemathesis/) where it runs.
cd "$WORK"
ADMIN_TOKEN=$ADMIN_TOKEN "$VENV/bin/schemathesis" --no-color \
  --config-file "$ROOT/scripts/schemathesis.toml" \
  run "$BASE/openapi.json" \
  --max-examples "$MAX_EXAMPLES" "$@"
