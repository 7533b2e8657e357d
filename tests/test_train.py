"""train.py and parse_accuracy.py on real trainings: the stages as separate processes."""

import json
import re
import shutil

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def ready(project):
    for name in ("fetch", "detect_type"):
        result = project.script(name)
        assert result.returncode == 0, result.stderr


def test_make_targets_chain_through_state_dir_each_in_its_own_process(project):
    for target in ("fetch", "detect", "train"):
        result = project.make(target)
        assert result.returncode == 0, result.stderr
    run = project.run_env()
    assert run["STATUS"] == "trained" and run["ATTEMPT"] == "1" and run["RUNNER"] == "local"
    assert "Test accuracy:" in result.stdout  # the user's own output, streamed live
    log = project.state / "logs" / "attempt-1.log"
    assert "Test accuracy:" in log.read_text()

    result = project.make("accuracy")
    assert result.returncode == 2, result.stderr  # make turns exit 3 into its own 2 ...
    assert (project.state / "exit_code").read_text().strip() == "3"  # ... the stage's code is kept
    assert "below target" in result.stderr
    run = project.run_env()
    accuracy = float(run["ACCURACY"])
    assert 0.1 < accuracy < 0.8  # the example starts weak on purpose
    assert run["ACCURACY_SOURCE"] == "evaluate"
    metrics = json.loads((project.state / "metrics" / "attempt-1.json").read_text())
    assert metrics["epochs"][0]["epoch"] == 1 and metrics["finished"] is True
    assert metrics["accuracy"] == pytest.approx(accuracy)
    [record] = project.history()
    assert record["outcome"] == "baseline" and record["accuracy"] == pytest.approx(accuracy)
    assert (project.state / "best" / "model.py").read_text() == (project.checkout / "model.py").read_text()


def test_accuracy_meeting_the_target_exits_0(project):
    ready(project)
    assert project.script("train").returncode == 0
    result = project.script("parse_accuracy", TARGET_ACCURACY="0.05")
    assert result.returncode == 0, result.stderr
    assert "target met" in result.stderr


def test_the_same_source_trains_to_the_same_accuracy(project):
    ready(project)
    accuracies = []
    for _ in range(2):
        assert project.script("train", "--force").returncode == 0
        assert project.script("parse_accuracy").returncode == 3
        accuracies.append(float(project.run_env()["ACCURACY"]))
    assert accuracies[0] == pytest.approx(accuracies[1], abs=1e-6)
    assert [r["attempt"] for r in project.history()] == [1, 2]


def test_missing_data_dir_is_one_clear_line(project):
    ready(project)
    result = project.script("train", DATA_DIR=str(project.root / "nodata"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("does not exist; set DATA_DIR to the folder that holds your dataset")
    assert project.run_env()["STATUS"] == "detected"


def test_empty_data_dir_is_one_clear_line(project):
    ready(project)
    (project.root / "empty").mkdir()
    result = project.script("train", DATA_DIR=str(project.root / "empty"))
    assert result.returncode == 2
    assert "is empty (no file); put your dataset in it, or set DATA_DIR to the folder that holds your dataset" in result.stderr


def test_a_corrupt_png_is_named(project, digits):
    ready(project)
    data = project.root / "data"
    shutil.copytree(digits, data)
    (data / "3" / "0007.png").write_bytes(b"not a png")
    result = project.script("train", DATA_DIR=str(data))
    assert result.returncode == 2
    assert re.search(r"error: .*/3/0007.png is not a readable image \(\w+\); fix or remove it", result.stderr)
    assert not project.history()


def test_a_crashing_script_shows_the_log_tail_and_exits_4(project):
    project.push_change("model.py", "import keras\nmodel = keras.Sequential([keras.layers.Dense(2)])\n"
                        "print('loading data')\nraise RuntimeError('the data loader broke')\nmodel.fit()\n")
    ready(project)
    result = project.script("train")
    assert result.returncode == 4
    assert "--- last lines of" in result.stderr and "RuntimeError: the data loader broke" in result.stderr
    assert "error: training failed (exit 1): RuntimeError: the data loader broke" in result.stderr
    assert project.run_env()["STATUS"] == "failed"
    assert project.history()[-1]["outcome"] == "failed"


def test_a_script_that_prints_no_accuracy_is_exit_2(project):
    project.push_change("model.py", "import sklearn\nfrom sklearn.tree import DecisionTreeClassifier\n"
                        "DecisionTreeClassifier().fit([[0], [1]], [0, 1])\nprint('done')\n")
    ready(project)
    assert project.script("train").returncode == 0
    result = project.script("parse_accuracy")
    assert result.returncode == 2
    assert "no accuracy found in" in result.stderr
    assert project.run_env()["STATUS"] == "trained"


def test_sklearn_accuracy_is_the_one_the_script_computes(project):
    project.seed_remote(ROOT / "models" / "sklearn" / "model.py")
    ready(project)
    result = project.script("train")
    assert result.returncode == 0, result.stderr
    printed = float(re.search(r"accuracy: ([0-9.]+)", result.stdout).group(1))
    assert project.script("parse_accuracy").returncode == 3
    assert float(project.run_env()["ACCURACY"]) == pytest.approx(printed)
    assert project.run_env()["ACCURACY_SOURCE"] == "score"


def test_bad_target_accuracy_fails_before_anything_changes(project):
    ready(project)
    before = (project.state / "run.env").read_text()
    for bad in ("abc", "1.7"):
        result = project.script("parse_accuracy", TARGET_ACCURACY=bad)
        assert result.returncode == 2
        assert result.stderr.startswith("error: TARGET_ACCURACY=")
    assert (project.state / "run.env").read_text() == before


def test_a_source_trained_before_is_not_trained_again(project):
    ready(project)
    assert project.script("train").returncode == 0
    assert project.script("parse_accuracy").returncode == 3
    first = float(project.run_env()["ACCURACY"])
    (project.checkout / "model.py").write_text((project.checkout / "model.py").read_text() + "# a comment only\n")
    result = project.script("train")
    assert result.returncode == 0, result.stderr
    assert "this source was trained in attempt 1" in result.stderr
    assert "Test accuracy" not in result.stdout
    assert project.script("parse_accuracy").returncode == 3
    assert float(project.run_env()["ACCURACY"]) == first
    assert [(r["attempt"], r.get("cached_from")) for r in project.history()] == [(1, None), (2, 1)]
