"""state.run_stage: a stage forked from the loop behaves as `python -u scripts/<name>.py` would.

The loop (pipeline.py, confirm.py) runs each stage as a fork of itself, so no stage pays
Python's start-up or its imports again. These tests check what a fresh process would give:
its exit code (a signal: minus its number), its own argv (the stage named in run.env's
FAILED_STAGE), output that streams before it ends, none of the caller's cleanup, and no
hold on run.lock once its caller is gone. Real processes, real kills, a real STATE_DIR;
the stages that sleep or print are small modules written here (a stage is any module
with main(argv)).
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time

import pytest

import state
from conftest import PYTHON, SCRIPTS, wait_for

STAGE = '''
import os, sys, time
from pathlib import Path

def main(argv=None):
    out = Path(os.environ["OUT"])
    (out / "stage.pid").write_text(str(os.getpid()))
    (out / "stage.argv").write_text(" ".join([Path(sys.argv[0]).name, *(argv or [])]))
    what = (argv or ["exit", "0"])[0]
    if what == "exit":
        return int(argv[1])
    if what == "print":             # no newline, then a wait: only an unbuffered stream shows it now
        print("partial", end="")
        time.sleep(30)
    if what == "sleep":
        time.sleep(60)
    if what == "raise":
        raise SystemExit("a message")
    return 0
'''

DRIVER = '''
import os, sys
sys.path[:0] = [{scripts!r}, {stages!r}]
import state
cfg = state.config()
state.hold_run(cfg, "pipeline")
try:
    code = state.run_stage(*sys.argv[1:])
    print(f"caller got {{code}}", flush=True)
finally:
    print("caller cleanup", flush=True)
'''


@pytest.fixture
def driver(tmp_path):
    stages = tmp_path / "stages"
    stages.mkdir()
    (stages / "probe_stage.py").write_text(STAGE)
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER.format(scripts=str(SCRIPTS), stages=str(stages))))
    env = {**os.environ, "TWEAKOPS_ENV_FILE": os.devnull, "STATE_DIR": str(tmp_path / "state"),
           "CHECKOUT_DIR": str(tmp_path / "checkout"), "OUT": str(tmp_path), "NO_COLOR": "1"}

    def start(*args, **kw):
        return subprocess.Popen([PYTHON, str(tmp_path / "driver.py"), *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    start.tmp = tmp_path
    start.env = env
    return start


def finish(proc) -> str:
    out, _ = proc.communicate(timeout=120)
    return out


def test_the_exit_code_and_argv_are_the_stages_and_the_callers_cleanup_runs_once(driver):
    proc = driver("probe_stage", "exit", "4")
    out = finish(proc)
    assert "caller got 4" in out
    assert out.count("caller cleanup") == 1           # the child never ran the caller's finally
    assert (driver.tmp / "stage.argv").read_text() == "probe_stage.py exit 4"
    assert int((driver.tmp / "stage.pid").read_text()) != proc.pid   # a process of its own
    assert (driver.tmp / "state" / "exit_code").read_text().strip() == "4"  # state.main's record, as a stage's


def test_a_stage_that_raises_systemexit_with_a_message_exits_1(driver):
    out = finish(driver("probe_stage", "raise"))
    assert "a message" in out and "caller got 1" in out


def test_a_real_stage_records_its_own_name_as_the_failed_stage(driver):
    out = finish(driver("detect_type"))            # nothing fetched: detect refuses
    assert "error:" in out and "caller got 2" in out
    run_env = (driver.tmp / "state" / "run.env").read_text()
    assert "FAILED_STAGE=detect" in run_env        # sys.argv[0] is detect_type.py in the child


def test_a_stage_killed_by_a_signal_reads_as_minus_the_signal(driver):
    proc = driver("probe_stage", "sleep")
    pid = int(wait_for(lambda: (driver.tmp / "stage.pid").exists() and (driver.tmp / "stage.pid").read_text(),
                       timeout=60))
    os.kill(pid, signal.SIGKILL)
    assert f"caller got {-signal.SIGKILL}" in finish(proc)


def test_output_streams_before_the_stage_ends(driver):
    proc = driver("probe_stage", "print")
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    seen, deadline = b"", time.time() + 60
    while b"partial" not in seen and time.time() < deadline:
        try:
            seen += os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.05)
    try:
        assert b"partial" in seen                  # printed without a newline, the stage still running
        assert proc.poll() is None
    finally:
        proc.kill()
        pid = int((driver.tmp / "stage.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        proc.wait()


def test_a_stage_left_behind_by_a_killed_caller_does_not_hold_run_lock(driver, monkeypatch):
    proc = driver("probe_stage", "sleep")
    pid = int(wait_for(lambda: (driver.tmp / "stage.pid").exists() and (driver.tmp / "stage.pid").read_text(),
                       timeout=60))
    monkeypatch.setenv("STATE_DIR", driver.env["STATE_DIR"])
    monkeypatch.setenv("TWEAKOPS_ENV_FILE", os.devnull)
    try:
        cfg = state.config()
        assert state.run_owner(cfg)["pid"] == proc.pid     # the caller holds it
        proc.kill()
        proc.wait()
        os.kill(pid, 0)                                    # its stage still runs...
        assert state.run_owner(cfg) is None                # ...and holds nothing: the watchdog may act
    finally:
        os.kill(pid, signal.SIGKILL)
