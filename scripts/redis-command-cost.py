#!/usr/bin/env python3
"""What one Redis command adds to a registration of a `kuota` node: two nodes of the same binary
against the shared MariaDB (own databases) and Redis (own prefixes), one with the shared
per-e-mail rate limit on (each registration runs its GCRA script in Redis: one `EVALSHA`, see
`SharedGcra::check`), one with it off, registrations sent one at a time on new connections,
alternating between the two; the difference of their medians is one Redis command as the node
sees it (its round trip and the client's work on both ends).

Usage: scripts/redis-command-cost.py KUOTA_BINARY PORT REGISTRATIONS LABEL
"""
import statistics
import sys

from calibration_node import Node

binary, port, count, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
limited = Node(binary, port, f"calib_redis_on_{label}", redis_prefix=f"calibr_on_{label}:")
# A limit no registrant reaches: only its Redis command counts.
limited.env["KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE"] = "100000"
plain = Node(binary, port + 1, f"calib_redis_off_{label}", redis_prefix=f"calibr_off_{label}:")
try:
    for node in (limited, plain):
        node.start()
        node.wait_ready()
        node.create_event("race", 100_000)
        for _ in range(50):
            node.register("race")
    times = {id(limited): [], id(plain): []}
    for _ in range(count):
        for node in (limited, plain):
            status, ms = node.register("race")
            assert status == 201, status
            times[id(node)].append(ms)
    on, off = statistics.median(times[id(limited)]), statistics.median(times[id(plain)])
    quartiles = lambda values: statistics.quantiles(values, n=4)
    print(f"{count} registrations each: limit on p50 {on:.3f} ms (quartiles {quartiles(times[id(limited)])[0]:.3f}-"
          f"{quartiles(times[id(limited)])[2]:.3f}), off p50 {off:.3f} ms (quartiles "
          f"{quartiles(times[id(plain)])[0]:.3f}-{quartiles(times[id(plain)])[2]:.3f}): "
          f"one Redis command {on - off:.3f} ms", flush=True)
finally:
    limited.finish()
    plain.finish()
