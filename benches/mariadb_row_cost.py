#!/usr/bin/env python3
"""MariaDB's own CPU per registration row, as Kuota's writer sends its batches and as the
durable ceiling sends its groups, for several batch sizes and for variants of the row and of
the batch's statements: what a row costs, what each part of it costs, and what a batch costs,
measured apart. Not a test; docs/benchmarks.md ("Where MariaDB's CPU per admission goes")
records its runs.

Each variant gets a database of its own with Kuota's migrations (persist/migrations/mysql),
changed as the variant says (`SCHEMA_CHANGES`), and one event, and is sent through the `mysql`
client as one user of its own; MariaDB's per-user statistics (`userstat`) give the CPU its
connection used, read before and after (never flushed: an e2e run beside this one reads its
own user's counters the same way). `userstat` is turned on and left on: a run beside this one
may rely on it; a measurement during which another run turned it off is taken again. The
client's statements are the shapes of `persist/src/store/write.rs` (`commit_as_assumed`: START
TRANSACTION, one multi-row INSERT, the event's `last_seq` update, COMMIT) and of
`benches/src/bin/baseline/durable_ceiling.rs` (one autocommitted INSERT). Unless the variant
says otherwise (`kuota-two-trips`, `kuota-one-trip`), each statement is a round trip of its own
where Kuota sends three in one.

    benches/mariadb_row_cost.py --rows 30000 --batches 20,200 --rounds 5
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
    "kuota-quoted": "Kuota's row before migration 0011, text quoted where it reads the same in every sql_mode (since aeb430d)",
    "kuota-two-indexes-fewer": "Kuota's row without registrations_by_status and registrations_by_created_seq",
    "kuota-no-json": "Kuota's row without decision_json and created_detail_json, both columns dropped (created_hold_expires_at instead)",
    "kuota-0011": "Kuota's row as the writer sends it since migration 0011: the JSON columns left NULL, created_hold_expires_at instead",
    "kuota-digest-key": "Kuota's row, the unique active-registrant index on a BINARY(16) digest, not the e-mail",
    "kuota-no-checks": "Kuota's row without its three CHECK constraints",
    "kuota-no-unique-index": "Kuota's row without the unique active-registrant index",
    "kuota-no-secondary-indexes": "Kuota's row with its primary key only: no unique active-registrant index, no registrations_by_status, no registrations_by_created_seq",
    "kuota-bare": "Kuota's row as since 0011, its quoted texts without the `_utf8mb4` introducer (the connection's character set is utf8mb4)",
    "kuota-bare-omitted": "kuota-bare without the columns NULL in every row of the batch (attributes_json, hold_expires_at, waitlist_position, created_hold_expires_at)",
    "kuota-generated-active": "Kuota's row as since 0011, active_email a virtual column the server derives from email and status (one value fewer to send)",
    "kuota-lean": "Kuota's row without the JSON columns and with the digest key (no-json + digest-key)",
    "kuota-two-trips": "Kuota's row, sent as the writer sends it: START, INSERT and UPDATE in one round trip, then COMMIT",
    "kuota-one-trip": "Kuota's row, START, INSERT, UPDATE and COMMIT in one round trip",
    "kuota-no-update": "Kuota's row, START, INSERT, COMMIT: without the last_seq update that fences the batch",
    "kuota-narrow-fence": "Kuota's row, the last_seq update on a table of (id, epoch, last_seq) instead of the events row",
    "kuota-autocommit": "Kuota's row, one autocommitted INSERT per batch, as the durable ceiling sends its groups",
    "plain": "the durable ceiling: one plain row, one autocommitted INSERT per group",
    "plain-in-transaction": "the plain row inside Kuota's transaction (START, INSERT, last_seq update, COMMIT)",
}

# What a variant changes in the schema of Kuota's migrations, before its rows are sent.
SCHEMA_CHANGES = {
    "kuota-two-indexes-fewer": "ALTER TABLE registrations DROP INDEX registrations_by_status, "
    "DROP INDEX registrations_by_created_seq",
    "kuota-no-json": "ALTER TABLE registrations DROP COLUMN decision_json, DROP COLUMN created_detail_json",
    "kuota-digest-key": "ALTER TABLE registrations DROP CONSTRAINT registrations_active, "
    "DROP INDEX registrations_active_registrant, DROP COLUMN active_email, "
    "ADD COLUMN active_registrant BINARY(16) NULL, "
    "ADD UNIQUE KEY registrations_active_registrant (event_id, active_registrant), "
    "ADD CONSTRAINT registrations_active CHECK ((status IN ('held', 'confirmed', 'waitlisted')) = "
    "(active_registrant IS NOT NULL))",
    "kuota-no-checks": "ALTER TABLE registrations DROP CONSTRAINT registrations_status, "
    "DROP CONSTRAINT registrations_active, DROP CONSTRAINT registrations_hold",
}
SCHEMA_CHANGES["kuota-no-unique-index"] = "ALTER TABLE registrations DROP INDEX registrations_active_registrant"
SCHEMA_CHANGES["kuota-no-secondary-indexes"] = (
    SCHEMA_CHANGES["kuota-two-indexes-fewer"] + ", DROP INDEX registrations_active_registrant"
)
SCHEMA_CHANGES["kuota-generated-active"] = (
    "ALTER TABLE registrations DROP CONSTRAINT registrations_active, DROP INDEX registrations_active_registrant, "
    "DROP COLUMN active_email, ADD COLUMN active_email VARCHAR(254) AS "
    "(IF(status IN ('held', 'confirmed', 'waitlisted'), email, NULL)) VIRTUAL, "
    "ADD UNIQUE KEY registrations_active_registrant (event_id, active_email)"
)
SCHEMA_CHANGES["kuota-narrow-fence"] = (
    "CREATE TABLE event_fences (id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, "
    "epoch BIGINT NOT NULL, last_seq BIGINT NOT NULL) ENGINE = InnoDB; "
    "INSERT INTO event_fences VALUES ('race', 1, 0)"
)
SCHEMA_CHANGES["kuota-lean"] = SCHEMA_CHANGES["kuota-no-json"] + ";" + SCHEMA_CHANGES["kuota-digest-key"]

PLAIN_TABLE = """CREATE TABLE plain_registrations (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, event_id VARCHAR(64) NOT NULL,
    category VARCHAR(32) NOT NULL, email VARCHAR(254) NOT NULL, full_name VARCHAR(200) NOT NULL,
    created_at BIGINT NOT NULL) ENGINE = InnoDB"""

REGISTRATION_COLUMNS = (
    "event_id, number, category_code, email, active_email, full_name, phone, attributes_json, status, "
    "hold_expires_at, waitlist_position, idempotency_key, body_fingerprint, decision_json, "
    "access_token_hash, created_seq, created_detail_json, created_at, updated_at"
)


def registration_columns(variant):
    columns = REGISTRATION_COLUMNS
    if variant in ("kuota-no-json", "kuota-0011", "kuota-bare", "kuota-bare-omitted", "kuota-generated-active", "kuota-lean"):
        columns = columns.replace("decision_json, ", "").replace("created_detail_json, ", "created_hold_expires_at, ")
    if variant in ("kuota-digest-key", "kuota-lean"):
        columns = columns.replace("active_email", "active_registrant")
    if variant == "kuota-generated-active":
        columns = columns.replace("active_email, ", "")
    if variant == "kuota-bare-omitted":
        for omitted in ("created_hold_expires_at", "attributes_json", "hold_expires_at", "waitlist_position"):
            columns = columns.replace(f"{omitted}, ", "")
    return columns


def mysql(args, sql, database=None, user=None):
    # utf8mb4, as sqlx sets every connection of Kuota's (`SET NAMES utf8mb4`).
    command = ["mysql", "-h", args.host, "-P", str(args.port), "-N", "-B", "--default-character-set=utf8mb4"]
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


def bare_literal(text):
    quoted = quoted_literal(text)
    return quoted.removeprefix("_utf8mb4")


def batches_sql(variant, rows, batch):
    literal = {"kuota": hex_literal, "kuota-bare": bare_literal, "kuota-bare-omitted": bare_literal}.get(variant, quoted_literal)
    json = variant not in ("kuota-no-json", "kuota-0011", "kuota-bare", "kuota-bare-omitted", "kuota-generated-active", "kuota-lean")
    digest = variant in ("kuota-digest-key", "kuota-lean")
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
            active = f"X'{random.getrandbits(128):032x}', " if digest else f"{literal(email)}, "
            if variant == "kuota-generated-active":
                active = ""
            if json:
                decision = literal('{"decision":"confirmed","registration":%d}' % seq)
                detail = literal('{"category":"10k","status":"confirmed","idempotency_key":"%s"}' % key)
                decision, detail = f"{decision}, ", f"{detail}, "
            else:
                decision, detail = "", "NULL, "
            if variant == "kuota-bare-omitted":
                values.append(
                    f"({literal('race')}, {seq}, {literal('10k')}, {literal(email)}, {active}"
                    f"{literal(name)}, {literal('+6281234567')}, {literal('confirmed')}, "
                    f"{literal(key)}, {random.getrandbits(62)}, "
                    f"{literal('%064x' % random.getrandbits(256))}, {seq}, 1796567726098, 1796567726098)"
                )
                continue
            values.append(
                f"({literal('race')}, {seq}, {literal('10k')}, {literal(email)}, {active}"
                f"{literal(name)}, {literal('+6281234567')}, NULL, {literal('confirmed')}, NULL, NULL, "
                f"{literal(key)}, {random.getrandbits(62)}, {decision}"
                f"{literal('%064x' % random.getrandbits(256))}, {seq}, {detail}"
                f"1796567726098, 1796567726098)"
            )
        if variant.startswith("plain"):
            insert = (
                "INSERT INTO plain_registrations (event_id, category, email, full_name, created_at) VALUES "
                + ", ".join(values)
            )
        else:
            insert = f"INSERT INTO registrations ({registration_columns(variant)}) VALUES " + ", ".join(values)
        if variant in ("plain", "kuota-autocommit"):
            statements.append(insert + "$$")
            continue
        fenced = "event_fences" if variant == "kuota-narrow-fence" else "events"
        update = f"UPDATE {fenced} SET last_seq = {seq} WHERE id = {literal('race')} AND epoch = 1 AND last_seq = {first}"
        # The client sends what lies between two delimiters as one round trip (multi-statements).
        if variant == "kuota-two-trips":
            statements += [f"START TRANSACTION; {insert}; {update}$$", "COMMIT$$"]
        elif variant == "kuota-one-trip":
            statements.append(f"START TRANSACTION; {insert}; {update}; COMMIT$$")
        elif variant == "kuota-no-update":
            statements += ["START TRANSACTION$$", insert + "$$", "COMMIT$$"]
        else:
            statements += ["START TRANSACTION$$", insert + "$$", update + "$$", "COMMIT$$"]
    return "DELIMITER $$\n" + "\n".join(statements)


def user_cpu_seconds(args, user):
    """The CPU time MariaDB counted for `user` so far; 0 before its first statement."""
    cpu = mysql(args, f"SELECT CPU_TIME FROM information_schema.USER_STATISTICS WHERE USER = '{user[0]}'")
    return float(cpu.split()[0]) if cpu.strip() else 0.0


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
        if variant in SCHEMA_CHANGES:
            mysql(args, SCHEMA_CHANGES[variant], database)
        sql = batches_sql(variant, args.rows, batch)
        # Another run beside this one (e2e) may turn the statistics off when it ends: a
        # measurement during which they were off is taken again.
        while True:
            mysql(args, "SET GLOBAL userstat = 1")
            before = user_cpu_seconds(args, user)
            mysql(args, sql, database, user)
            after = user_cpu_seconds(args, user)
            if mysql(args, "SELECT @@GLOBAL.userstat").strip() in ("1", "ON") and after > before:
                return (after - before) * 1e6 / args.rows
            print(f"{variant}: the per-user statistics were turned off meanwhile; measuring again", flush=True)
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
    mysql(args, f"CREATE USER '{user[0]}'@'%' IDENTIFIED BY '{user[1]}'; GRANT ALL ON `kuota_rowcost_%`.* TO '{user[0]}'@'%'")
    results = {}
    try:
        for _ in range(args.rounds):
            for batch in map(int, args.batches.split(",")):
                for variant in variants:
                    cost = measure(args, variant, batch, user)
                    results.setdefault((variant, batch), []).append(cost)
                    print(f"{variant:24} batch {batch:5}: {cost:6.2f} µs of MariaDB CPU per row", flush=True)
    finally:
        mysql(args, f"DROP USER '{user[0]}'@'%'")
    print(f"\nmedians over {args.rounds} round(s), {args.rows} rows each, load average {os.getloadavg()[0]:.1f}:")
    for (variant, batch), costs in results.items():
        costs.sort()
        print(f"  {variant:24} batch {batch:5}: {costs[len(costs) // 2]:6.2f} µs per row  ({VARIANTS[variant]})")


if __name__ == "__main__":
    main()
