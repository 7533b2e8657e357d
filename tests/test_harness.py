"""The harness never breaks a script that runs on its own (real TensorFlow, real kills).

Each script in tests/fixtures/harness/ is run by scripts/harness.py exactly as the
runners run it (environment variables, the script's folder as working directory).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "scripts" / "harness.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "harness"


def harness_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWEAKOPS_")}
    env.update({
        "TWEAKOPS_METRICS": str(tmp_path / "metrics.json"),
        "TWEAKOPS_RESULT": str(tmp_path / "result.json"),
        "TWEAKOPS_HEARTBEAT": str(tmp_path / "heartbeat"),
        "TWEAKOPS_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def run_harness(tmp_path: Path, script: str, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HARNESS), script], cwd=FIXTURES, env=harness_env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=300)


def metrics(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "metrics.json").read_text())


def test_an_unbuilt_sequential_trains_with_its_checkpoint(tmp_path):
    result = run_harness(tmp_path, "unbuilt_sequential.py")
    assert result.returncode == 0, result.stderr
    assert "BackupAndRestore" not in result.stderr
    assert "no checkpoint" not in result.stderr  # built from the first batch: the checkpoint applies
    data = metrics(tmp_path)
    assert [e["epoch"] for e in data["epochs"]] == [1, 2]
    assert data["accuracy_source"] == "evaluate" and 0.1 < data["accuracy"] <= 1.0


@pytest.mark.slow
def test_an_unbuilt_model_resumes_after_a_sigkill(tmp_path):
    env = harness_env(tmp_path, EPOCHS="12")
    proc = subprocess.Popen([sys.executable, str(HARNESS), "unbuilt_sequential.py"], cwd=FIXTURES, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if len(metrics(tmp_path)["epochs"]) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(metrics(tmp_path)["epochs"])
    assert 2 <= killed_at < 12, "the run finished before the kill: make it longer"
    result = subprocess.run([sys.executable, str(HARNESS), "unbuilt_sequential.py"], cwd=FIXTURES, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = metrics(tmp_path)
    assert data["resumed_from_epoch"] >= killed_at - 1
    assert "resuming from the checkpoint" in result.stdout
    assert [e["epoch"] for e in data["epochs"]] == list(range(1, 13))  # each epoch once


def kill_after_fit(tmp_path: Path, epochs: int) -> dict:
    """Train `epochs` epochs, SIGKILL the attempt after its fit (in the script's sleep);
    the environment to resume it with."""
    env = harness_env(tmp_path, EPOCHS=str(epochs), SLEEP_AFTER_FIT="120")
    out = tmp_path / "out.log"
    with open(out, "w") as log:
        proc = subprocess.Popen([sys.executable, str(HARNESS), "unbuilt_sequential.py"], cwd=FIXTURES, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while "fit done" not in out.read_text() and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return env


@pytest.mark.slow
def test_a_kill_after_fit_retrains_nothing(tmp_path):
    env = kill_after_fit(tmp_path, epochs=3)
    result = subprocess.run([sys.executable, str(HARNESS), "unbuilt_sequential.py"], cwd=FIXTURES,
                            env={**env, "SLEEP_AFTER_FIT": "0"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "resuming from the checkpoint at epoch 3" in result.stdout
    assert "Epoch 1/3" not in result.stdout  # nothing retrained
    data = metrics(tmp_path)
    assert data["resumed_from_epoch"] == 3 and [e["epoch"] for e in data["epochs"]] == [1, 2, 3]
    assert data["accuracy_source"] == "evaluate"


@pytest.mark.slow
def test_a_checkpoint_torn_by_a_kill_mid_save_resumes_from_the_one_before(tmp_path):
    """Keras writes the checkpoint's training_metadata.json in place: a SIGKILL during that
    write leaves it empty. The resumed attempt then takes the previous backup (one epoch
    redone), never starts over."""
    env = kill_after_fit(tmp_path, epochs=5)
    [meta] = (tmp_path / "checkpoints").rglob("training_metadata.json")
    meta.write_text("")   # what a kill in the middle of its write leaves
    result = subprocess.run([sys.executable, str(HARNESS), "unbuilt_sequential.py"], cwd=FIXTURES,
                            env={**env, "SLEEP_AFTER_FIT": "0"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert "resuming from the one before" in said and "is off for this fit" not in said
    assert "Epoch 5/5" in result.stdout and "Epoch 1/5" not in result.stdout   # one epoch redone


@pytest.mark.slow
def test_a_checkpoint_whose_only_save_was_torn_starts_over_with_the_checkpoint_on(tmp_path):
    """A kill in the first save leaves a weights file h5 cannot open and no backup before
    it. The fit starts over, and keeps checkpointing: before, the checkpoint was off for
    every restart after (the torn file stayed), each one training from the first epoch."""
    env = kill_after_fit(tmp_path, epochs=3)
    backup = next((tmp_path / "checkpoints").rglob("training_metadata.json")).parent
    for torn in backup.iterdir():
        torn.write_bytes(b"\x89HDF\r\n" if torn.suffix == ".h5" else b"")   # what the kill leaves
    again = {**env, "SLEEP_AFTER_FIT": "0"}
    result = subprocess.run([sys.executable, str(HARNESS), "unbuilt_sequential.py"], cwd=FIXTURES, env=again,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert "this fit starts over" in said and "is off for this fit" not in said, said
    assert "Epoch 1/3" in result.stdout
    metadata = json.loads(next(backup.glob("training_metadata.json")).read_text())
    assert metadata["epoch"] == 3      # it checkpointed again


def test_a_subclassed_model_trains_on_a_dataset(tmp_path):
    result = run_harness(tmp_path, "subclassed.py")
    assert result.returncode == 0, result.stderr
    assert "no checkpoint" not in result.stderr
    assert [e["epoch"] for e in metrics(tmp_path)["epochs"]] == [1, 2]


def test_a_python_generator_drops_only_the_checkpoint_with_one_line(tmp_path):
    result = run_harness(tmp_path, "python_generator.py")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("tweakops: no checkpoint")]
    assert len(notes) == 1, result.stderr
    assert "Python generator" in notes[0]
    assert metrics(tmp_path)["accuracy_source"] == "evaluate"


def test_keras2_idioms_run_unmodified_on_tf_keras(tmp_path):
    result = run_harness(tmp_path, "keras2_idioms.py", TWEAKOPS_RUNTIME="keras2")
    assert result.returncode == 0, result.stderr
    assert "learning rate: 0.02" in result.stdout  # lr= honoured, not silently 0.001
    assert "classes: [" in result.stdout          # predict_classes is back
    assert "padded: [[0, 1, 2], [0, 0, 3]]" in result.stdout   # keras_preprocessing on numpy 2
    assert "decayed rate at step 2: 0.05" in result.stdout     # decay= is Keras 2's time-based decay
    data = metrics(tmp_path)
    assert [e["epoch"] for e in data["epochs"]] == [1, 2]      # nb_epoch=2 (Keras 1's name) is the epochs
    assert "nb_epoch=2 is read as epochs=" in result.stderr
    assert "val_acc" in data["epochs"][-1]          # Keras 2's metric keys are read
    assert data["accuracy_source"] == "evaluate" and data["accuracy"] > 0.5


def test_keras2_script_under_keras3_fails_on_the_import(tmp_path):
    result = run_harness(tmp_path, "keras2_idioms.py", TWEAKOPS_RUNTIME="keras3")
    assert result.returncode == 1
    assert "keras.layers.core" in result.stderr


def test_a_missing_module_is_one_line_naming_it(tmp_path):
    result = run_harness(tmp_path, "missing_module.py")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "tweakops: error: the script imports cv2, which the keras3 runtime does not have; "
        "add opencv-python-headless to requirements.txt in the model repository")


def test_a_download_is_one_line_naming_the_url(tmp_path):
    result = run_harness(tmp_path, "downloads.py")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tweakops: error: the script downloads https://"), last
    assert "mnist.npz and this machine has no network" in last


def test_build_check_passes_without_training_or_state(tmp_path):
    result = run_harness(tmp_path, "unbuilt_sequential.py", TWEAKOPS_BUILD_CHECK="1", EPOCHS="50")
    assert result.returncode == 0, result.stderr
    assert "tweakops: build check passed" in result.stderr
    assert "Test accuracy" not in result.stdout  # stopped at the first fit
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "checkpoints").exists()


def test_build_check_fails_on_a_model_that_does_not_build(tmp_path):
    result = run_harness(tmp_path, "zero_map.py", TWEAKOPS_BUILD_CHECK="1")
    assert result.returncode == 1
    assert "Computed output size would be zero or negative" in result.stderr


@pytest.mark.parametrize("script, build_failed", [
    # a model that cannot be built: test_tweak.py's real attempt of a kernel too big
    ("first_step_fails.py", True),    # it builds; its first training step cannot run
    ("fails_after_fit.py", False),    # it trained a step, then failed: the attempt's failure
    ("sklearn_invalid_parameter.py", True),    # SVC(C=-1): refused by parameter validation
    ("sklearn_fails_after_fit.py", False),     # a ValueError of the script's own, after fit
])
def test_a_failure_before_the_first_training_step_is_marked_build_failed(tmp_path, script, build_failed):
    framework = "sklearn" if script.startswith("sklearn_") else "keras"
    result = run_harness(tmp_path, script, TWEAKOPS_FRAMEWORK=framework)
    assert result.returncode == 1, result.stderr
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["exit_code"] == 1
    assert (record.get("reason") == "build-failed") is build_failed, record


@pytest.mark.slow
@pytest.mark.parametrize("script", ["unbuilt_sequential.py", "subclassed.py"])
def test_the_harness_gives_the_bare_accuracy(tmp_path, script):
    bare = subprocess.run([sys.executable, script], cwd=FIXTURES, env=harness_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0, bare.stderr
    bare_accuracy = float(bare.stdout.strip().splitlines()[-1].split()[-1])
    result = run_harness(tmp_path, script)
    assert result.returncode == 0, result.stderr
    assert abs(metrics(tmp_path)["accuracy"] - bare_accuracy) < 0.02


@pytest.mark.parametrize("score_with", ["score", "pipeline", "accuracy_score"])
@pytest.mark.parametrize("shape", ["shallow", "deep"])
def test_a_classifier_s_training_accuracy_is_recorded_beside_its_held_out_score(tmp_path, shape, score_with):
    """Scripts score their held-out split only: the harness scores the fitted classifier on
    its own training data too, so that overfit and underfit can be told apart (diagnose.py)."""
    result = run_harness(tmp_path, "sklearn_train_score.py", TWEAKOPS_FRAMEWORK="sklearn", SHAPE=shape,
                         SCORE_WITH=score_with)
    assert result.returncode == 0, result.stderr
    printed = float(result.stdout.strip().splitlines()[-1].split()[-1])
    data = metrics(tmp_path)
    assert data["scores"] == [pytest.approx(printed)]   # the harness's own scoring is not recorded as one
    if shape == "shallow":   # two stumps: about as bad on the training data as on the held-out data
        assert data["train_score"] < 0.7 and abs(data["train_score"] - printed) < 0.1
    else:                    # an unpruned tree: every training sample right
        assert data["train_score"] == 1.0 and printed < 0.9
