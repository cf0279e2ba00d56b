"""One `kuota` node for the calibration scripts (restart-loads.py, warm-loads.py,
cpu-per-request.py): a database of its own on the shared MariaDB, a Redis prefix of its own,
the fault suite's settings, and plain HTTP/1.1 requests, each on a new connection like the
suite's trickle. Imported by those scripts; not a tool of its own.
"""
import datetime
import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time

ADMIN_TOKEN = "caltoken"

# The fault suite's settings (api/tests/api/faults): 5 s leases, 1 s request deadline, 500 ms store
# timeout, 300 ms stall threshold, 250 ms Redis timeout.
SUITE_SETTINGS = dict(
    KUOTA_LEASE_TTL_MS="5000", KUOTA_REQUEST_TIMEOUT_MS="1000", KUOTA_STORE_TIMEOUT_MS="500",
    KUOTA_STORE_STALL_MS="300", KUOTA_REDIS_TIMEOUT_MS="250",
)


# How long a node may take to listen, or to say it is ready, before a script gives up on it.
STARTUP_SECONDS_MAX = 60


def mysql(sql):
    subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", sql], check=True)


class Node:
    """`binary` listening on `port`, its database `database` made afresh; with `redis_prefix`, a
    node of a cluster (node id `node-a`) with the suite's settings, else a lone node."""

    def __init__(self, binary, port, database, redis_prefix=None):
        self.binary, self.port, self.database, self.redis_prefix = binary, port, database, redis_prefix
        mysql(f"DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database}")
        self.env = dict(
            os.environ,
            KUOTA_LISTEN=f"127.0.0.1:{port}", KUOTA_DATABASE_URL=f"mysql://root@127.0.0.1:3306/{database}",
            KUOTA_ADMIN_TOKEN=ADMIN_TOKEN, KUOTA_RATE_LIMIT_IP_PER_SECOND="0",
            KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE="0", KUOTA_HTTP_WORKERS="2", KUOTA_LOG_FORMAT="json",
        )
        if redis_prefix:
            self.env.update(SUITE_SETTINGS, KUOTA_REDIS_URL="redis://127.0.0.1:6379",
                            KUOTA_REDIS_PREFIX=redis_prefix, KUOTA_NODE_ID="node-a")
        self.log_dir = tempfile.mkdtemp(prefix="kuota-calibration-")
        self.logs = []
        self.process = None
        self.registered = 0

    def start(self):
        """Starts the process (the next incarnation); its log is `self.logs[-1]`."""
        log = open(f"{self.log_dir}/{len(self.logs)}.log", "w")
        self.logs.append(log.name)
        self.process = subprocess.Popen([self.binary], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_listening(self, poll_seconds=0.0005):
        """Waits for the latest log's "kuota listening on" line (the port is bound), as the fault
        suite's `KuotaProcess::restart` does; returns when, on the monotonic clock."""
        deadline = time.monotonic() + STARTUP_SECONDS_MAX
        while True:
            with open(self.logs[-1]) as log:
                if "kuota listening on" in log.read():
                    return time.monotonic()
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited during startup: {open(self.logs[-1]).read()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node did not listen within {STARTUP_SECONDS_MAX} s")
            time.sleep(poll_seconds)

    def kill(self):
        """kill -9, as the fault suite kills a node."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def request(self, method, path, body=None, headers=None):
        """(status, milliseconds) of one request on a new connection."""
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        all_headers = {"Connection": "close", **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=all_headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        return response.status, (time.monotonic() - started) * 1000

    def wait_ready(self, poll_seconds=0.02):
        """Polls `/readyz` until it says 200; returns when, on the monotonic clock."""
        deadline = time.monotonic() + STARTUP_SECONDS_MAX
        while True:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return time.monotonic()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node was not ready within {STARTUP_SECONDS_MAX} s")
            time.sleep(poll_seconds)

    def create_event(self, event, seats):
        body = {"id": event, "name": "City Race", "hold_ttl_seconds": 0,
                "categories": [{"code": "10K", "name": "10 km", "capacity": seats}]}
        return self.request("POST", "/v1/events", body, {"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def register(self, event):
        """A new registrant's registration: (status, milliseconds)."""
        self.registered += 1
        number = self.registered
        body = {"category": "10K", "email": f"r{number}@example.org", "full_name": "Ana Runner"}
        return self.request("POST", f"/v1/events/{event}/registrations", body, {"Idempotency-Key": f"k{number}"})

    def log_lines(self):
        """(wall-clock seconds, message, fields) of each JSON line of the latest log, in order."""
        lines = []
        for line in open(self.logs[-1]):
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            stamp = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            fields = entry.get("fields", {})
            lines.append((stamp, fields.get("message", ""), fields))
        return lines

    def loads_logged(self):
        """(event, registrations, elapsed ms) of each `event loaded` line of the latest log."""
        loads = []
        for line in open(self.logs[-1]):
            if "event loaded" not in line:
                continue
            fields = {key: re.search(rf'"{key}":"?(\w+)', line) for key in ("event_id", "registrations", "elapsed_ms")}
            event, registrations, elapsed = (match.group(1) if match else None for match in fields.values())
            loads.append((event, int(registrations) if registrations else None, int(elapsed) if elapsed else None))
        return loads

    def cpu_seconds(self):
        """The process's user + system CPU time, all threads (/proc/PID/stat)."""
        fields = open(f"/proc/{self.process.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def finish(self):
        """Stops the process and drops what it stored."""
        if self.process and self.process.poll() is None:
            self.kill()
        subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS {self.database}"])
        if self.redis_prefix:
            subprocess.run(["sh", "-c", f"redis-cli --scan --pattern '{self.redis_prefix}*' | xargs -r redis-cli del > /dev/null"])
