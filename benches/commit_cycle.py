#!/usr/bin/env python3
"""Where Kuota's write-behind batches spend their commit cycle, read from a capture of MariaDB's
port on loopback: per batch, when each answer came back after its query (`START TRANSACTION`,
the writes, the event's `last_seq` update), how long the writer took to send `COMMIT` after the
update's answer, how long the `COMMIT` took, and how batches of the event follow one another.
Not a test; docs/benchmarks.md ("Where a batch's commit cycle goes") records its runs.

MariaDB sends each statement's answer as the statement ends, so the answers of one round trip
arrive as separate packets: the last answer before `COMMIT` is the `last_seq` update's, whose
wait for the row lock the batch before holds. A batch is a client packet starting with
`START TRANSACTION` that writes `registrations` (the hot event's admissions); other traffic on
the port (other contenders, other clients of the same MariaDB) is left out.

    tcpdump -i lo -s 200 -w /tmp/cycle.pcap 'tcp port 3306' &
    e2e --contenders kuota --seconds 5 --repeat 1 --pinning pinned --seats long --bin-dir <folder>
    kill %1; benches/commit_cycle.py /tmp/cycle.pcap
"""

import struct
import sys


def packets(path):
    """(time, source port, destination port, first payload bytes) of every TCP packet with a
    payload, from a pcap file of IPv4 over Ethernet (Linux's loopback), cooked or raw."""
    with open(path, "rb") as capture:
        head = capture.read(24)
        nanoseconds = struct.unpack("<I", head[:4])[0] == 0xA1B23C4D
        link = struct.unpack("<I", head[20:24])[0]
        link_bytes = {1: 14, 113: 16}.get(link, 4)
        while True:
            record = capture.read(16)
            if len(record) < 16:
                return
            seconds, fraction, captured, _ = struct.unpack("<IIII", record)
            data = capture.read(captured)
            ip = data[link_bytes:]
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            ip_header = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ip_header:]
            source, destination = struct.unpack(">HH", tcp[:4])
            tcp_header = (tcp[12] >> 4) * 4
            if total - ip_header - tcp_header <= 0:
                continue
            time = seconds + fraction / (1e9 if nanoseconds else 1e6)
            yield time, source, destination, tcp[tcp_header : tcp_header + 64]


def batches(path):
    """Each batch: its query's time, its answers' times, COMMIT's time and its answer's time."""
    connections = {}
    for time, source, destination, payload in packets(path):
        if destination == 3306:
            connections.setdefault(source, []).append(("client", time, payload))
        elif source == 3306:
            connections.setdefault(destination, []).append(("server", time, payload))
    found = []
    for packets_of in connections.values():
        for index, (side, time, payload) in enumerate(packets_of):
            if side != "client" or b"START TRANSACTION" not in payload[:40] or b"registrations" not in payload:
                continue
            answers, after = [], index + 1
            while after < len(packets_of) and packets_of[after][0] == "server":
                answers.append(packets_of[after][1])
                after += 1
            if not answers or after >= len(packets_of) or b"COMMIT" not in packets_of[after][2][:12]:
                continue
            commit_sent = packets_of[after][1]
            ends = [when for side, when, _ in packets_of[after + 1 :][:4] if side == "server"][:1]
            if ends:
                found.append({"query": time, "answers": answers, "commit": commit_sent, "end": ends[0]})
    return sorted(found, key=lambda batch: batch["query"])


def quantiles(values):
    values = sorted(value for value in values if abs(value) < 0.05)
    if not values:
        return "-"
    at = lambda share: values[min(len(values) - 1, int(share * len(values)))] * 1e6
    return f"p10 {at(0.1):6.0f}   p50 {at(0.5):6.0f}   p90 {at(0.9):6.0f} µs"


def main(path):
    found = batches(path)
    if len(found) < 2:
        sys.exit("no batches of registrations in the capture")
    print(f"{len(found)} batches over {found[-1]['end'] - found[0]['query']:.1f} s")
    three = [batch for batch in found if len(batch["answers"]) == 3]
    for position, name in enumerate(["START TRANSACTION", "the writes", "the last_seq update"]):
        print(f"query -> answer of {name:28s}", quantiles([b["answers"][position] - b["query"] for b in three]))
    print(f"{'update answer -> COMMIT sent (the writer)':48s}", quantiles([b["commit"] - b["answers"][-1] for b in found]))
    print(f"{'COMMIT -> its answer':48s}", quantiles([b["end"] - b["commit"] for b in found]))
    pairs = list(zip(found, found[1:]))
    print(f"{'next query sent - this update answer':48s}", quantiles([n["query"] - b["answers"][-1] for b, n in pairs]))
    print(f"{'next update answer - this batch end':48s}", quantiles([n["answers"][-1] - b["end"] for b, n in pairs]))
    ends = sorted(batch["end"] for batch in found)
    print(f"{'interval between batch ends (the cycle)':48s}", quantiles([b - a for a, b in zip(ends, ends[1:])]))


if __name__ == "__main__":
    main(sys.argv[1])
