"""Student vs teacher benchmark: fidelity (AUC gap, agreement) and per-event cost, for both heads, side by side.

The teachers (HistGradientBoosting) are timed on single-row ``predict_proba`` — once with scikit-learn's default
OpenMP pool and once pinned to one thread (its best single-event latency) — and the distilled students the way the
hot path runs them: ``streaming.policy.LinearModel.score`` on a facts dict, compiled through ``compile_policy``.
Targets (issue 6): AUC gap ≤ 0.02, student ≥ 100× faster than the teacher.

Needs a warehouse with ``training_events`` (the demo leaves one):

    .venv/bin/firstmile --data-dir /tmp/mldata demo        # once, ~1-3 min
    .venv/bin/python tests/benchmarks/bench_student.py --data-dir /tmp/mldata [--json report.json]

Prints a report and writes JSON (default ``<data-dir>/reports/bench_student.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ml.bot_model import bot_matrix, train_bot_model  # noqa: E402
from ml.datasets import load_training_events, matrix, time_split  # noqa: E402
from ml.propensity import as_linear_model, rows_as_facts, student_batch_scores, train_propensity  # noqa: E402


def _median_us(fn: Any, items: list[Any], *, inner: int = 1) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        for _ in range(inner):
            fn(item)
        times.append((time.perf_counter() - start) / inner)
    return float(np.median(times) * 1e6)


def measure(name: str, teacher: Any, doc: dict[str, Any], x: np.ndarray, fidelity: dict[str, Any],
            *, rows: int) -> dict[str, Any]:
    model = as_linear_model(doc, name=name)
    sample = x[:rows]
    facts = rows_as_facts(doc, sample)
    scores = np.array([model.score(f) for f in facts])
    parity = float(np.max(np.abs(scores - student_batch_scores(doc, sample))))
    one_row = [r.reshape(1, -1) for r in sample[: min(rows, 100)]]
    teacher_default = _median_us(teacher.predict_proba, one_row)
    with threadpool_limits(1):
        teacher_single = _median_us(teacher.predict_proba, one_row)
    student = _median_us(model.score, facts, inner=20)
    best_teacher = min(teacher_default, teacher_single)
    return {
        "head": name, "features": len(doc["features"]),
        "teacher_auc": fidelity["teacher_auc"], "student_auc": fidelity["student_auc"],
        "auc_gap": fidelity["auc_gap"], "agreement": fidelity["fidelity_agreement"],
        "mae": fidelity["fidelity_mae"], "threshold": doc.get("threshold"),
        "teacher_us_default_threads": teacher_default, "teacher_us_one_thread": teacher_single,
        "student_us": student, "speedup_vs_best_teacher": best_teacher / student,
        "hot_path_vs_batch_max_abs_diff": parity,
        "meets_targets": bool((fidelity["auc_gap"] or 0.0) <= 0.02 and best_teacher / student >= 100),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("FIRSTMILE_DATA_DIR", "/tmp/mldata"))
    parser.add_argument("--rows", type=int, default=500, help="events timed per model (default 500)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    duckdb_path = Path(args.data_dir) / "warehouse.duckdb"
    if not duckdb_path.exists():
        print(f"no warehouse at {duckdb_path}: run `.venv/bin/firstmile --data-dir {args.data_dir} demo` first",
              file=sys.stderr)
        return 2
    frame = load_training_events(duckdb_path)
    split = time_split(frame)
    started = time.perf_counter()
    propensity = train_propensity(split)
    bot = train_bot_model(split, history=frame)
    train_s = time.perf_counter() - started
    humans_test = split.test.filter(split.test["label_bot"] == 0)
    results = [measure("propensity", propensity.teacher, propensity.student_doc, matrix(humans_test),
                       propensity.metrics, rows=args.rows),
               measure("bot", bot.teacher, bot.student_doc, bot_matrix(split.test), bot.metrics, rows=args.rows)]
    report = {"data_dir": str(Path(args.data_dir).resolve()), "rows": frame.height, "test_rows": split.test.height,
              "train_seconds_both_heads": train_s, "python": platform.python_version(),
              "machine": platform.machine(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
              "heads": results}
    print(f"training set: {frame.height} events ({split.test.height} held out after {split.cutoff}); "
          f"both heads trained in {train_s:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    header = (f"{'head':<11}{'teacher AUC':>12}{'student AUC':>12}{'gap':>8}{'agree':>7}{'teacher µs':>12}"
              f"{'(1 thread)':>11}{'student µs':>11}{'speedup':>9}{'parity':>10}  ok")
    print(header)
    for r in results:
        print(f"{r['head']:<11}{r['teacher_auc']:>12.4f}{r['student_auc']:>12.4f}{r['auc_gap']:>8.4f}"
              f"{r['agreement']:>7.3f}{r['teacher_us_default_threads']:>12.0f}{r['teacher_us_one_thread']:>11.0f}"
              f"{r['student_us']:>11.2f}{r['speedup_vs_best_teacher']:>8.0f}×{r['hot_path_vs_batch_max_abs_diff']:>10.1e}"
              f"  {'yes' if r['meets_targets'] else 'NO'}")
    print("speedup is against the teacher's best single-row latency; targets: gap ≤ 0.02, speedup ≥ 100×")
    out = args.json or Path(args.data_dir) / "reports" / "bench_student.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(f"report: {out}")
    return 0 if all(r["meets_targets"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
