#!/usr/bin/env python3
"""What a MariaDB connection costs the store, for the fault model's `store_connect` and
`store_abandoned_connection_ms` (docs/capacity-planning.md, "Calibration").

Against the MariaDB on 127.0.0.1:3306 (root, no password), standard library only:
- a set-up as the pool makes one: TCP connect, the server's greeting, the handshake response,
  its OK, one statement (the session settings), COM_QUIT; 400 in a row;
- connections whose client gives up at once (connect, close), in bursts of 50, 100 and 200, each
  followed by one set-up: how much longer it waits, per abandoned connection, behind them.

    python3 scripts/store-connections.py
"""
import socket
import struct
import time

ADDRESS = ("127.0.0.1", 3306)
# CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
CAPABILITIES = 0x00000001 | 0x00000004 | 0x00000200 | 0x00008000 | 0x00080000
SET_UPS = 400
BURSTS = (50, 100, 200)
BURST_REPEATS = 12


def read_packet(connection):
    header = b""
    while len(header) < 4:
        chunk = connection.recv(4 - len(header))
        if not chunk:
            raise EOFError("the server closed the connection")
        header += chunk
    length = header[0] | header[1] << 8 | header[2] << 16
    body = b""
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise EOFError("the server closed the connection")
        body += chunk
    return header[3], body


def packet(sequence, body):
    return struct.pack("<I", len(body))[:3] + bytes([sequence]) + body


def set_up():
    connection = socket.create_connection(ADDRESS)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sequence, _greeting = read_packet(connection)
    response = (
        struct.pack("<IIB", CAPABILITIES, 1 << 24, 45)
        + b"\0" * 23
        + b"root\0"
        + b"\0"
        + b"mysql_native_password\0"
    )
    connection.sendall(packet(sequence + 1, response))
    sequence, answer = read_packet(connection)
    if answer[0] == 0xFE:  # the server asks for another authentication method: no password
        connection.sendall(packet(sequence + 1, b""))
        sequence, answer = read_packet(connection)
    if answer[0] != 0x00:
        raise RuntimeError(f"authentication refused: {answer[:80]!r}")
    connection.sendall(packet(0, b"\x03SET SESSION innodb_lock_wait_timeout = 2"))
    _, answer = read_packet(connection)
    if answer[0] != 0x00:
        raise RuntimeError(f"statement refused: {answer[:80]!r}")
    connection.sendall(packet(0, b"\x01"))
    connection.close()


def abandon():
    socket.create_connection(ADDRESS).close()


def milliseconds(call):
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1_000


times = sorted(milliseconds(set_up) for _ in range(SET_UPS))
median = times[len(times) // 2]
print(
    f"set-up: {SET_UPS} in a row, p50 {median:.3f} ms, p90 {times[len(times) * 9 // 10]:.3f} ms, "
    f"p99 {times[len(times) * 99 // 100]:.3f} ms"
)
for burst in BURSTS:
    waits = []
    for _ in range(BURST_REPEATS):
        for _ in range(burst):
            abandon()
        waits.append(milliseconds(set_up))
    waits.sort()
    behind = waits[len(waits) // 2]
    print(
        f"set-up behind {burst} abandoned connections: median {behind:.3f} ms, "
        f"{(behind - median) / burst:.4f} ms more per abandoned connection"
    )
