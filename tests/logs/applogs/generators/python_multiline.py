"""Python exceptions whose message has several lines: SQLAlchemy around psycopg (a unique violation, a refused
connection; its DETAIL, [SQL: …], "(Background on this error at: …)" lines), logged by `logging.exception` as text
(``text``) or as JSON lines with the traceback in ``exc_info`` (``json``), then an uncaught ValueError of two lines.

Usage: python python_multiline.py text|json N DSN   (DSN: a PostgreSQL a table ``u`` can be made in)"""
import json
import logging
import sys

import sqlalchemy as sa

fmt, n, dsn = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class JsonFormatter(logging.Formatter):
    def format(self, r: logging.LogRecord) -> str:
        d = {"time": self.formatTime(r), "level": r.levelname, "logger": r.name, "message": r.getMessage()}
        if r.exc_info:
            d["exc_info"] = self.formatException(r.exc_info)
        return json.dumps(d)


h = logging.StreamHandler(sys.stdout)
h.setFormatter(JsonFormatter() if fmt == "json" else
               logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
logging.basicConfig(handlers=[h], level=logging.INFO)
log = logging.getLogger("app")
e = sa.create_engine(dsn)
with e.begin() as c:
    c.execute(sa.text("create table if not exists u (id int primary key, email text unique)"))
    c.execute(sa.text("insert into u values (1, 'a@b.c') on conflict do nothing"))
try:
    with e.begin() as c:
        c.execute(sa.text("insert into u values (:i, :m)"), {"i": 100 + n, "m": "a@b.c"})
except Exception:
    log.exception("signup failed for user %d", n)
log.info("next request")
try:
    sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/postgres").connect()
except Exception:
    log.exception("db down")
try:
    raise ValueError(f"bad input {n}\nsecond line")
except ValueError:
    log.exception("parse failed")
if fmt == "text":
    sys.stdout.flush()
    raise ValueError(f"uncaught {n}\nsecond line {n}")
