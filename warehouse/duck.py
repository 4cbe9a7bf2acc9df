"""DuckDB access. A DuckDB file has one writer: readers open it read-only and never overlap a ``dbt build``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb


@contextmanager
def connect(path: Path | str, *, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    if read_only and not Path(path).exists():
        raise FileNotFoundError(f"warehouse file {path} does not exist: run the warehouse build (dbt) first")
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute("select count(*) from information_schema.tables where table_name = ?", [name]).fetchone()
    return bool(row and row[0])
