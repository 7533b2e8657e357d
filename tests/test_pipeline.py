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


def test_make_pipeline_trains_on_the_users_own_data_dir_and_leaves_it_untouched(project, digits, tmp_path):
    import shutil

    user = tmp_path / "my-images"
    shutil.copytree(digits, user)
    (user / ".tweakops-digits").unlink(missing_ok=True)  # not the generated example: the user's folder
    before = sorted((p.relative_to(user), p.stat().st_mtime_ns) for p in user.rglob("*"))
    result = project.make("pipeline", DATA_DIR=str(user), MAX_TWEAKS="0")
    assert (project.state / "exit_code").read_text().strip() == "3", result.stderr
    assert f"dataset ready: {user} (1797 files, 1797 images, 10 class folders" in result.stderr
    [attempt] = project.history()
    assert attempt["exit_code"] == 0 and attempt["accuracy"] > 0.2
    assert sorted((p.relative_to(user), p.stat().st_mtime_ns) for p in user.rglob("*")) == before
