#!/usr/bin/env bash
# Instructions per admission of a release `kuota`, counted by callgrind (docs/benchmarks.md,
# "Where an admission's instructions go"). Repeatable on a loaded machine, unlike seconds.
#
#   scripts/admission-instructions.sh BIN OUT [COUNT]
#   SEATS=100 scripts/admission-instructions.sh BIN OUT    # sold-out answers instead: the warm-up sells out
#   SETTINGS="KUOTA_ACTOR_THREADS=0" scripts/admission-instructions.sh BIN OUT    # extra settings
#
# A database of its own (dropped after), rate limits off, every other setting at its default but
# the deadlines (callgrind runs the server about 50 times slower). After 300 registrations to
# warm up and 3 s for the outbox to deliver them, instrumentation is on for COUNT registrations
# (default 3,000) over 64 kept-alive connections and 3 s more, so that the window holds the
# outbox's deliveries of its own registrations. One dump per thread in OUT; the summary last.
set -euo pipefail
BIN=$(realpath "$1"); OUT=$2; COUNT=${3:-3000}; WARM=300; CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-18431}; DB=${DB:-kuota_cg_$$}; SEATS=${SEATS:-1000000}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"; cd "$OUT"
mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
env -i PATH="$PATH" HOME="$HOME" \
  KUOTA_LISTEN=127.0.0.1:$PORT KUOTA_DATABASE_URL=mysql://root@127.0.0.1:3306/$DB \
  KUOTA_ADMIN_TOKEN=cg-admin KUOTA_RATE_LIMIT_IP_PER_SECOND=0 KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE=0 \
  KUOTA_REQUEST_TIMEOUT_MS=120000 KUOTA_STORE_TIMEOUT_MS=120000 KUOTA_STORE_STALL_MS=120000 \
  RUST_LOG=warn ${SETTINGS:-} valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no "$BIN" > server.log 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB"' EXIT
for _ in $(seq 1 600); do curl -fs http://127.0.0.1:$PORT/healthz >/dev/null 2>&1 && break; sleep 0.5; done
python3 "$HERE/admission_load.py" $PORT create race $SEATS cg-admin > /dev/null
python3 "$HERE/admission_load.py" $PORT send race 1 $WARM $CONNECTIONS > /dev/null
sleep 3
callgrind_control -i on $SERVER > /dev/null
python3 "$HERE/admission_load.py" $PORT send race $((WARM + 1)) $COUNT $CONNECTIONS > statuses
sleep 3
callgrind_control -i off $SERVER > /dev/null
callgrind_control -d $SERVER > /dev/null
curl -s http://127.0.0.1:$PORT/metrics | grep -E "^kuota_write_behind_batch_size_(sum|count)" > batches || true
kill -TERM $SERVER; wait $SERVER || true
trap 'mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB"' EXIT
echo "answers: $(cat statuses); write-behind batches (warm-up included): $(tr '\n' ' ' < batches)"
python3 "$HERE/cgsum.py" "$COUNT" callgrind.out.*.1-*
