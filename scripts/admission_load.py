#!/usr/bin/env python3
"""The load of scripts/admission-instructions.sh: registrations over kept-alive connections.

  admission_load.py PORT create EVENT SEATS ADMIN_TOKEN
  admission_load.py PORT send EVENT FIRST COUNT CONNECTIONS [--dump FILE]

`send` posts registrations FIRST..FIRST+COUNT-1 (registrant i, key cg-<i>) over CONNECTIONS
kept-alive connections, one thread each; prints the statuses seen. --dump writes every answer
(status, headers but Date, body) in key order, to compare two builds byte for byte.
"""
import http.client
import json
import sys
import threading
from collections import Counter


def create(port, event, seats, admin):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"id": event, "name": "Bench Race",
                       "categories": [{"code": "10K", "name": "10 km", "capacity": int(seats)}]})
    connection.request("POST", "/v1/events", body,
                       {"Content-Type": "application/json", "Authorization": "Bearer " + admin})
    response = connection.getresponse()
    print(response.status, response.read().decode())


def send(port, event, first, count, connections, dump):
    answers = {}
    statuses = Counter()
    lock = threading.Lock()
    numbers = list(range(first, first + count))

    def worker(mine):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for number in mine:
            body = ('{"category":"10K","email":"runner%d@example.org","full_name":"Bench Runner"}' % number)
            connection.request("POST", "/v1/events/%s/registrations" % event, body,
                               {"Content-Type": "application/json", "Idempotency-Key": "cg-%016x" % number})
            response = connection.getresponse()
            data = response.read()
            headers = [(k.lower(), v) for k, v in response.getheaders() if k.lower() != "date"]
            with lock:
                statuses[response.status] += 1
                if dump:
                    answers[number] = (response.status, sorted(headers), data.decode())

    threads = [threading.Thread(target=worker, args=(numbers[i::connections],)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(dict(statuses))
    if dump:
        with open(dump, "w") as out:
            for number in sorted(answers):
                out.write(json.dumps([number, *answers[number]]) + "\n")


if __name__ == "__main__":
    port = int(sys.argv[1])
    if sys.argv[2] == "create":
        create(port, sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        dump = sys.argv[sys.argv.index("--dump") + 1] if "--dump" in sys.argv else None
        send(port, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), dump)
