#!/usr/bin/env python3
"""How long the disk takes to make 4 KiB durable: write + fdatasync in a loop, as a redo log
does, for SECONDS; prints percentiles and the writes over 20 ms.

    benches/fsync_probe.py SECONDS PATH
"""
import os
import sys
import time


def main() -> None:
    seconds, path = float(sys.argv[1]), sys.argv[2]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"x" * 4096
    latencies, slow = [], []
    offset, end = 0, time.time() + seconds
    try:
        while time.time() < end:
            started = time.perf_counter()
            os.pwrite(descriptor, block, offset)
            os.fdatasync(descriptor)
            took = (time.perf_counter() - started) * 1000
            latencies.append(took)
            if took > 20:
                slow.append((round(time.time(), 2), round(took, 1)))
            offset = (offset + 4096) % (64 << 20)
    finally:
        os.close(descriptor)
        os.unlink(path)
    latencies.sort()
    n = len(latencies)
    print(
        f"{n} write+fdatasync in {seconds:.0f} s: p50 {latencies[n // 2]:.3f}, p99 {latencies[int(n * 0.99)]:.3f}, "
        f"p99.9 {latencies[int(n * 0.999)]:.2f}, max {latencies[-1]:.1f} ms; over 20 ms: {len(slow)} {slow[:10]}"
    )


if __name__ == "__main__":
    main()
