"""Student vs teacher benchmark: fidelity (AUC gap, agreement) and per-event cost, for both heads, side by side.

Both models are timed the same way, in one run: one thread (``OMP_NUM_THREADS=1`` and friends set before numpy and
scikit-learn are imported, and the timing inside ``threadpool_limits(1)``), the same ``--rows`` held-out rows, the
same number of passes over them (``--passes``), every call timed on its own with ``perf_counter_ns``, the order of
the two blocks alternating pass by pass (teacher first, then student first), one untimed warm-up call each. The
teacher (HistGradientBoosting) gets each row as the ``(1, n_features)`` array ``predict_proba`` takes; the student
gets the same row as the facts dict the hot path holds, evaluated the way the hot path does
(``streaming.policy.LinearModel.score`` compiled through ``compile_policy``). Reported per call: p50, p90, p99, mean,
max, and the teacher ÷ student ratio at p50 and at p99. Targets (issue 6): AUC gap ≤ 0.02, student ≥ 100× faster
(p50 ratio).

Training set: the warehouse's ``training_events`` under ``--data-dir`` (the demo leaves one):

    .venv/bin/firstmile --data-dir /tmp/mldata demo        # once, ~1-3 min
    .venv/bin/python tests/benchmarks/bench_student.py --data-dir /tmp/mldata [--rows 500] [--passes 5]

Without a warehouse there (a fresh clone has no ``data/``) it trains on a synthetic set shaped like
``training_events`` (``tests/ml/conftest.synthetic_events``, ``--synthetic`` rows, default 20,000) and says so in
the report: the timing is the same code on the same kind of models, the AUCs are not the demo's.

Prints a report and writes JSON (default ``<data-dir>/reports/bench_student.json``).
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / scikit-learn load their OpenMP and BLAS runtimes.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from ml.bot_model import bot_matrix, train_bot_model  # noqa: E402
from ml.datasets import load_training_events, matrix, time_split  # noqa: E402
from ml.propensity import as_linear_model, rows_as_facts, student_batch_scores, train_propensity  # noqa: E402


def percentiles_us(ns: list[int]) -> dict[str, float]:
    ordered = sorted(ns)
    n = len(ordered)

    def q(p: float) -> float:
        return ordered[min(n - 1, int(p * n))] / 1000

    return {"n": n, "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99), "max_us": ordered[-1] / 1000,
            "mean_us": sum(ordered) / n / 1000}


def time_calls(fn: Any, inputs: list[Any], out: list[int]) -> None:
    clock = time.perf_counter_ns
    for item in inputs:
        t0 = clock()
        fn(item)
        out.append(clock() - t0)


def time_both(teacher: Any, student: Any, rows: list[np.ndarray], facts: list[dict[str, Any]], *,
              passes: int) -> tuple[dict[str, float], dict[str, float]]:
    """Per-call ns of ``teacher.predict_proba(row)`` and ``student.score(facts)`` over the same rows, ``passes``
    times each, single-threaded, block order alternating per pass."""
    assert len(rows) == len(facts)
    teacher_ns: list[int] = []
    student_ns: list[int] = []
    with threadpool_limits(1):
        teacher.predict_proba(rows[0])  # warm-up, untimed
        student.score(facts[0])
        for p in range(passes):
            blocks = [(teacher.predict_proba, rows, teacher_ns), (student.score, facts, student_ns)]
            for fn, inputs, out in (blocks if p % 2 == 0 else blocks[::-1]):
                gc.collect()
                time_calls(fn, inputs, out)
    return percentiles_us(teacher_ns), percentiles_us(student_ns)


def measure(name: str, teacher: Any, doc: dict[str, Any], x: np.ndarray, fidelity: dict[str, Any],
            *, rows: int, passes: int) -> dict[str, Any]:
    model = as_linear_model(doc, name=name)
    sample = x[:rows]
    facts = rows_as_facts(doc, sample)
    scores = np.array([model.score(f) for f in facts])
    parity = float(np.max(np.abs(scores - student_batch_scores(doc, sample))))
    one_row = [np.ascontiguousarray(r.reshape(1, -1)) for r in sample]
    teacher_t, student_t = time_both(teacher, model, one_row, facts, passes=passes)
    ratio_p50 = teacher_t["p50_us"] / student_t["p50_us"]
    ratio_p99 = teacher_t["p99_us"] / student_t["p99_us"]
    return {
        "head": name, "features": len(doc["features"]), "rows_timed": len(sample), "passes": passes,
        "teacher_iterations": int(getattr(teacher, "n_iter_", 0)),
        "teacher_auc": fidelity["teacher_auc"], "student_auc": fidelity["student_auc"],
        "auc_gap": fidelity["auc_gap"], "agreement": fidelity["fidelity_agreement"],
        "mae": fidelity["fidelity_mae"], "threshold": doc.get("threshold"),
        "teacher": teacher_t, "student": student_t,
        "ratio_p50": ratio_p50, "ratio_p99": ratio_p99,
        "hot_path_vs_batch_max_abs_diff": parity,
        "meets_targets": bool((fidelity["auc_gap"] or 0.0) <= 0.02 and ratio_p50 >= 100),
    }


def training_frame(data_dir: Path, synthetic: int | None) -> tuple[Any, str]:
    duckdb_path = data_dir / "warehouse.duckdb"
    if synthetic is None and duckdb_path.exists():
        return load_training_events(duckdb_path), f"warehouse {duckdb_path}"
    from tests.ml.conftest import synthetic_events

    n = synthetic or 20_000
    why = "--synthetic" if synthetic else f"no warehouse at {duckdb_path}"
    return synthetic_events(n, seed=7), f"SYNTHETIC ({why}; tests/ml/conftest.synthetic_events, {n} rows)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("FIRSTMILE_DATA_DIR", "/tmp/mldata"))
    parser.add_argument("--rows", type=int, default=500, help="held-out rows timed per model, the same for both "
                                                              "(default 500)")
    parser.add_argument("--passes", type=int, default=5, help="timed passes over those rows, each model (default 5)")
    parser.add_argument("--synthetic", type=int, default=None, metavar="ROWS",
                        help="train on a synthetic set of ROWS rows even if a warehouse exists")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    frame, source = training_frame(data_dir, args.synthetic)
    split = time_split(frame)
    started = time.perf_counter()
    propensity = train_propensity(split)
    bot = train_bot_model(split, history=frame)
    train_s = time.perf_counter() - started
    humans_test = split.test.filter(split.test["label_bot"] == 0)
    results = [measure("propensity", propensity.teacher, propensity.student_doc, matrix(humans_test),
                       propensity.metrics, rows=args.rows, passes=args.passes),
               measure("bot", bot.teacher, bot.student_doc, bot_matrix(split.test), bot.metrics, rows=args.rows,
                       passes=args.passes)]
    with threadpool_limits(1):
        pools = [{"api": p["internal_api"], "num_threads": p["num_threads"]} for p in threadpool_info()]
    report = {"benchmark": "student", "training_set": source, "data_dir": str(data_dir.resolve()),
              "rows": frame.height, "test_rows": split.test.height, "train_seconds_both_heads": train_s,
              "timing": {"threads": 1, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                         "thread_pools_while_timing": pools, "rows": args.rows, "passes": args.passes,
                         "order": "teacher block then student block, swapped every other pass"},
              "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
              "load_avg": os.getloadavg(), "heads": results}
    print(f"training set: {source}: {frame.height} events ({split.test.height} held out after {split.cutoff}); "
          f"both heads trained in {train_s:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"per call, one thread, the same rows for both (≤ {args.rows} held-out rows × {args.passes} passes), µs:")
    print(f"{'head':<11}{'teach AUC':>10}{'stud AUC':>10}{'gap':>8}{'agree':>7}"
          f"{'teacher p50':>13}{'p99':>9}{'student p50':>13}{'p99':>8}{'× p50':>8}{'× p99':>8}{'parity':>10}  ok")
    for r in results:
        t, s = r["teacher"], r["student"]
        print(f"{r['head']:<11}{r['teacher_auc']:>10.4f}{r['student_auc']:>10.4f}{r['auc_gap']:>8.4f}"
              f"{r['agreement']:>7.3f}{t['p50_us']:>13.1f}{t['p99_us']:>9.1f}{s['p50_us']:>13.2f}{s['p99_us']:>8.2f}"
              f"{r['ratio_p50']:>7.0f}×{r['ratio_p99']:>7.0f}×{r['hot_path_vs_batch_max_abs_diff']:>10.1e}"
              f"  {'yes' if r['meets_targets'] else 'NO'}")
    print("× = teacher ÷ student per call; targets: gap ≤ 0.02, × p50 ≥ 100")
    out = args.json or data_dir / "reports" / "bench_student.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    print(f"report: {out}")
    print(json.dumps({"training_set": source, **{r["head"]: {
        "teacher_p50_us": round(r["teacher"]["p50_us"], 1), "teacher_p99_us": round(r["teacher"]["p99_us"], 1),
        "student_p50_us": round(r["student"]["p50_us"], 2), "student_p99_us": round(r["student"]["p99_us"], 2),
        "ratio_p50": round(r["ratio_p50"]), "ratio_p99": round(r["ratio_p99"]), "auc_gap": r["auc_gap"]}
        for r in results}}))
    return 0 if all(r["meets_targets"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
