#!/usr/bin/env python3
"""MariaDB's own CPU per registration row, as Kuota's writer sends its batches and as the
durable ceiling sends its groups, for several batch sizes: what a row costs and what a batch
costs, measured apart. Not a test; docs/benchmarks.md ("Where MariaDB's CPU per admission
goes") records its runs.

Each variant gets a database of its own with Kuota's migrations (persist/migrations/mysql) and
one event, and is sent through the `mysql` client as one user of its own; MariaDB's per-user
statistics (`userstat`, turned on if off, and off again at the end) give the CPU its
connection used. The client's statements are the shapes of `persist/src/store/write.rs`
(`commit_as_assumed`: START TRANSACTION, one multi-row INSERT, the event's `last_seq` update,
COMMIT) and of `benches/src/bin/baseline/durable_ceiling.rs` (one autocommitted INSERT). The
client sends one statement per round trip where Kuota sends three in one: read the per-batch
figures as an upper bound. `FLUSH USER_STATISTICS` resets every user's counters: do not run it
beside the e2e harness.

    benches/mariadb_row_cost.py --rows 20000 --batches 20,200 --rounds 2
"""

import argparse
import os
import random
import secrets
import subprocess
import sys
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent.parent / "persist" / "migrations" / "mysql"

VARIANTS = {
    "kuota": "Kuota's row, every text as a hex literal (the writer before aeb430d)",
    "kuota-quoted": "Kuota's row, text quoted where it reads the same in every sql_mode (since aeb430d)",
    "kuota-two-indexes-fewer": "Kuota's row without registrations_by_status and registrations_by_created_seq",
    "plain": "the durable ceiling: one plain row, one autocommitted INSERT per group",
    "plain-in-transaction": "the plain row inside Kuota's transaction (START, INSERT, last_seq update, COMMIT)",
}

PLAIN_TABLE = """CREATE TABLE plain_registrations (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, event_id VARCHAR(64) NOT NULL,
    category VARCHAR(32) NOT NULL, email VARCHAR(254) NOT NULL, full_name VARCHAR(200) NOT NULL,
    created_at BIGINT NOT NULL) ENGINE = InnoDB"""

REGISTRATION_COLUMNS = (
    "event_id, number, category_code, email, active_email, full_name, phone, attributes_json, status, "
    "hold_expires_at, waitlist_position, idempotency_key, body_fingerprint, decision_json, "
    "access_token_hash, created_seq, created_detail_json, created_at, updated_at"
)


def mysql(args, sql, database=None, user=None):
    command = ["mysql", "-h", args.host, "-P", str(args.port), "-N", "-B"]
    command += ["-u", user[0], f"-p{user[1]}"] if user else ["-u", "root"]
    if database:
        command.append(database)
    return subprocess.run(command, input=sql, text=True, capture_output=True, check=True).stdout


def hex_literal(text):
    return "_utf8mb4 X'" + text.encode().hex() + "'"


def quoted_literal(text):
    if "\\" in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return hex_literal(text)
    return "_utf8mb4'" + text.replace("'", "''") + "'"


def batches_sql(variant, rows, batch):
    literal = quoted_literal if variant == "kuota-quoted" else hex_literal
    statements = []
    seq = 0
    for _ in range(rows // batch):
        first = seq
        values = []
        for _ in range(batch):
            seq += 1
            email = f"runner{random.getrandbits(40)}@example.org"
            name = f"Runner Number {seq}"
            if variant.startswith("plain"):
                values.append(f"({literal('race')}, {literal('10k')}, {literal(email)}, {literal(name)}, 1796567726098)")
                continue
            key = f"key-{random.getrandbits(64):016x}"
            decision = '{"decision":"confirmed","registration":%d}' % seq
            detail = '{"category":"10k","status":"confirmed","idempotency_key":"%s"}' % key
            values.append(
                f"({literal('race')}, {seq}, {literal('10k')}, {literal(email)}, {literal(email)}, "
                f"{literal(name)}, {literal('+6281234567')}, NULL, {literal('confirmed')}, NULL, NULL, "
                f"{literal(key)}, {random.getrandbits(62)}, {literal(decision)}, "
                f"{literal('%064x' % random.getrandbits(256))}, {seq}, {literal(detail)}, "
                f"1796567726098, 1796567726098)"
            )
        if variant.startswith("plain"):
            insert = (
                "INSERT INTO plain_registrations (event_id, category, email, full_name, created_at) VALUES "
                + ", ".join(values)
            )
        else:
            insert = f"INSERT INTO registrations ({REGISTRATION_COLUMNS}) VALUES " + ", ".join(values)
        if variant == "plain":
            statements.append(insert + ";")
            continue
        statements += [
            "START TRANSACTION;",
            insert + ";",
            f"UPDATE events SET last_seq = {seq} WHERE id = {literal('race')} AND epoch = 1 AND last_seq = {first};",
            "COMMIT;",
        ]
    return "\n".join(statements)


def measure(args, variant, batch, user):
    database = f"kuota_rowcost_{secrets.token_hex(4)}"
    mysql(args, f"CREATE DATABASE {database}")
    try:
        schema = "".join(path.read_text() for path in sorted(MIGRATIONS.glob("*.sql")))
        mysql(args, schema, database)
        mysql(
            args,
            "INSERT INTO events (id, name, hold_ttl_seconds, waitlist_length_max, idempotency_entries_max, "
            "idempotency_retention_seconds, epoch, last_seq, created_at) "
            "VALUES ('race', 'Race', 0, 100000, 2000000, 86400, 1, 0, 0);" + PLAIN_TABLE + ";",
            database,
        )
        if variant == "kuota-two-indexes-fewer":
            mysql(
                args,
                "ALTER TABLE registrations DROP INDEX registrations_by_status, "
                "DROP INDEX registrations_by_created_seq",
                database,
            )
        sql = batches_sql(variant, args.rows, batch)
        mysql(args, "FLUSH USER_STATISTICS")
        mysql(args, sql, database, user)
        cpu = mysql(args, f"SELECT CPU_TIME FROM information_schema.USER_STATISTICS WHERE USER = '{user[0]}'")
        return float(cpu.split()[0]) * 1e6 / args.rows
    finally:
        mysql(args, f"DROP DATABASE {database}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per measurement")
    parser.add_argument("--batches", default="20,200", help="rows per batch, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="passes over every variant, alternating")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants: {unknown}")
    user = (f"kuota_rowcost_{secrets.token_hex(3)}", secrets.token_hex(12))
    userstat_was = mysql(args, "SELECT @@GLOBAL.userstat").strip()
    mysql(args, f"CREATE USER '{user[0]}'@'%' IDENTIFIED BY '{user[1]}'; GRANT ALL ON `kuota_rowcost_%`.* TO '{user[0]}'@'%'")
    mysql(args, "SET GLOBAL userstat = 1")
    results = {}
    try:
        for _ in range(args.rounds):
            for batch in map(int, args.batches.split(",")):
                for variant in variants:
                    cost = measure(args, variant, batch, user)
                    results.setdefault((variant, batch), []).append(cost)
                    print(f"{variant:26} batch {batch:5}: {cost:6.2f} µs of MariaDB CPU per row", flush=True)
    finally:
        mysql(args, f"DROP USER '{user[0]}'@'%'")
        if userstat_was in ("0", "OFF"):
            mysql(args, "SET GLOBAL userstat = 0")
    print(f"\nmedians over {args.rounds} round(s), {args.rows} rows each, load average {os.getloadavg()[0]:.1f}:")
    for (variant, batch), costs in results.items():
        costs.sort()
        print(f"  {variant:26} batch {batch:5}: {costs[len(costs) // 2]:6.2f} µs per row  ({VARIANTS[variant]})")


if __name__ == "__main__":
    main()
