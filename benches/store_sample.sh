#!/usr/bin/env bash
# Samples a MariaDB server and the host every 0.1 s until killed, one line per sample: Unix
# time, the host's steal, iowait and idle jiffies (/proc/stat), and the server's checkpoint age,
# pages flushed, LSN and fsyncs. Run it beside `e2e` and set its lines beside the open loop's
# slowest slots (docs/benchmarks.md, "Where the open loop's stalls come from").
#
#   benches/store_sample.sh <port> <out-file> &  ...  kill %1
set -u
port=$1
out=$2
while true; do
  status=$(mysql -uroot -h127.0.0.1 -P"$port" -N -B -e "SELECT VARIABLE_NAME, VARIABLE_VALUE \
    FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ('INNODB_CHECKPOINT_AGE', \
    'INNODB_BUFFER_POOL_PAGES_FLUSHED', 'INNODB_LSN_CURRENT', 'INNODB_DATA_FSYNCS')" 2>/dev/null |
    awk '{printf "%s=%s ", $1, $2}')
  read -r _ _ _ _ idle iowait _ _ steal _ < /proc/stat
  echo "$(date +%s.%N | cut -c1-14) steal=$steal iowait=$iowait idle=$idle $status" >> "$out"
  sleep 0.1
done
