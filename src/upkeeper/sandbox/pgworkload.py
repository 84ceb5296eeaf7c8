"""A PostgreSQL workload that leaves every kind of line logs.postgres understands in the server log.

``LOGGING_CONF`` turns on what pgBadger needs (every statement with its duration,
checkpoints, lock waits, temporary files, autovacuum, connections).  :func:`run`
then produces statements with literals, errors of several SQLSTATEs, a lock wait,
a deadlock, a temporary file and a checkpoint.
"""

from __future__ import annotations

import threading
import time
from typing import Any

LOG_LINE_PREFIX = "%m [%p] %q%u@%d "
LOGGING_CONF = f"""
# --- upkeeper log analysis ---
log_min_duration_statement = 0
log_checkpoints = on
log_lock_waits = on
deadlock_timeout = '200ms'
log_temp_files = 0
log_autovacuum_min_duration = 0
log_connections = on
lc_messages = 'C'
log_line_prefix = '{LOG_LINE_PREFIX}'
"""

ERRORS = (
    ("SELECT * FROM no_such_table", "42P01"),
    ("SELECT 1/0", "22012"),
    ("INSERT INTO upk_items (id, name) VALUES (1, 'dup')", "23505"),
    ("SELEC 1", "42601"),
    ("SELECT no_such_column FROM upk_items", "42703"),
)


def run(connect: Any, statements: int = 400) -> dict[str, int]:
    """Run the workload with ``connect()`` → a psycopg autocommit connection; returns what was done."""
    done: dict[str, int] = {"statements": 0, "errors": 0}
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS upk_items")
        c.execute("CREATE TABLE upk_items (id int PRIMARY KEY, name text, qty int NOT NULL DEFAULT 0)")
        c.execute("INSERT INTO upk_items SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 2000) g")
        for i in range(statements):
            if i % 3 == 0:
                c.execute(f"SELECT name, qty FROM upk_items WHERE id = {i % 2000 + 1}")
            elif i % 3 == 1:
                c.execute(f"UPDATE upk_items SET qty = qty + {i % 5} WHERE id = {i % 2000 + 1}")
            else:
                c.execute(f"SELECT count(*) FROM upk_items WHERE name LIKE 'item {i % 9}%' AND qty > {i % 4}")
            done["statements"] += 1
        c.execute("SELECT pg_sleep(0.12)")  # a slow statement
        for sql, _code in ERRORS:
            try:
                c.execute(sql)
            except Exception:
                done["errors"] += 1
        # a temporary file: a sort larger than work_mem
        c.execute("SET work_mem = '64kB'")
        c.execute("SELECT g FROM generate_series(1, 100000) g ORDER BY g DESC LIMIT 1")
        c.execute("RESET work_mem")
    _lock_wait(connect)
    done["deadlocks"] = _deadlock(connect)
    with connect() as c:
        c.execute("CHECKPOINT")
    return done


def _lock_wait(connect: Any) -> None:
    """One session holds a row lock past deadlock_timeout while another waits for it."""
    with connect() as a, connect() as b:
        a.execute("BEGIN")
        a.execute("UPDATE upk_items SET name = 'held' WHERE id = 1")
        t = threading.Thread(target=lambda: b.execute("UPDATE upk_items SET name = 'waiter' WHERE id = 1"))
        t.start()
        time.sleep(0.5)
        a.execute("COMMIT")
        t.join(10)


def _deadlock(connect: Any) -> int:
    """Two sessions lock rows 2 and 3 in opposite orders: PostgreSQL kills one of them."""
    failures = []
    with connect() as a, connect() as b:
        a.execute("BEGIN")
        b.execute("BEGIN")
        a.execute("UPDATE upk_items SET qty = 1 WHERE id = 2")
        b.execute("UPDATE upk_items SET qty = 1 WHERE id = 3")

        def cross(conn: Any, row: int) -> None:
            try:
                conn.execute(f"UPDATE upk_items SET qty = 2 WHERE id = {row}")
                conn.execute("COMMIT")
            except Exception:
                failures.append(row)
                conn.execute("ROLLBACK")

        ta = threading.Thread(target=cross, args=(a, 3))
        ta.start()
        time.sleep(0.1)
        cross(b, 2)
        ta.join(10)
    return len(failures)
