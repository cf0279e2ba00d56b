#!/usr/bin/env python3
"""A node killed (-9) and restarted with its node id, as the fault suite's scenario does, against
the shared MariaDB (own database) and Redis (own prefix): the restarted process's log says how long
its load took; the first registration after /readyz said 200 is timed like `served_again`.

Usage: scripts/restart-loads.py KUOTA_BINARY PORT RESTARTS_PER_SIZE LABEL [SIZES, e.g. 250,1000,3000]
"""
import http.client, json, os, signal, subprocess, sys, tempfile, time, socket, re
binary, port, runs, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sizes = [int(x) for x in sys.argv[5].split(",")] if len(sys.argv) > 5 else [250]
db = f"calib_restart_{label}"
subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"], check=True)
env = dict(os.environ,
    KUOTA_LISTEN=f"127.0.0.1:{port}", KUOTA_DATABASE_URL=f"mysql://root@127.0.0.1:3306/{db}",
    KUOTA_ADMIN_TOKEN="caltoken", KUOTA_RATE_LIMIT_IP_PER_SECOND="0", KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE="0",
    KUOTA_REDIS_URL="redis://127.0.0.1:6379", KUOTA_REDIS_PREFIX=f"calib_{label}:", KUOTA_NODE_ID="node-a",
    KUOTA_LEASE_TTL_MS="5000", KUOTA_REQUEST_TIMEOUT_MS="1000", KUOTA_STORE_TIMEOUT_MS="500",
    KUOTA_STORE_STALL_MS="300", KUOTA_REDIS_TIMEOUT_MS="250", KUOTA_HTTP_WORKERS="2", KUOTA_LOG_FORMAT="json")
logs = []
log_dir = tempfile.mkdtemp(prefix="kuota-loads-")
def start(n):
    log = open(f"{log_dir}/{label}-{n}.log", "w"); logs.append(log.name)
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
def register():
    n[0] += 1
    return request("POST", "/v1/events/race/registrations", {"category": "10K", "email": f"r{n[0]}@example.org", "full_name": "Ana Runner"}, {"Idempotency-Key": f"k{n[0]}"})
process = start(0); wait_ready()
print("create", request("POST", "/v1/events", {"id": "race", "name": "City Race", "hold_ttl_seconds": 0, "categories": [{"code": "10K", "name": "10 km", "capacity": 100000}]}, {"Authorization": "Bearer caltoken"}))
import concurrent.futures
pool = concurrent.futures.ThreadPoolExecutor(4)
run = 0
for size in sizes:
    while n[0] < size:
        todo = min(200, size - n[0])
        statuses = list(pool.map(lambda _: register()[0], range(todo)))
    steady = sorted(register()[1] for _ in range(50))
    print(f"{n[0]} stored; steady registrations one at a time: p50 {steady[25]:.2f} ms, p90 {steady[45]:.2f}, max {steady[-1]:.2f}")
    for _ in range(runs):
        run += 1
        process.send_signal(signal.SIGKILL); process.wait()
        process = start(run)
        ready = wait_ready()
        while True:
            status, ms = register()
            if status == 201: break
            time.sleep(0.05)
        served = (time.monotonic() - ready) * 1000
        after = sorted(register()[1] for _ in range(20))
        time.sleep(0.3)
        loaded = [l for l in open(logs[-1]) if "event loaded" in l]
        elapsed = [int(m.group(1)) for m in (re.search(r'"elapsed_ms":(\d+)', l) for l in loaded) if m]
        regs = [int(m.group(1)) for m in (re.search(r'"registrations":(\d+)', l) for l in loaded) if m]
        print(f"restart {run}: first registration decided {served:.1f} ms after ready (it took {ms:.1f} ms); next 20: p50 {after[10]:.2f} max {after[-1]:.2f}; load of {regs} registrations: {elapsed} ms", flush=True)
process.send_signal(signal.SIGKILL); process.wait()
subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS {db}"])
subprocess.run(["sh", "-c", f"redis-cli --scan --pattern 'calib_{label}:*' | xargs -r redis-cli del > /dev/null"])
