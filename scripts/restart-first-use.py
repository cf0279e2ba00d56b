#!/usr/bin/env python3
"""What a restarted process's first registrations cost beyond later ones: a node killed (-9) and
restarted with its node id, as the fault suite's restart scenario does, against the shared
MariaDB (own database) and Redis (own prefix), an event of the suite's 100,000 seats. After each
restart:

- its `/readyz` polls, from when its "listening" line shows (as the suite's `restart` and
  `wait_until_ready`: every 20 ms until 200): how long the 200 took;
- then one registration sent at once (as the suite's `served_again`), timed in parts from the
  process's log (wall clock, one machine): from its send to the lease taken over (the request's
  HTTP work and the claim's Redis commands), to the load's start ("event loaded" less its
  `elapsed_ms`), the load, to the actor started, and to the answer (the decision, the commit,
  the answer);
- then the next registrations one at a time, and a steady median of 20;
- then the first registration of a second event of the same size, whose lease the previous
  life held too: the same claim (a take-over) and load in a process that has served already,
  timed in the same parts.

With `trickle`, a registration of a new registrant every 5 ms on a new connection, from before
the kill to after the measured one, as the suite's trickle (no retry): the measured registration
then shares the claim and load a trickle registration started, and waits behind the
registrations that came while the process started.

With DELAY_MS, the first registration is sent that long after `/readyz` said 200 instead of at
once: after the process's start-up work (its background tasks' first rounds).

Usage: scripts/restart-first-use.py KUOTA_BINARY PORT RESTARTS LABEL STORED [alone|trickle] [DELAY_MS]
"""
import itertools
import statistics
import sys
import threading
import time

from calibration_node import STARTUP_SECONDS_MAX, Node

binary, port, runs, label, stored = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
mode = sys.argv[6] if len(sys.argv) > 6 else "alone"
delay_ms = int(sys.argv[7]) if len(sys.argv) > 7 else 0
SUITE_SEATS = 100_000
TRICKLE_INTERVAL_SECONDS = 0.005
node = Node(binary, port, f"calib_first_{label}", redis_prefix=f"calibf_{label}:")
numbers = itertools.count(1)


def register(event="race"):
    """A new registrant's registration: (status or None, milliseconds)."""
    number = next(numbers)
    body = {"category": "10K", "email": f"r{number}@example.org", "full_name": "Ana Runner"}
    try:
        return node.request("POST", f"/v1/events/{event}/registrations", body, {"Idempotency-Key": f"k{number}"})
    except OSError:
        return None, 0.0


class Trickle:
    """One registration every 5 ms, each on its own thread."""

    def __init__(self):
        self.stopping = False
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        due = time.monotonic()
        while not self.stopping:
            threading.Thread(target=register).start()
            due += TRICKLE_INTERVAL_SECONDS
            time.sleep(max(0.0, due - time.monotonic()))

    def stop(self):
        self.stopping = True
        self.thread.join()


def polls_until_ready():
    """[(status or None, ms)] of each `/readyz` poll, the last one the 200."""
    polls = []
    deadline = time.monotonic() + STARTUP_SECONDS_MAX
    while True:
        try:
            status, ms = node.request("GET", "/readyz")
        except OSError:
            status, ms = None, 0.0
        polls.append((status, ms))
        if status == 200:
            return polls
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node was not ready within {STARTUP_SECONDS_MAX} s")
        time.sleep(0.02)


def first_of(lines, message, after, event):
    return next(((stamp, fields) for stamp, text, fields in lines
                 if text == message and stamp >= after and fields.get("event_id") == event), (None, None))


def parts_of(lines, event, sent, answered):
    """The registration's parts from the log, or None."""
    claimed, _ = first_of(lines, "took over the event lease of this node id's previous life", sent, event)
    loaded, fields = first_of(lines, "event loaded", sent, event)
    actor, _ = first_of(lines, "event actor started", sent, event)
    if None in (claimed, loaded, actor):
        return None
    load_start = loaded - fields["elapsed_ms"] / 1000
    return dict(
        claim=(claimed - sent) * 1000, to_load=(load_start - claimed) * 1000, load=fields["elapsed_ms"],
        to_actor=(actor - loaded) * 1000, answer=(answered - actor) * 1000,
    )


def text_of(parts):
    return ", ".join(f"{name} {ms:.1f}" for name, ms in parts.items())


median = statistics.median
try:
    node.start()
    node.wait_ready()
    print("create", node.create_event("race", SUITE_SEATS), node.create_event("race2", SUITE_SEATS))
    threads = [threading.Thread(target=lambda event=event: [register(event) for _ in range(stored // 4)])
               for _ in range(4) for event in ("race", "race2")]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    figures = []
    for run in range(runs):
        trickle = Trickle() if mode == "trickle" else None
        time.sleep(0.1)
        node.kill()
        spawned = time.time()
        node.start()
        listening = node.wait_listening()
        polls = polls_until_ready()
        ready = time.monotonic()
        time.sleep(delay_ms / 1000)
        sent = time.time()
        status, first_ms = register()
        answered = time.time()
        if trickle:
            time.sleep(0.1)
            trickle.stop()
            time.sleep(0.1)
        next_ms = [register()[1] for _ in range(3)]
        steady = median(register()[1] for _ in range(20))
        second_sent = time.time()
        second_status, second_ms = register("race2")
        second_answered = time.time()
        time.sleep(0.3)
        lines = node.log_lines()
        parts = parts_of(lines, "race", sent, answered)
        second_parts = parts_of(lines, "race2", second_sent, second_answered)
        if status != 201 or second_status != 201 or parts is None or second_parts is None:
            print(f"restart {run + 1}: incomplete (status {status}, {second_status})", flush=True)
            continue
        ready_ms = (ready - listening) * 1000
        figures.append((first_ms, next_ms, steady, parts, ready_ms, second_ms, second_parts))
        print(f"restart {run + 1}: /readyz 200 {ready_ms:.1f} ms after the listening line "
              f"({len(polls)} polls, the 200 took {polls[-1][1]:.1f} ms); first registration {first_ms:.1f} ms "
              f"[{text_of(parts)}], next {', '.join(f'{ms:.1f}' for ms in next_ms)}, steady p50 {steady:.2f} ms; "
              f"the second event's first {second_ms:.1f} ms [{text_of(second_parts)}]", flush=True)
    if figures:
        parts = {name: median([f[3][name] for f in figures]) for name in figures[0][3]}
        second_parts = {name: median([f[6][name] for f in figures]) for name in figures[0][6]}
        print(f"{mode}, +{delay_ms} ms, {len(figures)} restarts, medians: /readyz 200 {median([f[4] for f in figures]):.1f} ms after "
              f"the listening line; first registration {median([f for f, *_ in figures]):.1f} ms "
              f"({', '.join(f'{n} {ms:.1f}' for n, ms in parts.items())}), second "
              f"{median([n[0] for _, n, *_ in figures]):.1f}, third {median([n[1] for _, n, *_ in figures]):.1f}, "
              f"steady {median([s for _, _, s, *_ in figures]):.2f}; the second event's first "
              f"{median([f[5] for f in figures]):.1f} ms ({text_of(second_parts)})", flush=True)
finally:
    node.finish()
