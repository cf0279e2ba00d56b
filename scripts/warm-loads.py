#!/usr/bin/env python3
"""Fresh-process and warm-process loads of an event of ~300 registrations: two events, a restart
(kill -9, same node id), then the first registration of each (the second event is loaded by a
process that has loaded the first already).

Usage: scripts/warm-loads.py KUOTA_BINARY PORT RESTARTS LABEL
"""
import concurrent.futures
import sys
import time

from calibration_node import Node

binary, port, runs, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
node = Node(binary, port, f"calib_warm_{label}", redis_prefix=f"calibw_{label}:")
try:
    node.start()
    node.wait_ready()
    pool = concurrent.futures.ThreadPoolExecutor(4)
    for event in ("race", "race2"):
        node.create_event(event, 100_000)
        list(pool.map(lambda _: node.register(event), range(300)))
    for run in range(1, runs + 1):
        node.kill()
        node.start()
        node.wait_ready()
        first = node.register("race")
        time.sleep(0.05)
        second = node.register("race2")
        time.sleep(0.3)
        loads = [(event, elapsed) for event, _, elapsed in node.loads_logged()]
        print(f"restart {run}: loads {loads}; first registrations {first[1]:.1f} ms (fresh), "
              f"{second[1]:.1f} ms (warm)", flush=True)
finally:
    node.finish()
