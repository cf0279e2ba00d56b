#!/usr/bin/env python3
"""The live fault suite's restart scenario (`node_killed_and_restarted`, full profile) run once
per seed, and what each run's figures line says, beside how disturbed the machine was while it
ran: the spread of the live "p99 of the answers to the requests sent in the 2.5 s after
`/readyz` said 200" that docs/capacity-planning.md ("Calibration") compares the simulator with.

For each run: the seed, the start (UTC), the load average, the p50 / p99 / max of the answers
after ready and the time to recover after ready (the suite's `fault-figures` line), and the
machine's pressure stall information over the run (`/proc/pressure/cpu` and `io`: the share of
the run's wall time in which some task waited for a core, or for the disk, and in which every
task waited for the disk), which shows the runs the other tenants of the two cores disturbed
(the suite's MariaDB flushes its log at every commit, so a build writing to the disk stalls the
trickle's commits).

Usage: scripts/restart-p99-live.py TEST_BINARY FIRST_SEED RUNS [KEEP_DIR]
  KEEP_DIR: each run's whole output is kept there as <seed>.txt
  TEST_BINARY: the `api` integration test executable, as `cargo test -p kuota-api --test api
  --no-run` prints it (run this script under `nice -n -10` to measure Kuota, not the others)
"""
import os
import re
import statistics
import subprocess
import sys
import time

binary, first_seed, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keep = sys.argv[4] if len(sys.argv) > 4 else None
# One run of the scenario takes about half a minute; a run past this is stopped, not waited for.
RUN_SECONDS_MAX = 600
FIGURES = re.compile(
    r"^fault-figures \| node killed.*\| p50 (\d+) ms, p99 (\d+) ms, max (\d+) ms \| recovered (\d+) ms after")


def pressure():
    """(cpu some, io some, io full) stall totals in microseconds."""
    totals = []
    for resource, kind in (("cpu", "some"), ("io", "some"), ("io", "full")):
        with open(f"/proc/pressure/{resource}") as file:
            line = next(line for line in file if line.startswith(kind))
        totals.append(int(line.rsplit("total=", 1)[1]))
    return totals


rows = []
print("seed | start (UTC) | load average | p50 ms | p99 ms | max ms | recovered ms | cpu some % | io some % | io full %")
for seed in range(first_seed, first_seed + runs):
    environment = dict(os.environ, KUOTA_FAULTS_FULL="1", KUOTA_FAULTS_SEED=str(seed))
    load = os.getloadavg()[0]
    start = time.strftime("%H:%M:%S", time.gmtime())
    before, began = pressure(), time.monotonic()
    out = subprocess.run([binary, "--test-threads=1", "--nocapture", "faults::scenarios::a_node_killed"],
                         env=environment, capture_output=True, text=True, timeout=RUN_SECONDS_MAX).stdout
    wall_us = (time.monotonic() - began) * 1e6
    if keep:
        with open(os.path.join(keep, f"{seed}.txt"), "w") as file:
            file.write(out)
    stalled = [100 * (after - earlier) / wall_us for after, earlier in zip(pressure(), before)]
    match = next((FIGURES.match(line) for line in out.splitlines() if FIGURES.match(line)), None)
    if match is None:
        print(f"{seed} | {start} | {load:.2f} | no figures line", flush=True)
        continue
    p50, p99, most, recovered = (int(value) for value in match.groups())
    rows.append((p99, stalled))
    print(f"{seed} | {start} | {load:.2f} | {p50} | {p99} | {most} | {recovered} | "
          + " | ".join(f"{share:.1f}" for share in stalled), flush=True)

if rows:
    p99s = sorted(p99 for p99, _ in rows)
    print(f"p99 after ready over {len(rows)} runs: {p99s[0]}-{p99s[-1]} ms, median {statistics.median(p99s)}, "
          f"mean {statistics.mean(p99s):.1f}; sorted {p99s}")
