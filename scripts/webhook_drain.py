"""How fast webhooks drain: a release `kuota` on a fresh MariaDB database, one endpoint wanting
`registration.created` on a loopback receiver that answers 204 at once, N registrations sent by
one keep-alive client as fast as they are answered. Prints the registration rate, when the first
message arrived and when the last did, the delivery rate, and each registration's wait from its
201 to its message (median, p99, max, and the share within 2 s). Loopback only; the database is
dropped at the end.

    cargo build --release --bin kuota
    python3 scripts/webhook_drain.py 3000 [path/to/kuota]
"""
import http.client, http.server, json, os, subprocess, sys, threading, time, socketserver

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
received = []
lock = threading.Lock()

class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        with lock:
            received.append((time.monotonic(), json.loads(body)["data"]["id"]))
        self.send_response(204); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

receiver = Server(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
database = f"kuota_t_fanout_{os.getpid()}"
subprocess.run(["mariadb", "-uroot", "-h127.0.0.1", "-e", f"CREATE DATABASE {database}"], check=True)
environment = dict(os.environ, KUOTA_LISTEN="127.0.0.1:0", KUOTA_DATABASE_URL=f"mysql://root@127.0.0.1:3306/{database}",
                   KUOTA_ADMIN_TOKEN="t", KUOTA_RATE_LIMIT_IP_PER_SECOND="0", KUOTA_RATE_LIMIT_EMAIL_PER_MINUTE="0",
                   KUOTA_WEBHOOK_ALLOW_HOSTS="127.0.0.1", KUOTA_LOG_FORMAT="json", RUST_LOG="warn")
binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/kuota"
node = subprocess.Popen([binary], env=environment, stdout=subprocess.PIPE, text=True)
try:
    port = None
    for line in node.stdout:
        if "listening on" in line:
            port = int(line.strip().rsplit(":", 1)[1]); break
    threading.Thread(target=lambda: [None for _ in node.stdout], daemon=True).start()
    client = http.client.HTTPConnection("127.0.0.1", port)
    def call(method, path, body=None, headers={}):
        all_headers = {"Authorization": "Bearer t", "Content-Type": "application/json", **headers}
        client.request(method, path, json.dumps(body) if body is not None else None, all_headers)
        response = client.getresponse(); data = response.read()
        return response.status, data
    print(call("POST", "/v1/webhooks", {"url": f"http://127.0.0.1:{receiver.server_address[1]}/h", "event_types": ["registration.created"]})[0])
    print(call("POST", "/v1/events", {"id": "race", "name": "R", "categories": [{"code": "A", "name": "A", "capacity": N * 2}]})[0])
    time.sleep(1.5)  # builds before 2026-12-06 read the endpoint list at most once a second
    answered = {}
    start = time.monotonic()
    for n in range(N):
        status, data = call("POST", "/v1/events/race/registrations", {"category": "A", "email": f"r{n}@x.org", "full_name": "R"}, {"Idempotency-Key": f"k{n}"})
        assert status == 201, (status, data)
        answered[json.loads(data)["id"]] = time.monotonic()
    registered = time.monotonic()
    deadline = registered + 120
    while len(received) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    done = time.monotonic()
    print(f"registrations: {N} in {registered - start:.2f} s ({N / (registered - start):.0f}/s)")
    times = [at for at, _ in received]
    print(f"delivered: {len(received)}; the last {done - registered:.2f} s after the last 201; "
          f"first delivery {times[0] - start:.2f} s after the start; "
          f"deliveries/s over the run: {len(received) / (times[-1] - times[0]):.0f}")
    waits = sorted(at - answered[id] for at, id in received if id in answered)
    print(f"201 to message: median {waits[len(waits) // 2]:.2f} s, p99 {waits[len(waits) * 99 // 100]:.2f} s, "
          f"max {waits[-1]:.2f} s; within 2 s: {sum(wait <= 2 for wait in waits) / len(waits):.0%}")
finally:
    node.terminate(); node.wait(10)
    subprocess.run(["mariadb", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE {database}"])
