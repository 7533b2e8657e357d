"""make pipeline end to end on a fresh isolated project."""

import pytest

pytestmark = pytest.mark.slow


def test_pipeline_without_tweaks_ends_below_target_with_the_summary(project):
    result = project.script("pipeline", MAX_TWEAKS="0")
    assert result.returncode == 3, result.stderr
    for row in ("commit", "model", "runner", "accuracy", "target", "verdict", "log"):
        assert any(line.startswith(row) for line in result.stdout.splitlines()), row
    assert "below target" in result.stdout
    assert "model.py (cnn)" in result.stdout


def test_pipeline_stops_at_the_first_failing_stage_with_its_code(project):
    result = project.script("pipeline", MODEL_BRANCH="nope")
    assert result.returncode == 2
    assert "error: branch 'nope' not found" in result.stderr
