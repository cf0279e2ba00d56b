#!/usr/bin/env python3
"""Fresh-process and warm-process loads of an event of ~300 registrations: two events, a restart
(kill -9, same node id), then the first registration of each (the second event is loaded by a
process that has loaded the first already).

Usage: scripts/warm-loads.py KUOTA_BINARY PORT RESTARTS LABEL
"""
import http.client, json, os, signal, subprocess, sys, tempfile, time, re, concurrent.futures
binary, port, runs, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
db = f"calib_warm_{label}"
subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"], check=True)
env = dict(os.environ,
    KUOTA_LISTEN=f"127.0.0.1:{port}", KUOTA_DATABASE_URL=f"mysql://root@127.0.0.1:3306/{db}",
    KUOTA_ADMIN_TOKEN="caltoken", KUOTA_RATE_LIMIT_IP_PER_SECOND="0", KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE="0",
    KUOTA_REDIS_URL="redis://127.0.0.1:6379", KUOTA_REDIS_PREFIX=f"calibw_{label}:", KUOTA_NODE_ID="node-a",
    KUOTA_LEASE_TTL_MS="5000", KUOTA_REQUEST_TIMEOUT_MS="1000", KUOTA_STORE_TIMEOUT_MS="500",
    KUOTA_STORE_STALL_MS="300", KUOTA_REDIS_TIMEOUT_MS="250", KUOTA_HTTP_WORKERS="2", KUOTA_LOG_FORMAT="json")
logs = []
log_dir = tempfile.mkdtemp(prefix="kuota-loads-")
def start(n):
    log = open(f"{log_dir}/w{label}-{n}.log", "w"); logs.append(log.name)
    return subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
def request(method, path, body=None, headers=None):
    started = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    h = {"Connection": "close"}; h.update(headers or {})
    if body is not None: h["Content-Type"] = "application/json"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); r.read(); c.close()
    return r.status, (time.monotonic() - started) * 1000
def wait_ready():
    while True:
        try:
            if request("GET", "/readyz")[0] == 200: return time.monotonic()
        except OSError: pass
        time.sleep(0.02)
n = [0]
def register(event):
    n[0] += 1
    return request("POST", f"/v1/events/{event}/registrations", {"category": "10K", "email": f"r{n[0]}@example.org", "full_name": "Ana Runner"}, {"Idempotency-Key": f"k{n[0]}"})
process = start(0); wait_ready()
pool = concurrent.futures.ThreadPoolExecutor(4)
for event in ("race", "race2"):
    request("POST", "/v1/events", {"id": event, "name": "City Race", "hold_ttl_seconds": 0, "categories": [{"code": "10K", "name": "10 km", "capacity": 100000}]}, {"Authorization": "Bearer caltoken"})
    list(pool.map(lambda _: register(event), range(300)))
for run in range(1, runs + 1):
    process.send_signal(signal.SIGKILL); process.wait()
    process = start(run)
    wait_ready()
    first = register("race"); time.sleep(0.05); second = register("race2")
    time.sleep(0.3)
    loads = [(re.search(r'"event_id":"(\w+)"', l).group(1), int(re.search(r'"elapsed_ms":(\d+)', l).group(1)))
             for l in open(logs[-1]) if "event loaded" in l]
    print(f"restart {run}: loads {loads}; first registrations {first[1]:.1f} ms (fresh), {second[1]:.1f} ms (warm)", flush=True)
process.send_signal(signal.SIGKILL); process.wait()
subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS {db}"])
subprocess.run(["sh", "-c", f"redis-cli --scan --pattern 'calibw_{label}:*' | xargs -r redis-cli del > /dev/null"])
