"""Warm starts, the trained weights an attempt leaves, and the time cap (real TensorFlow).

The harness runs tests/fixtures/harness/warm_mlp.py (a small Dense model on the digits)
as the runners run it, with TWEAKOPS_WEIGHTS_OUT, TWEAKOPS_WARM_FROM /
TWEAKOPS_WARM_EPOCHS and TWEAKOPS_DEADLINE set the way train.py sets them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_harness import FIXTURES, HARNESS, harness_env

PARENT_EPOCHS = 3


def run(tmp_path: Path, script: str = "warm_mlp.py", **extra) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run([sys.executable, str(HARNESS), script], cwd=FIXTURES, env=harness_env(tmp_path, **extra),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = tmp_path / "metrics.json"
    return result, json.loads(metrics.read_text()) if metrics.exists() else {}


def notes(result, start: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(f"tweakops: {start}")]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """Attempt 1: warm_mlp.py trained for PARENT_EPOCHS epochs, its weights written."""
    work = tmp_path_factory.mktemp("parent")
    weights = work / "weights" / "attempt-1.weights.h5"
    _, metrics = run(work, TWEAKOPS_ATTEMPT="1", TWEAKOPS_WEIGHTS_OUT=str(weights), EPOCHS=str(PARENT_EPOCHS))
    return weights, metrics


def first_accuracy(metrics: dict) -> float:
    return metrics["epochs"][0]["accuracy"]


def test_the_trained_weights_and_their_layer_list_are_written(parent):
    weights, metrics = parent
    assert weights.is_file() and not list(weights.parent.glob(".*"))  # no temporary file left
    assert metrics["weights"] == str(weights) and metrics["epochs_trained"] == PARENT_EPOCHS
    layers = json.loads(weights.with_suffix(".json").read_text())
    assert layers["epochs_trained"] == PARENT_EPOCHS and layers["attempt"] == 1
    assert layers["layers"] == [{"name": "dense", "class": "Dense", "shapes": [[64, 32], [32]]},
                                {"name": "dense_1", "class": "Dense", "shapes": [[32, 10], [10]]}]


def test_a_warm_start_of_the_same_model_continues_where_the_parent_stopped(parent, tmp_path):
    weights, fresh = parent
    result, metrics = run(tmp_path, TWEAKOPS_WARM_FROM=str(weights), TWEAKOPS_WARM_EPOCHS=str(PARENT_EPOCHS),
                          EPOCHS="5")
    assert notes(result, "warm start") == [
        "tweakops: warm start from attempt 1's weights: 2 of 2 layers reused, continuing at epoch 3"]
    assert metrics["warm_start"] == {"from": str(weights), "layers": 2, "of": 2, "widened": 0, "initial_epoch": 3}
    assert [e["epoch"] for e in metrics["epochs"]] == [4, 5]
    assert metrics["resumed_from_epoch"] == 0 and "resuming" not in result.stdout
    # the parent's training carries over: far above what a fresh model learns in its first epoch
    assert first_accuracy(metrics) > first_accuracy(fresh) + 0.3
    assert first_accuracy(metrics) > fresh["epochs"][-1]["accuracy"]


def test_an_inserted_layer_keeps_the_others_and_trains_all_epochs(parent, tmp_path):
    weights, fresh = parent
    result, metrics = run(tmp_path, TWEAKOPS_WARM_FROM=str(weights), TWEAKOPS_WARM_EPOCHS=str(PARENT_EPOCHS),
                          EPOCHS="2", EXTRA="1", UNBUILT="1")  # dense, dense_1 (new), dense_2 (the parent's dense_1)
    assert notes(result, "warm start") == [
        "tweakops: warm start from attempt 1's weights: 2 of 3 layers reused, training from epoch 1"]
    assert metrics["warm_start"]["layers"] == 2 and metrics["warm_start"]["of"] == 3
    assert metrics["warm_start"]["initial_epoch"] == 0
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]


def test_a_wider_layer_starts_from_its_narrower_parent(parent, tmp_path):
    weights, fresh = parent
    result, metrics = run(tmp_path, TWEAKOPS_WARM_FROM=str(weights), TWEAKOPS_WARM_EPOCHS=str(PARENT_EPOCHS),
                          EPOCHS="1", WIDTH="48")
    assert metrics["warm_start"] == {"from": str(weights), "layers": 2, "of": 2, "widened": 2, "initial_epoch": 0}
    assert "2 widened" in notes(result, "warm start")[0]
    assert first_accuracy(metrics) > first_accuracy(fresh) + 0.3


@pytest.mark.parametrize("damage", ["missing", "not hdf5"])
def test_weights_that_cannot_be_read_train_from_scratch_with_one_line(parent, tmp_path, damage):
    weights, fresh = parent
    broken = tmp_path / "attempt-1.weights.h5"
    if damage == "not hdf5":
        broken.write_text("not an HDF5 file")
        broken.with_suffix(".json").write_text(weights.with_suffix(".json").read_text())
    result, metrics = run(tmp_path, TWEAKOPS_WARM_FROM=str(broken), TWEAKOPS_WARM_EPOCHS="3", EPOCHS="1")
    lines = notes(result, "no warm start")
    assert len(lines) == 1 and lines[0].endswith("training from scratch"), result.stderr
    assert "warm_start" not in metrics
    assert [e["epoch"] for e in metrics["epochs"]] == [1]
    assert abs(first_accuracy(metrics) - first_accuracy(fresh)) < 0.02  # the very same fresh start


def test_a_subclassed_model_warm_starts_and_trains_at_least_one_epoch(parent, tmp_path):
    weights, _ = parent
    out = tmp_path / "attempt-2.weights.h5"
    result, metrics = run(tmp_path, "subclassed.py", TWEAKOPS_WARM_FROM=str(weights), TWEAKOPS_WARM_EPOCHS="3",
                          TWEAKOPS_WEIGHTS_OUT=str(out))
    # its two Dense layers are the parent's; it asks for 2 epochs, fewer than the parent's 3
    assert "2 of 2 layers reused, continuing at epoch 1 (the script asks for 2 epochs and the parent trained 3: " \
           "one more epoch)" in notes(result, "warm start")[0]
    assert [e["epoch"] for e in metrics["epochs"]] == [2] and metrics["epochs_trained"] == 2
    assert [layer["name"] for layer in json.loads(out.with_suffix(".json").read_text())["layers"]] == \
        ["dense", "dense_1"]


def test_keras2_writes_and_warm_starts_on_tf_keras(tmp_path):
    weights = tmp_path / "attempt-1.weights.h5"
    keras2 = {"TWEAKOPS_RUNTIME": "keras2", "TF_USE_LEGACY_KERAS": "1", "UNBUILT": "1"}
    _, fresh = run(tmp_path / "a1", TWEAKOPS_ATTEMPT="1", TWEAKOPS_WEIGHTS_OUT=str(weights), EPOCHS="2", **keras2)
    assert fresh["epochs_trained"] == 2
    assert json.loads(weights.with_suffix(".json").read_text())["runtime"] == "keras2"
    result, metrics = run(tmp_path / "a2", TWEAKOPS_WARM_FROM=str(weights), TWEAKOPS_WARM_EPOCHS="2", EPOCHS="3",
                          **keras2)
    assert "2 of 2 layers reused, continuing at epoch 2" in notes(result, "warm start")[0]
    assert [e["epoch"] for e in metrics["epochs"]] == [3] and metrics["resumed_from_epoch"] == 0
    assert first_accuracy(metrics) > first_accuracy(fresh) + 0.2


def test_the_build_check_neither_warm_starts_nor_writes_weights(parent, tmp_path):
    weights, _ = parent
    out = tmp_path / "out.weights.h5"
    result, _ = run(tmp_path, TWEAKOPS_BUILD_CHECK="1", TWEAKOPS_WARM_FROM=str(weights),
                    TWEAKOPS_WEIGHTS_OUT=str(out), EPOCHS="50")
    assert "tweakops: build check passed" in result.stderr
    assert not notes(result, "warm start") and not notes(result, "no warm start")
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_the_time_cap_stops_a_long_fit_and_keeps_its_best_epoch(tmp_path):
    out = tmp_path / "attempt-1.weights.h5"
    # a noisy run (high rate, 200 samples) whose validation accuracy plateaus: the best epoch
    # is rarely the last. DEADLINE_IN: the cap 3 s after the script starts training
    result, metrics = run(tmp_path, EPOCHS="100000", TRAIN="200", LR="1.0", DEADLINE_IN="3",
                          TWEAKOPS_WEIGHTS_OUT=str(out))
    epochs = [e for e in metrics["epochs"] if not e.get("cut")]
    assert 2 <= len(epochs) < 1000
    best = max(epochs, key=lambda e: e["val_accuracy"])  # the first of the best
    last = epochs[-1]
    where = f"in epoch {last['epoch'] + 1}" if metrics["epochs"][-1].get("cut") else f"after epoch {last['epoch']}"
    assert notes(result, "stopped at the time cap") == [
        f"tweakops: stopped at the time cap (MAX_MINUTES) {where} of 100000; "
        f"kept epoch {best['epoch']} (val_accuracy {best['val_accuracy']:.4f})"]
    assert metrics["stopped_at_deadline"] is True and metrics["kept_epoch"] == best["epoch"]
    assert metrics["epochs_trained"] == best["epoch"]
    # the script evaluates its validation data: it sees the kept epoch's weights
    assert abs(metrics["evaluate"]["loss"] - best["val_loss"]) < 1e-4
    if best is not last:
        assert abs(metrics["evaluate"]["loss"] - last["val_loss"]) > 1e-4


def test_a_cap_inside_the_first_epoch_stops_it_and_the_script_goes_on(tmp_path):
    result, metrics = run(tmp_path, EPOCHS="50", DEADLINE_IN="0")
    assert notes(result, "stopped at the time cap") == [
        "tweakops: stopped at the time cap (MAX_MINUTES) in epoch 1 of 50, before an epoch finished"]
    assert metrics["stopped_at_deadline"] is True and "kept_epoch" not in metrics
    assert [(e["epoch"], e.get("cut")) for e in metrics["epochs"]] == [(1, True)]
    assert "Validation accuracy" in result.stdout


@pytest.mark.slow
def test_a_killed_warm_start_resumes_from_its_checkpoint(parent, tmp_path):
    weights, _ = parent
    env = harness_env(tmp_path, TWEAKOPS_WARM_FROM=str(weights), TWEAKOPS_WARM_EPOCHS="3", EPOCHS="60")
    proc = subprocess.Popen([sys.executable, str(HARNESS), "warm_mlp.py"], cwd=FIXTURES, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if len(json.loads((tmp_path / "metrics.json").read_text())["epochs"]) >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((tmp_path / "metrics.json").read_text())["epochs"][-1]["epoch"]
    assert 5 <= killed_at < 60, "the run finished before the kill: make it longer"
    result = subprocess.run([sys.executable, str(HARNESS), "warm_mlp.py"], cwd=FIXTURES, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # the checkpoint wins over the warm start: its weights and its epoch
    assert metrics["resumed_from_epoch"] >= killed_at - 1
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(4, 61))  # each epoch once


def load_harness():
    spec = importlib.util.spec_from_file_location("harness_under_test", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layer(name, cls, *shapes):
    return {"name": name, "class": cls, "shapes": [list(s) for s in shapes]}


def test_layers_match_by_name_then_by_class_in_order_then_widened():
    match = load_harness().match_layers
    parent = [layer("conv2d", "Conv2D", (3, 3, 1, 8), (8,)), layer("batch_normalization", "BatchNormalization",
              (8,), (8,), (8,), (8,)), layer("max_pooling2d", "MaxPooling2D"), layer("conv2d_1", "Conv2D",
              (3, 3, 8, 16), (16,)), layer("flatten", "Flatten"), layer("dense", "Dense", (400, 10), (10,))]
    assert match(parent, parent) == {0: (0, "same"), 1: (1, "same"), 3: (3, "same"), 5: (5, "same")}
    # twice the filters in the first convolution: it, its batch norm and the next convolution's
    # inputs widen; the last convolution is unchanged, so the Dense after the Flatten matches
    wider = [layer("conv2d", "Conv2D", (3, 3, 1, 16), (16,)), layer("batch_normalization", "BatchNormalization",
             (16,), (16,), (16,), (16,)), layer("max_pooling2d", "MaxPooling2D"), layer("conv2d_1", "Conv2D",
             (3, 3, 16, 16), (16,)), layer("flatten", "Flatten"), layer("dense", "Dense", (400, 10), (10,))]
    assert match(wider, parent) == {0: (0, "widened"), 1: (1, "widened"), 3: (3, "widened"), 5: (5, "same")}
    # wider last convolution: the Dense after the Flatten grows by 25 x 8 inputs, not 8: fresh
    last_wider = parent[:3] + [layer("conv2d_1", "Conv2D", (3, 3, 8, 24), (24,)), parent[4],
                               layer("dense", "Dense", (600, 10), (10,))]
    assert match(last_wider, parent) == {0: (0, "same"), 1: (1, "same"), 3: (3, "widened")}
    # a bigger kernel is not a wider layer
    assert match([layer("conv2d", "Conv2D", (5, 5, 1, 8), (8,))], parent[:1]) == {}
    # an inserted Dense shifts the names after it: matched by class and shapes, in order
    mlp = [layer("dense", "Dense", (64, 32), (32,)), layer("dense_1", "Dense", (32, 10), (10,))]
    inserted = [mlp[0], layer("dense_1", "Dense", (32, 32), (32,)), layer("dense_2", "Dense", (32, 10), (10,))]
    assert match(inserted, mlp) == {0: (0, "same"), 2: (1, "same")}
