"""Run the real dbt CLI against a landing zone and a DuckDB file in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DBT = Path(sys.executable).with_name("dbt")


def run_dbt(command: list[str], *, lake: Path, workdir: Path, vars_yaml: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``dbt <command> --project-dir dbt_project --profiles-dir dbt_project`` with paths under ``workdir`` (the
    DuckDB file, the target and logs, the erasure trail ``workdir/regulations``)."""
    env = dict(os.environ,
               FIRSTMILE_DUCKDB_PATH=str(workdir / "warehouse.duckdb"),
               FIRSTMILE_LAKE_DIR=str(lake),
               FIRSTMILE_REGULATIONS_DIR=str(workdir / "regulations"),
               DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    args = [str(DBT), *command, "--project-dir", "dbt_project", "--profiles-dir", "dbt_project",
            "--target-path", str(workdir / "target"), "--log-path", str(workdir / "logs")]
    if vars_yaml:
        args += ["--vars", vars_yaml]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def build_models(model: str, *, lake: Path, workdir: Path, full_refresh: bool = False) -> None:
    """``dbt build`` of ``model`` and everything it reads (seeds, staging), with only the tests whose parents are all
    selected; fails with dbt's output if the build does."""
    command = ["build", "--select", f"+{model}", "--indirect-selection", "cautious"]
    result = run_dbt([*command, "--full-refresh"] if full_refresh else command, lake=lake, workdir=workdir)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


#: Tables whose content legitimately differs between an incremental and a full build (bookkeeping).
BOOKKEEPING = frozenset({"stg_lake_files"})


def table_differences(left: Path, right: Path, tables: list[str] | None = None,
                      float_digits: int = 9) -> dict[str, str]:
    """Compare two DuckDB files built from the same lake, table by table (columns by name, rows as multisets).

    Returns ``{table: what differs}``; empty when identical. Doubles are compared rounded to ``float_digits``
    significant-ish decimals (sums in another order). Views and :data:`BOOKKEEPING` tables are skipped.
    """
    import duckdb

    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    con.execute(f"attach '{left}' as l (read_only)")
    con.execute(f"attach '{right}' as r (read_only)")
    listed = {}
    for side in ("l", "r"):
        listed[side] = {t for (t,) in con.execute(
            "select table_name from duckdb_tables() where database_name = ? and schema_name = 'main'",
            [side]).fetchall()} - BOOKKEEPING
    differences: dict[str, str] = {}
    names = sorted(listed["l"] | listed["r"]) if tables is None else tables
    for table in names:
        if table not in listed["l"] or table not in listed["r"]:
            differences[table] = "missing on one side"
            continue
        columns = {}
        for side in ("l", "r"):
            columns[side] = dict(con.execute(
                "select column_name, data_type from duckdb_columns() where database_name = ? and table_name = ?",
                [side, table]).fetchall())
        if columns["l"] != columns["r"]:
            differences[table] = f"columns differ: {sorted(set(columns['l'].items()) ^ set(columns['r'].items()))}"
            continue

        def expr(name: str, dtype: str) -> str:
            quoted = f'"{name}"'
            return f"round({quoted}, {float_digits})" if dtype in ("DOUBLE", "FLOAT") else quoted

        select = ", ".join(expr(n, t) for n, t in sorted(columns["l"].items()))
        counts = con.execute(f"""
            select
                (select count(*) from (select {select} from l.main."{table}" except all
                                       select {select} from r.main."{table}")),
                (select count(*) from (select {select} from r.main."{table}" except all
                                       select {select} from l.main."{table}")),
                (select count(*) from l.main."{table}"), (select count(*) from r.main."{table}")
        """).fetchone()
        if counts and (counts[0] or counts[1]):
            differences[table] = (f"{counts[0]} rows only left, {counts[1]} only right "
                                  f"(left {counts[2]} rows, right {counts[3]})")
    con.close()
    return differences
