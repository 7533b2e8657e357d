"""The shared state helper: dotenv files, configuration, counter, history."""

import json
import os
import re
from pathlib import Path

import pytest

import state

ROOT = Path(__file__).resolve().parent.parent


def cfg_for(tmp_path, **values):
    return state.config(env_file=os.devnull, environ={"STATE_DIR": str(tmp_path / "state"), **values})


def test_env_file_round_trips_values_that_a_shell_would_expand(tmp_path):
    values = {"A": "plain", "B": "two words", "C": 'quote " and $HOME and `x`', "D": "line1\nline2", "E": ""}
    state.write_env(tmp_path / "run.env", values)
    assert state.read_env(tmp_path / "run.env") == values


def test_env_file_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "x.env").write_text(f"A=$(touch {marker})\nB=`touch {marker}`\n")
    values = state.read_env(tmp_path / "x.env")
    assert values["A"] == f"$(touch {marker})"
    assert not marker.exists()


def test_env_file_with_a_bad_line_names_the_line(tmp_path):
    (tmp_path / "x.env").write_text("A=1\nthis is not a pair\n")
    with pytest.raises(state.TweakopsError, match=r"x.env:2: expected KEY=value"):
        state.read_env(tmp_path / "x.env")


def test_write_env_leaves_no_temp_file_behind(tmp_path):
    state.write_env(tmp_path / "run.env", {"A": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["run.env"]


@pytest.mark.parametrize("raw, message", [
    ("abc", "TARGET_ACCURACY='abc' is not a number"),
    ("1.7", "TARGET_ACCURACY=1.7 is out of range"),
    ("0", "TARGET_ACCURACY=0.0 is out of range"),
])
def test_bad_target_accuracy_is_one_clear_error(tmp_path, raw, message):
    with pytest.raises(state.TweakopsError, match=re.escape(message)):
        cfg_for(tmp_path, TARGET_ACCURACY=raw)


def test_target_accuracy_accepts_a_percentage(tmp_path):
    assert cfg_for(tmp_path, TARGET_ACCURACY="85%")["TARGET_ACCURACY"] == pytest.approx(0.85)


def test_unknown_key_in_env_file_is_an_error(tmp_path):
    (tmp_path / ".env").write_text("TARGET_ACURACY=0.9\n")
    with pytest.raises(state.TweakopsError, match="unknown key TARGET_ACURACY"):
        state.config(env_file=tmp_path / ".env", environ={})


def test_environment_overrides_env_file_which_overrides_defaults(tmp_path):
    (tmp_path / ".env").write_text("MAX_TWEAKS=5\nSEED=7\n")
    cfg = state.config(env_file=tmp_path / ".env", environ={"SEED": "9"})
    assert (cfg["MAX_TWEAKS"], cfg["SEED"], cfg["MAX_MINUTES"]) == (5, 9, state.DEFAULTS["MAX_MINUTES"])


def test_default_model_repo_is_the_local_example_remote(tmp_path):
    assert cfg_for(tmp_path, EXAMPLE="rnn")["MODEL_REPO"] == str(ROOT / "remote" / "rnn.git")


def test_every_key_is_documented_in_env_example_with_its_default():
    text = (ROOT / ".env.example").read_text()
    for key, default in state.DEFAULTS.items():
        shown = {True: "1", False: "0"}.get(default, default) if isinstance(default, bool) else default
        assert re.search(rf"^# {key}={re.escape(str(shown))}$", text, re.M), key


def test_counter_starts_at_zero_and_bumps(tmp_path):
    cfg = cfg_for(tmp_path)
    assert state.counter(cfg) == 0
    assert [state.bump_counter(cfg) for _ in range(3)] == [1, 2, 3]
    assert (tmp_path / "state" / "tweak_count").read_text() == "3\n"


def test_history_skips_a_torn_last_line_and_keeps_appending(tmp_path):
    cfg = cfg_for(tmp_path)
    state.append_history(cfg, {"attempt": 1})
    with open(state.history_path(cfg), "a") as f:
        f.write('{"attempt": 2, "acc')  # a crash in the middle of a write
    state.append_history(cfg, {"attempt": 3})
    assert [r["attempt"] for r in state.read_history(cfg)] == [1, 3]
    state.update_history(cfg, 3, accuracy=0.5)
    assert state.read_history(cfg)[-1] == {"attempt": 3, "accuracy": 0.5}
    for line in state.history_path(cfg).read_text().splitlines():
        json.loads(line)


def test_update_run_merges_and_removes_keys(tmp_path):
    cfg = cfg_for(tmp_path)
    state.update_run(cfg, A=1, B="x y")
    state.update_run(cfg, B=None, C=True)
    assert state.read_run(cfg) == {"A": "1", "C": "1"}


def test_source_hash_ignores_comments_and_formatting():
    assert state.source_hash("x = f(1,2)  # c\n") == state.source_hash("x = f(1, 2)\n")
    assert state.source_hash("x = 1\n") != state.source_hash("x = 2\n")


def test_scrub_hides_credentials_in_urls():
    assert state.scrub("fatal: https://bob:s3cret@git.example/x.git") == "fatal: https://***@git.example/x.git"
