"""scripts/jenkins_step.py: make targets for a Jenkins shell step, with the stage's own exit code."""

import subprocess
import sys

import pytest

from jenkins_executor import ROOT

STEP = [sys.executable, str(ROOT / "scripts" / "jenkins_step.py")]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "Makefile").write_text(
        "ok:\n\t@echo ok-out; echo ok-err >&2\n"
        "below:\n\t@exit 3\n"
        "exhausted:\n\t@exit 8\n"
        "publish:\n\t@echo published\n"
        "bundle:\n\t@echo out/bundle.tgz; echo not-a-path\n"
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "bundle.tgz").write_text("bundle")
    return tmp_path


def step(project, *args, **env):
    return subprocess.run(STEP + ["-C", str(project), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_plain_make_would_say_2_but_the_step_exits_with_the_stage_code(project):
    assert subprocess.run(["make", "-C", str(project), "below"], capture_output=True).returncode == 2
    result = step(project, "ok", "below", "ok")
    assert result.returncode == 3
    assert result.stdout == "ok-out\n"  # stopped at the first failure, as make does
    assert "ok-err" in result.stderr and "make below failed with exit code 3" in result.stderr


def test_on_exit_runs_the_fallback_targets_instead_of_the_rest(project):
    result = step(project, "--on-exit", "8=publish", "exhausted", "below")
    assert result.returncode == 0
    assert result.stdout == "published\n"
    assert "exhausted exited 8: running publish instead" in result.stderr


def test_an_unknown_target_is_makes_own_error(project):
    result = step(project, "nope")
    assert result.returncode == 2 and "No rule to make target 'nope'" in result.stderr


def test_artifacts_collects_printed_paths_into_a_fresh_workspace_folder(project, tmp_path):
    ws = tmp_path / "ws"
    (ws / "artifacts").mkdir(parents=True)
    (ws / "artifacts" / "stale.txt").write_text("from the last build")
    result = step(project, "--artifacts", "artifacts", "bundle", WORKSPACE=str(ws))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (ws / "artifacts").iterdir()) == ["bundle.tgz"]


def test_a_malformed_on_exit_is_one_line(project):
    result = step(project, "--on-exit", "publish", "ok")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --on-exit 'publish': write CODE=TARGET[,TARGET], e.g. --on-exit 8=publish"
