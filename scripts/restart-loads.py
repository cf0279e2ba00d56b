#!/usr/bin/env python3
"""A node killed (-9) and restarted with its node id, as the fault suite's scenario does, against
the shared MariaDB (own database) and Redis (own prefix): the restarted process's log says how long
its load took; the first registration after /readyz said 200 is timed like `served_again`.

Usage: scripts/restart-loads.py KUOTA_BINARY PORT RESTARTS_PER_SIZE LABEL [SIZES, e.g. 250,1000,3000]
"""
import concurrent.futures
import sys
import time

from calibration_node import Node

binary, port, runs, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sizes = [int(size) for size in sys.argv[5].split(",")] if len(sys.argv) > 5 else [250]
node = Node(binary, port, f"calib_restart_{label}", redis_prefix=f"calib_{label}:")
try:
    node.start()
    node.wait_ready()
    print("create", node.create_event("race", 100_000))
    pool = concurrent.futures.ThreadPoolExecutor(4)
    run = 0
    for size in sizes:
        while node.registered < size:
            todo = min(200, size - node.registered)
            list(pool.map(lambda _: node.register("race"), range(todo)))
        steady = sorted(node.register("race")[1] for _ in range(50))
        print(f"{node.registered} stored; steady registrations one at a time: "
              f"p50 {steady[25]:.2f} ms, p90 {steady[45]:.2f}, max {steady[-1]:.2f}")
        for _ in range(runs):
            run += 1
            node.kill()
            node.start()
            ready = node.wait_ready()
            while True:
                status, ms = node.register("race")
                if status == 201:
                    break
                time.sleep(0.05)
            served = (time.monotonic() - ready) * 1000
            after = sorted(node.register("race")[1] for _ in range(20))
            time.sleep(0.3)
            loads = node.loads_logged()
            print(f"restart {run}: first registration decided {served:.1f} ms after ready (it took {ms:.1f} ms); "
                  f"next 20: p50 {after[10]:.2f} max {after[-1]:.2f}; load of {[r for _, r, _ in loads]} "
                  f"registrations: {[e for _, _, e in loads]} ms", flush=True)
finally:
    node.finish()
