"""Paging through a table of the state database by id: the one query behind every reader that
follows a log (events, messages, reports, merge events) with the last id it got.

Stdlib only. Table and column names come from our code, never from input; values are bound.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def rows_after(
    conn: sqlite3.Connection,
    table: str,
    columns: str,
    *,
    after_id: int = 0,
    limit: int | None = None,
    **equal: Any,
) -> list[Any]:
    """Rows of ``table`` (``columns``) with ``id > after_id``, oldest first, at most ``limit``
    (None or 0: all); each ``column=value`` of ``equal`` filters on equality (a tuple: on
    being one of its values), a None value or an empty tuple not at all (``session_id=None``:
    every session's)."""
    sql = f"SELECT {columns} FROM {table} WHERE id > ?"
    args: list[Any] = [after_id]
    for column, value in equal.items():
        if isinstance(value, tuple) and value:
            sql += f" AND {column} IN ({', '.join('?' * len(value))})"
            args.extend(value)
        elif value is not None and not isinstance(value, tuple):
            sql += f" AND {column} = ?"
            args.append(value)
    sql += " ORDER BY id"
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    return conn.execute(sql, args).fetchall()
