"""Connecting to a PostgreSQL target, with errors that say what to fix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.config.targets import PostgresTarget
from upkeeper.errors import TaskError
from upkeeper.redact import redact

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")


def describe_pg_error(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else type(exc).__name__
    diag = getattr(exc, "diag", None)
    hint = getattr(diag, "message_hint", None) if diag is not None else None
    if hint:
        text += f" ({hint})"
    return redact(text)


@contextlib.contextmanager
def connect(
    target: PostgresTarget,
    dbname: str | None = None,
    *,
    autocommit: bool = True,
    statement_timeout_ms: int | None = None,
    notices: list[str] | None = None,
) -> Iterator[psycopg.Connection[Any]]:
    """Open a connection; connection failures become a TaskError naming the server."""
    params = target.libpq_params(dbname)
    try:
        conn = psycopg.connect(**params, autocommit=autocommit)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise TaskError(
            f"cannot connect to PostgreSQL {target.display()} (database {params['dbname']}): "
            f"{describe_pg_error(exc)}",
            "Try: check host, port, user and password of the target, and that the server is running",
        ) from None
    if notices is not None:
        conn.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
    try:
        if statement_timeout_ms is not None:
            conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(statement_timeout_ms)))
        yield conn
    finally:
        conn.close()


def qualified(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
