"""The build check and the attempt's Job: real checkouts, real TensorFlow, the local runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT, Project

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "harness"


def detected(project: Project, script: Path) -> None:
    project.seed_remote(script)
    for name in ("fetch", "detect_type"):
        result = project.script(name)
        assert result.returncode == 0, result.stderr


def test_a_model_that_builds_passes_in_seconds_and_trains_nothing(tmp_path, digits):
    project = Project(tmp_path, digits)
    detected(project, ROOT / "models" / "cnn" / "model.py")
    result = project.script("buildcheck")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "builds"
    assert not project.history()
    assert not (project.state / "logs").exists() or not list((project.state / "logs").glob("attempt-*.log"))


def test_a_model_that_does_not_build_names_the_error(tmp_path, digits):
    project = Project(tmp_path, digits)
    detected(project, FIXTURES / "zero_map.py")
    result = project.script("buildcheck")
    assert result.returncode == 4
    assert result.stdout.startswith("does not build (exit 1): ValueError: Computed output size would be zero or negative")


def test_a_script_reading_its_own_data_needs_no_data_dir(tmp_path, digits):
    project = Project(tmp_path, digits, example="")
    detected(project, FIXTURES / "unbuilt_sequential.py")  # reads sklearn's digits itself
    env = {k: v for k, v in project.env.items() if k != "DATA_DIR"}  # DATA_DIR left at its default
    project.env = env
    result = project.script("train", EPOCHS="1")
    assert result.returncode == 0, result.stderr
    assert "dataset:" not in result.stderr
    assert project.history()[-1]["exit_code"] == 0


@pytest.mark.parametrize("data", ["missing", "empty"])
def test_a_user_data_dir_is_checked_even_when_the_script_reads_its_own_data(tmp_path, digits, data):
    project = Project(tmp_path, digits, example="")
    detected(project, FIXTURES / "unbuilt_sequential.py")
    folder = tmp_path / data
    if data == "empty":
        folder.mkdir()
    result = project.script("train", DATA_DIR=str(folder))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: DATA_DIR {folder} ")
    assert not project.history()


def test_a_missing_module_fails_the_attempt_with_one_line(tmp_path, digits):
    project = Project(tmp_path, digits, example="")
    detected(project, FIXTURES / "missing_module.py")
    result = project.script("train")
    assert result.returncode == 4
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training failed (exit 1): tweakops: error: the script imports cv2"), last
    assert os.path.exists(project.state / "logs" / "attempt-1.log")
