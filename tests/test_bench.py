"""The benchmark's harness on a tiny budget (bench/run.py --quick), so it does not rot.

It races the real contenders (tweakops' pipeline, KerasTuner, Optuna, HalvingRandomSearchCV)
for one seed on two models and checks the results file it writes: every run is there,
its figures are consistent, and the overhead and crash sections hold real measurements.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("keras_tuner", reason="the benchmark's contenders: make bench-quick installs requirements-bench.txt")
pytest.importorskip("optuna", reason="the benchmark's contenders: make bench-quick installs requirements-bench.txt")


@pytest.mark.slow
def test_the_quick_benchmark_writes_consistent_results(tmp_path):
    results_dir = tmp_path / "results"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--results", str(results_dir),
                             "--data", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = results_dir.glob("*-quick.json")
    assert path.with_suffix(".png").stat().st_size > 10_000  # the accuracy-vs-time plot
    results = json.loads(path.read_text())
    assert results["quick"] is True and results["config"]["models"] == ["cnn_digits", "sk_tree"]
    assert results["config"]["seeds"] == [0]

    runs = {(r["model"], r["contender"]): r for r in results["runs"]}
    assert set(runs) == {("cnn_digits", c) for c in ("tweakops", "kt_random", "kt_hyperband", "optuna")} | {
        ("sk_tree", c) for c in ("tweakops", "optuna", "halving")}
    # interleaved: the contenders' turns rotate, so the two models do not start with the same one
    firsts = [min((r for r in results["runs"] if r["model"] == m), key=lambda r: r["order"])["contender"]
              for m in ("cnn_digits", "sk_tree")]
    assert firsts[0] != firsts[1]
    max_trials, caps = results["config"]["max_trials"], results["config"]["cap_s"]
    for (model, contender), run in runs.items():
        target = results["models"][model]["target"]
        cap = caps[model == "sk_tree"]
        assert run["wall_s"] <= cap + 5, run
        assert run["trials"] <= (10 ** 3 if contender == "halving" else max_trials)
        accuracies = [p["accuracy"] for p in run["trace"] if p["accuracy"] is not None]
        assert all(0.0 <= a <= 1.0 for a in accuracies)
        if accuracies:
            assert run["best_accuracy"] == max(accuracies)
        times = [p["t"] for p in run["trace"] if p["t"] is not None]
        assert times == sorted(times) and all(0 < t <= run["wall_s"] + 1 for t in times)
        if run["reached"]:
            assert run["best_accuracy"] >= target and 0 < run["time_to_target_s"] <= run["wall_s"] + 1
            assert 1 <= run["trials_to_target"] <= run["trials"]
        else:
            assert run["time_to_target_s"] is None and (run["best_accuracy"] or 0) < target
        if model == "sk_tree":
            assert run["epochs"] is None
        else:
            assert run["epochs"] >= 1 or not run["trace"]

    # the scikit-learn start tree is weak but a forest is cheap: the tuners get there in 15 s,
    # tweakops at least measures its baseline (its second attempt may pass the cap on a busy machine)
    assert runs[("sk_tree", "optuna")]["reached"] and runs[("sk_tree", "halving")]["reached"]
    assert runs[("sk_tree", "tweakops")]["trace"][0]["tweak"] == "baseline"
    start = runs[("cnn_digits", "tweakops")]["trace"][0]
    assert start["tweak"] == "baseline" and start["accuracy"] < results["models"]["cnn_digits"]["target"] - 0.10

    overhead = results["overhead"]
    assert overhead["attempts"] >= 1 and overhead["import_keras_s"] > 0
    assert overhead["inside_fit_median_s"] > 0 and overhead["outside_fit_median_s"] > 0
    assert 0 < overhead["outside_share_median"] < 1

    [crash] = results["crash"]["runs"]
    assert crash["restarted"] and crash["status"] == "trained"
    assert crash["epochs_recorded"] == results["crash"]["epochs"]  # no epoch lost or counted twice
    assert 1 <= crash["killed_after_epochs"] < crash["epochs"]
    assert 0 <= crash["resumed_from_epoch"] <= crash["killed_after_epochs"]
    assert crash["epochs_redone"] >= 1 and crash["uninterrupted_s"] > 0

    summary = {(r["model"], r["contender"]): r for r in results["summary"]}
    assert set(summary) == set(runs)
    assert summary[("sk_tree", "tweakops")]["ratio"] is None
    assert summary[("sk_tree", "optuna")]["ratio"] not in (None, "n/a")
    # the table it prints (the full run writes it into bench/README.md): start → target per model
    assert any(line.startswith("| sk_tree (0.") and "→ 0.96) | halving | 1/1 |" in line
               for line in result.stdout.splitlines()), result.stdout


def test_no_run_gets_a_warm_worker_another_run_started():
    """A shared worker folder (TWEAKOPS_WORKER_DIR, as this test suite sets) would let a
    tweakops run skip the TensorFlow import every contender pays: the bench drops it."""
    code = "import sys; sys.path.insert(0, 'bench'); import run; env = run.base_env(); " \
           "print('TWEAKOPS_WORKER_DIR' in env, env.get('TWEAKOPS_WORKER_IDLE'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TWEAKOPS_WORKER_DIR": "/tmp/shared-workers", "TWEAKOPS_WORKER_IDLE": "7"})
    assert result.stdout.split() == ["False", "7"], result.stderr[-2000:]
