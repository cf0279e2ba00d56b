#!/usr/bin/env python3
"""Server CPU per request of a `kuota` binary (utime + stime of the process, all threads, from
/proc/PID/stat): registrations admitted (201, through the actor and a commit) and registrations
refused from the published counters (409 sold out, the HTTP worker alone), each on its own
connection like the fault suite's trickle, against the shared MariaDB (a database of its own).
CPU time rather than latency, so that a busy machine disturbs it less.

Usage: scripts/cpu-per-request.py KUOTA_BINARY PORT REQUESTS LABEL
"""
import sys
import time

from calibration_node import Node

binary, port, count, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
node = Node(binary, port, f"calib_cpu_{label}")
try:
    node.start()
    node.wait_ready(poll_seconds=0.05)
    for event, seats in (("race", 1_000_000), ("full", 1)):
        assert node.create_event(event, seats)[0] == 201
    for event in ("race", "full"):
        for _ in range(200):
            node.register(event)  # warm up; "full" sells out at once
    time.sleep(1)
    idle_before = node.cpu_seconds()
    time.sleep(2)
    idle = (node.cpu_seconds() - idle_before) / 2
    chunks = [("race", 201)] * 4 + [("full", 409)]
    for event, expected in chunks:
        stored = node.registered - 200 if event == "race" else 0
        before, started = node.cpu_seconds(), time.monotonic()
        statuses = [node.register(event)[0] for _ in range(count)]
        elapsed = time.monotonic() - started
        used = node.cpu_seconds() - before - idle * elapsed
        assert statuses.count(expected) == count, (event, set(statuses))
        print(f"{label} {event} ({expected}), from {max(stored, 0)} registrations stored: "
              f"{used / count * 1e6:.0f} us of server CPU per request over {count} ({used:.2f} s, "
              f"idle {idle * 1e3:.1f} ms/s taken out); {count / elapsed:.0f} requests/s one at a time", flush=True)
finally:
    node.finish()
