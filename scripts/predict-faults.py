#!/usr/bin/env python3
"""Predicts the live fault suite's figures with the calibration scenarios, as
docs/capacity-planning.md ("Calibration", "Faults") compares them: seeds 1-3 at the scenario's
fault start (1.25 s), and the suite's spread of fault starts (1.00, 1.05, ... 1.50 s, each with
seeds 1-3: 33 runs). Reads the figures from `kuota-sim run`'s report.

Usage: scripts/predict-faults.py KUOTA_SIM_BINARY SCENARIO_DIR [NAME ...]
  (NAME: store-stall, owner-freeze, redis-outage, owner-crash; all four by default)
"""
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile

binary, directory = sys.argv[1], sys.argv[2]
names = sys.argv[3:] or ["store-stall", "owner-freeze", "redis-outage", "owner-crash"]
STARTS = [f"{1.0 + 0.05 * step:.2f}" for step in range(11)]
FIGURES = {
    "during_503": r"^\| during [^|]*\|\s*[\d,]+\s*\|(?:[^|]*\|){3}\s*([\d,]+)\s*\|",
    "during_p99_ms": r"^\| during [^|]*\|(?:[^|]*\|){8}\s*([\d.,]+)\s*\|",
    "during_max_ms": r"^\| during [^|]*\|(?:[^|]*\|){9}\s*([\d.,]+)\s*\|",
    "own_recovery_ms": r"\*\*time to recover ([\d.,]+) ms\*\*",
    "served_after_began_ms": r"\*\*([\d.,]+) ms after the fault began\*\*",
    "ready_ms": r"`/readyz` said 200 ([\d.,]+) ms after the fault ended",
    "suite_served_ms": r"every node served again \*\*([\d.,]+) ms\*\*",
    "after_ready_p99_ms": r"s after `/readyz` said 200 ([\d.,]+) ms",
}

# The figures the suite itself prints in whole milliseconds, rounded down (`as_millis` in
# `latency_percentile_ms` and `served_again`, api/tests/api/faults/load.rs): a live "7 ms" is
# 7.0-7.99 ms.
SUITE_WHOLE_MS = {"suite_served_ms", "after_ready_p99_ms"}


def run(text, seed):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as file:
        file.write(text)
    try:
        out = subprocess.run([binary, "run", file.name, "--seed", str(seed)], capture_output=True,
                             text=True, check=True).stdout
    finally:
        os.unlink(file.name)
    found = {}
    for figure, pattern in FIGURES.items():
        match = re.search(pattern, out, re.MULTILINE)
        if match:
            found[figure] = float(match.group(1).replace(",", ""))
    return found


for name in names:
    text = open(os.path.join(directory, f"faults-{name}.toml")).read()
    assert "start_seconds = 1.25\n" in text, name
    seeds = [run(text, seed) for seed in (1, 2, 3)]
    spread = [run(text.replace("start_seconds = 1.25\n", f"start_seconds = {start}\n"), seed)
              for start in STARTS for seed in (1, 2, 3)]
    print(f"## {name}")
    for figure in FIGURES:
        values = [r[figure] for r in spread if figure in r]
        if not values:
            continue
        print(f"{figure}: seeds 1/2/3 {' / '.join(str(r.get(figure)) for r in seeds)}; spread of "
              f"{len(values)}: {min(values)}-{max(values)}, mean {statistics.mean(values):.2f}, "
              f"median {statistics.median(values):.2f}; sorted {sorted(values)}", flush=True)
        if figure in SUITE_WHOLE_MS:
            # The suite prints whole milliseconds, rounded down (`as_millis`).
            whole = [math.floor(value) for value in values]
            print(f"{figure} in the suite's whole ms: mean {statistics.mean(whole):.2f}, "
                  f"median {statistics.median(whole)}", flush=True)
