#!/usr/bin/env python3
"""Server CPU per request of a `kuota` binary (utime + stime of the process, all threads, from
/proc/PID/stat): registrations admitted (201, through the actor and a commit) and registrations
refused from the published counters (409 sold out, the HTTP worker alone), each on its own
connection like the fault suite's trickle, against the shared MariaDB (a database of its own).
CPU time rather than latency, so that a busy machine disturbs it less.

Usage: scripts/cpu-per-request.py KUOTA_BINARY PORT REQUESTS LABEL
"""
import http.client, json, os, subprocess, sys, tempfile, time
binary, port, count, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
db = f"calib_cpu_{label}"
subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"], check=True)
env = dict(os.environ,
    KUOTA_LISTEN=f"127.0.0.1:{port}", KUOTA_DATABASE_URL=f"mysql://root@127.0.0.1:3306/{db}",
    KUOTA_ADMIN_TOKEN="caltoken", KUOTA_RATE_LIMIT_IP_PER_SECOND="0", KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE="0",
    KUOTA_HTTP_WORKERS="2", KUOTA_LOG_FORMAT="json")
log = open(os.path.join(tempfile.mkdtemp(prefix="kuota-cpu-"), "kuota.log"), "w")
process = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
ticks = os.sysconf("SC_CLK_TCK")
def cpu_seconds():
    fields = open(f"/proc/{process.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks
def request(method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    h = {"Connection": "close"}; h.update(headers or {})
    if body is not None: h["Content-Type"] = "application/json"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); r.read(); c.close()
    return r.status
while True:
    try:
        if request("GET", "/readyz") == 200: break
    except OSError: pass
    time.sleep(0.05)
admin = {"Authorization": "Bearer caltoken"}
for event, seats in (("race", 1_000_000), ("full", 1)):
    assert request("POST", "/v1/events", {"id": event, "name": "Race", "hold_ttl_seconds": 0, "categories": [{"code": "10K", "name": "10 km", "capacity": seats}]}, admin) == 201
n = [0]
def register(event):
    n[0] += 1
    return request("POST", f"/v1/events/{event}/registrations", {"category": "10K", "email": f"r{n[0]}@example.org", "full_name": "Ana Runner"}, {"Idempotency-Key": f"k{n[0]}"})
for event in ("race", "full"):
    for _ in range(200): register(event)  # warm up; "full" sells out at once
time.sleep(1)
idle_before = cpu_seconds(); time.sleep(2); idle = (cpu_seconds() - idle_before) / 2
chunks = [("race", 201)] * 4 + [("full", 409)]
for event, expected in chunks:
    stored = n[0] - 200 if event == "race" else 0
    before, started = cpu_seconds(), time.monotonic()
    statuses = [register(event) for _ in range(count)]
    elapsed = time.monotonic() - started
    used = cpu_seconds() - before - idle * elapsed
    assert statuses.count(expected) == count, (event, set(statuses))
    print(f"{label} {event} ({expected}), from {max(stored, 0)} registrations stored: {used / count * 1e6:.0f} us of server CPU per request over {count} ({used:.2f} s, idle {idle * 1e3:.1f} ms/s taken out); {count / elapsed:.0f} requests/s one at a time", flush=True)
process.kill(); process.wait()
subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS {db}"])
