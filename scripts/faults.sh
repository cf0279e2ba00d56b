#!/usr/bin/env bash
# Kuota's fault suite (issue 10): private MariaDB, Redis and kuota processes frozen (SIGSTOP),
# killed and restarted under a trickle of registrations; see api/tests/api/faults/mod.rs.
#
#   scripts/faults.sh          the full suite: 20 s outages, 200 registrations/s, 3 seeds each
#   scripts/faults.sh quick    the quick variants (the ones `cargo test` runs)
#
# KUOTA_FAULTS_SEED=<n> replays one seed. Needs mariadbd, mariadb-install-db and redis-server
# installed (no running server: every one is private, on a free 127.0.0.1 port). Prints every
# scenario's output, then its "fault-figures" lines (what registrants saw, for
# docs/operations.md "When things fail"); exits non-zero when a scenario missed a goal.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case ${1:-full} in
  full) export KUOTA_FAULTS_FULL=1 ;;
  quick) unset KUOTA_FAULTS_FULL ;;
  *) echo "usage: $0 [full|quick]" >&2; exit 2 ;;
esac

log=$(mktemp "${TMPDIR:-/tmp}/kuota-faults.XXXXXX")
trap 'rm -f -- "$log"' EXIT
rc=0
cargo test -p kuota-api --test api faults -- --test-threads=1 --nocapture 2>&1 | tee "$log" || rc=$?
echo
echo "== figures (commit $(git rev-parse --short HEAD)) =="
grep '^fault-figures' "$log" || echo "(no figures: the suite did not get that far)"
exit "$rc"
