"""`make reliability`: the reliability and security suite at full size, then a table of every figure.

    .venv/bin/python tests/reliability/run_all.py            # full sizes (tens of minutes on 2 cores)
    .venv/bin/python tests/reliability/run_all.py --ci       # the CI sizes (~4-5 min)
    .venv/bin/python tests/reliability/run_all.py -- -k poison   # extra pytest arguments after --

Sizes already set in the environment win over the full sizes below. Writes figures.jsonl, figures.json,
figures.md and junit.xml to --out (default data/reports/reliability) and prints the markdown table.

The record: a full-size run also merges its figures into the committed tests/reliability/figures.json (what the
README's numbers can be checked against): each figure with the sizes it was measured at, the date, the git commit
and whether the run was CI or full size, and each test's outcome likewise. A figure replaces the recorded one of
the same scenario; the figures of scenarios the run did not measure stay as they were. A CI-size run records only
when asked (--record [PATH]) and never replaces a full-size figure or outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: The committed record of the figures (see the module docstring).
RECORD = REPO / "tests" / "reliability" / "figures.json"

#: FIRSTMILE_RELIABILITY_<NAME> at full size (the CI defaults live in each test module).
FULL_SIZES = {
    "EXAMPLES": 100_000,         # 5 consent, property-based: 100k hypothesis cases (≈ 3M decided events, ≈ 16 min)
    "CRASH_EVENTS": 200_000,     # 1 worker crashes
    "CRASH_KILLS": 5,
    "CRASH_RATE": 5000,
    "REBALANCE_EVENTS": 100_000,  # 2 rebalance storm
    "REBALANCE_CYCLES": 20,
    "STATELOSS_DEVICES": 2000,   # 3 state loss
    "TRAFFIC_USERS": 2000,       # 4, 6, 8, 9: the shared hostile stream
    "BACKFILL_ORDERS": 5000,
    "BURST": 40_000,             # 9: a year of backfill in one burst through the lake sink
    "ML_BOT_HEAD": 1,            # 6: train the bot head too (a second MLflow run to scan)
    "ERASED": 100,               # 7 erasure
    "ERASURE_USERS": 1000,
    "ABUSE_CASES": 10_000,       # 11 collector abuse: schemathesis cases (≈ 4 min)
    "ABUSE_SECONDS": 30,         # 11: seconds of the legitimate key alone, then under the flood
    "FUZZ_RUNS": 200_000,        # 11: atheris runs on the event parsers (≈ 40 s)
}


#: The sizes each scenario's figures depend on, by the scenario's first word (figure(scenario=...)); a scenario not
#: listed is stamped with every size the run resolved.
SCENARIO_SIZES: dict[str, tuple[str, ...]] = {
    "1": ("CRASH_EVENTS", "CRASH_KILLS", "CRASH_RATE"),
    "1b": (),  # a whole simulated day of 60 users, at every size
    "2": ("REBALANCE_EVENTS", "REBALANCE_CYCLES", "REBALANCE_PERIOD_S"),
    "3": ("STATELOSS_DEVICES",),
    "4": ("TRAFFIC_USERS", "BACKFILL_ORDERS"),
    "5": ("EXAMPLES",),
    "6": ("TRAFFIC_USERS", "BACKFILL_ORDERS", "ML_BOT_HEAD"),
    "7": ("ERASED", "ERASURE_USERS"),
    "8": ("TRAFFIC_USERS", "BACKFILL_ORDERS"),
    "9": ("TRAFFIC_USERS", "BACKFILL_ORDERS", "BURST"),
    "10": (),
    "11": ("ABUSE_CASES", "ABUSE_SECONDS", "FUZZ_RUNS"),
    "shared": ("TRAFFIC_USERS", "BACKFILL_ORDERS", "ML_BOT_HEAD"),
}


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def provenance(ci: bool, env: dict[str, str]) -> dict[str, Any]:
    """When, on what and at which size a run measures (taken as it starts)."""
    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if not line.endswith(str(RECORD.relative_to(REPO)))]
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git("rev-parse", "HEAD") or None,
            "uncommitted_changes": bool(changed), "size": "ci" if ci else "full",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_1m_at_start": round(os.getloadavg()[0], 2)},
            "env": {k: v for k, v in sorted(env.items())
                    if k.startswith("FIRSTMILE_RELIABILITY_") and k != "FIRSTMILE_RELIABILITY_FIGURES"}}


def measured_at(figure: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """A figure's provenance: the run's, with the sizes this scenario depends on (as the test resolved them, else
    as set in the run's environment, else the test module's CI default)."""
    resolved = figure.get("_sizes") or {}
    names = SCENARIO_SIZES.get(str(figure["scenario"]).split()[0], tuple(resolved))
    sizes = {n: resolved.get(n, run["env"].get(f"FIRSTMILE_RELIABILITY_{n}", "CI default")) for n in names}
    return {k: v for k, v in run.items() if k != "env"} | {"sizes": sizes}


def record(path: Path, figures: list[dict[str, Any]], results: dict[str, str], run: dict[str, Any]) -> list[str]:
    """Merge this run's figures and test outcomes into the record at ``path``; returns what a CI run was not
    allowed to replace."""
    old = json.loads(path.read_text()) if path.exists() else {}
    kept: list[str] = []

    def may_replace(previous: dict[str, Any] | None) -> bool:
        return previous is None or run["size"] == "full" or previous["measured"]["size"] != "full"

    recorded = {f["scenario"]: f for f in old.get("figures", [])}
    new: dict[str, dict[str, Any]] = {}
    for f in figures:
        if not may_replace(recorded.get(f["scenario"])):
            kept.append(f["scenario"])
            continue
        values = {k: v for k, v in f.items() if k not in ("scenario", "summary", "_sizes")}
        new[f["scenario"]] = {"scenario": f["scenario"], "summary": f["summary"], "values": values,
                              "measured": measured_at(f, run)}
    merged = {**recorded, **new}
    tests = dict(old.get("tests", {}))
    for name, outcome in results.items():
        if may_replace(tests.get(name)):
            tests[name] = {"outcome": outcome, "measured": {k: run[k] for k in ("date", "commit", "size")}}
        else:
            kept.append(name)

    def order(name: str) -> tuple[int, str]:
        first = name.split()[0]
        digits = "".join(c for c in first if c.isdigit())
        return (int(digits) if digits else 1_000, name)

    path.write_text(json.dumps({
        "about": "Reliability figures (tests/reliability/run_all.py): each with the sizes, date, commit and CI or "
                 "full size it was measured at; README.md's figures are checked against this file.",
        "figures": [merged[k] for k in sorted(merged, key=order)],
        "tests": dict(sorted(tests.items())),
    }, indent=2, default=str) + "\n")
    return kept


def outcomes(junit: Path) -> dict[str, str]:
    if not junit.exists():
        return {}
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        status = "passed"
        for child in case:
            if child.tag == "skipped":
                status = "xfail" if "xfail" in (child.get("type", "") + child.get("message", "")) else "skipped"
            elif child.tag in ("failure", "error"):
                status = "XPASS(strict)" if "XPASS" in (child.get("message") or "") else child.tag
        out[name] = status
    return out


def table(figures: list[dict], results: dict[str, str], seconds: float, ci: bool) -> str:
    lines = [f"# Reliability figures ({'CI' if ci else 'full'} sizes, {seconds / 60:.1f} min)", "",
             "| scenario | run | figures |", "|---|---|---|"]
    for f in figures:
        values = ", ".join(f"{k}={v}" for k, v in f.items() if k not in ("scenario", "summary", "_sizes"))
        lines.append(f"| {f['scenario']} | {f['summary']} | {values} |")
    lines += ["", "| test | outcome |", "|---|---|"]
    lines += [f"| {name} | {status} |" for name, status in sorted(results.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ci", action="store_true", help="CI sizes instead of the full sizes")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "reports" / "reliability")
    parser.add_argument("--record", nargs="?", type=Path, const=RECORD, default=None, metavar="PATH",
                        help=f"merge the figures into the record (default {RECORD.relative_to(REPO)}); a full-size "
                             "run does unless --no-record, a CI run only when asked")
    parser.add_argument("--no-record", action="store_true", help="do not touch the record")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    figures_path = args.out / "figures.jsonl"
    figures_path.unlink(missing_ok=True)
    env = dict(os.environ, FIRSTMILE_RELIABILITY_FIGURES=str(figures_path))
    if not args.ci:
        for name, value in FULL_SIZES.items():
            env.setdefault(f"FIRSTMILE_RELIABILITY_{name}", str(value))
    junit = args.out / "junit.xml"
    run = provenance(args.ci, env)
    target = None if args.no_record else args.record or (None if args.ci else RECORD)
    cmd = [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "-o", "timeout=5400",
           f"--junitxml={junit}"]
    # test paths among the extra arguments replace the folder
    cmd += args.pytest_args if any(a.startswith("tests/") for a in args.pytest_args) else \
        ["tests/reliability", *args.pytest_args]
    started = time.monotonic()
    code = subprocess.call(cmd, cwd=REPO, env=env)
    seconds = time.monotonic() - started
    figures = [json.loads(line) for line in figures_path.read_text().splitlines()] if figures_path.exists() else []
    results = outcomes(junit)
    md = table(figures, results, seconds, args.ci)
    (args.out / "figures.md").write_text(md)
    (args.out / "figures.json").write_text(json.dumps({"ci": args.ci, "seconds": round(seconds, 1),
                                                       "figures": figures, "tests": results}, indent=2, default=str))
    print("\n" + md)
    print(f"written to {args.out}/figures.md and figures.json")
    if target is not None and figures:
        kept = record(target, figures, results, run)
        print(f"recorded in {target} ({run['size']} size, commit {str(run['commit'])[:12]})"
              + (f"; full-size record kept for {len(kept)}: {', '.join(kept)}" if kept else ""))
    elif target is None:
        why = "--no-record" if args.no_record else "a CI run records only with --record"
        print(f"not recorded in {RECORD.relative_to(REPO)} ({why})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
