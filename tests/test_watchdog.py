"""watchdog.py with real processes and real signals: kill, hang, crash loop, two watchdogs; the crontab line."""

import contextlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import time

import pytest

from conftest import PYTHON, ROOT, SCRIPTS, wait_for

FAST = {"RESTART_BACKOFF": "0", "HEARTBEAT_TIMEOUT": "60"}


def long_cnn(project, epochs=6):
    source = (ROOT / "models" / "cnn" / "model.py").read_text().replace("epochs = 1", f"epochs = {epochs}")
    project.push_change("model.py", source)
    for name in ("fetch", "detect_type"):
        assert project.script(name).returncode == 0


def start_train(project, **env):
    return subprocess.Popen([PYTHON, str(SCRIPTS / "train.py")], cwd=ROOT, env={**project.env, **FAST, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)




def epochs_done(project, attempt=1):
    try:
        return len(json.loads((project.state / "metrics" / f"attempt-{attempt}.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


def finished(project):
    return project.run_env().get("STATUS") in ("trained", "failed")


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_checkpoint_and_counts_once(project):
    long_cnn(project)
    train = start_train(project)
    wait_for(lambda: epochs_done(project) >= 2 and (project.state / "checkpoints" / "attempt-1").exists())
    os.killpg(int(project.run_env()["PID"]), signal.SIGKILL)
    _, err = train.communicate(timeout=60)
    assert train.returncode == 1
    assert "make watchdog restarts it" in err
    assert project.run_env()["STATUS"] == "crashed" and project.history() == []
    killed_at = epochs_done(project)

    result = project.script("watchdog", **FAST)
    assert result.returncode == 0, result.stderr
    assert "restarted it from its checkpoint (restart 1" in result.stderr
    wait_for(lambda: finished(project))
    assert project.run_env()["STATUS"] == "trained"
    metrics = json.loads((project.state / "metrics" / "attempt-1.json").read_text())
    assert metrics["resumed_from_epoch"] >= killed_at - 1 >= 1
    epochs = [e["epoch"] for e in metrics["epochs"]]
    assert epochs == list(range(1, 7))  # no epoch run twice in the record, none lost
    assert project.script("parse_accuracy", TARGET_ACCURACY="0.05").returncode == 0
    [record] = project.history()
    assert record["attempt"] == 1 and record["restarts"] == 1 and 0 < record["accuracy"] <= 1
    log = (project.state / "logs" / "attempt-1.log").read_text()
    assert "tweakops: resuming from the checkpoint at epoch" in log
    assert "==> train: attempt 1, restart 1" in (project.state / "logs" / "watchdog-restart-1.log").read_text()


@pytest.mark.slow
def test_a_hung_training_is_stopped_and_restarted(project):
    """A training that makes no progress (stopped: no batch, no CPU) is stopped by its own
    train.py after HEARTBEAT_TIMEOUT, marked hung, and the watchdog restarts it from its
    checkpoint; while train.py lives, the watchdog leaves the run to it."""
    long_cnn(project, epochs=3)
    train = start_train(project, HEARTBEAT_TIMEOUT="6")
    wait_for(lambda: epochs_done(project) >= 1)
    pid = int(project.run_env()["PID"])
    assert "a live run owns" in project.script("watchdog", **FAST).stderr
    os.killpg(pid, signal.SIGSTOP)  # alive, but it makes no progress
    _, err = train.communicate(timeout=60)
    assert train.returncode == 1
    assert "attempt 1 is hung: no progress for" in err and "make watchdog restarts it" in err, err
    assert project.run_env()["STATUS"] == "hung"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    result = project.script("watchdog", **FAST)
    assert "restarted it from its checkpoint" in result.stderr, result.stderr
    wait_for(lambda: finished(project))
    assert project.run_env()["STATUS"] == "trained" and project.run_env()["RESTARTS"] == "1"


@pytest.mark.slow
def test_a_hung_training_nobody_follows_is_stopped_by_the_watchdog(project):
    long_cnn(project, epochs=3)
    train = start_train(project)
    wait_for(lambda: epochs_done(project) >= 1)
    pid = int(project.run_env()["PID"])
    train.kill()   # its train.py dies; the training goes on alone, then hangs
    train.communicate(timeout=30)
    os.killpg(pid, signal.SIGSTOP)
    time.sleep(4)
    result = project.script("watchdog", RESTART_BACKOFF="0", HEARTBEAT_TIMEOUT="2")
    assert "is hung: no heartbeat" in result.stderr, result.stderr
    assert "restarted it from its checkpoint" in result.stderr, result.stderr
    wait_for(lambda: finished(project))
    assert project.run_env()["STATUS"] == "trained" and project.run_env()["RESTARTS"] == "1"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.slow
def test_two_watchdogs_at_once_restart_only_once(project):
    long_cnn(project, epochs=3)
    train = start_train(project)
    wait_for(lambda: epochs_done(project) >= 1)
    os.killpg(int(project.run_env()["PID"]), signal.SIGKILL)
    train.communicate(timeout=60)
    dogs = [subprocess.Popen([PYTHON, str(SCRIPTS / "watchdog.py")], cwd=ROOT, env={**project.env, **FAST},
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [d.communicate(timeout=60)[1] for d in dogs]
    assert sum("restarted it from its checkpoint" in o for o in outputs) == 1, outputs
    wait_for(lambda: finished(project))
    log = (project.state / "logs" / "watchdog.log").read_text()
    assert log.count("restarted") == 1
    assert project.run_env()["RESTARTS"] == "1"


@pytest.mark.slow
def test_a_clean_finish_is_never_restarted(project):
    long_cnn(project, epochs=2)
    assert project.script("train").returncode == 0
    for _ in range(3):
        result = project.script("watchdog", **FAST)
        assert "nothing to do (status trained)" in result.stderr
    assert not (project.state / "logs" / "watchdog.log").exists()


@pytest.mark.slow
def test_the_restart_budget_ends_a_crash_loop_and_notifies(project):
    project.push_change("model.py", "import os\nimport keras\nprint('about to die', flush=True)\n"
                        "os.kill(os.getpid(), 9)\nkeras.layers.Dense(1)\n")
    for name in ("fetch", "detect_type"):
        assert project.script(name).returncode == 0
    assert project.script("train").returncode == 1
    env = {**FAST, "MAX_RESTARTS": "2"}
    for n in range(1, 3):
        assert f"restart {n}" in project.script("watchdog", **env).stderr
        log = project.state / "logs" / "attempt-1.log"
        wait_for(lambda: log.read_text().count("about to die") == n + 1 and project.run_env().get("EXIT_CODE") == "137"
                 and not os.path.exists(f"/proc/{project.run_env()['FOLLOWER_PID']}"))
    result = project.script("watchdog", **env)
    assert "gave up: MAX_RESTARTS=2 restarts used" in result.stderr
    assert project.run_env()["STATUS"] == "failed"
    assert project.history()[-1]["outcome"] == "failed"
    [mail] = (project.state / "notifications").glob("*.eml")
    assert "about to die" in mail.read_text()
    assert "nothing to do (status failed)" in project.script("watchdog", **env).stderr


@pytest.mark.slow
def test_chaos_a_pipeline_survives_twenty_kills_of_its_training(project):
    """Chaos: one pipeline run whose training (the harness's whole process group) is
    SIGKILLed at 20 random points, half the time with the pipeline itself; the live
    pipeline restarts its attempt in place, and where it died too the watchdog, run as
    cron would, resumes it.
    It finishes, every attempt is in the history once, and at most one epoch is redone
    per kill (the checkpoint keeps the rest)."""
    rng = random.Random(20261202)
    long_cnn(project, epochs=100)   # long enough to take 20 kills
    env = {**project.env, **FAST, "MAX_TWEAKS": "1", "TARGET_ACCURACY": "0.999", "MAX_RESTARTS": "40"}

    def watchdog():
        return subprocess.run([PYTHON, str(SCRIPTS / "watchdog.py")], cwd=ROOT, env=env, capture_output=True, text=True)

    def training():
        """The harness's pid once it is training (a fresh heartbeat of its attempt), else None."""
        run = project.run_env()
        if run.get("STATUS") != "running" or not run.get("PID") or not os.path.exists(f"/proc/{run['PID']}"):
            return None
        beat = (project.state / "heartbeat").read_text().split() if (project.state / "heartbeat").exists() else []
        return int(run["PID"]) if beat and beat[0] == run.get("ATTEMPT") else None

    subprocess.Popen([PYTHON, str(SCRIPTS / "pipeline.py")], cwd=ROOT, env=env, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kills = 0
    def finished_run():
        run = project.run_env()
        return run.get("STATUS") == "trained" and not run.get("PIPELINE_PID") and run.get("PUBLISHED_COMMIT")

    while kills < 20 and not finished_run():
        pid = wait_for(lambda: training() or finished_run() or (watchdog() and None), timeout=240, step=0.5)
        if pid is True:
            break
        time.sleep(rng.uniform(0.2, 2.5))
        if training() == pid:
            pipeline = int(project.run_env().get("PIPELINE_PID") or 0)
            os.killpg(os.getpgid(pid), signal.SIGKILL)
            if pipeline and rng.random() < 0.5:   # the pipeline too: then only the watchdog resumes it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(pipeline), signal.SIGKILL)
            kills += 1
            wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z")

    def done():
        run = project.run_env()
        if run.get("PIPELINE_PID") or run.get("STATUS") in ("running", "crashed", "hung"):
            watchdog()
            return False
        return True

    wait_for(done, timeout=400, step=2)
    assert kills == 20, f"the run ended after {kills} kills"
    history = project.history()
    numbers = [r["attempt"] for r in history if r.get("attempt") is not None]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert all(r.get("outcome") not in (None, "trained", "failed") for r in history), history
    assert history[0]["outcome"] == "baseline"
    redone = 0
    for n in numbers:
        log = (project.state / "logs" / f"attempt-{n}.log").read_text(errors="replace")
        starts = [int(e) for e in re.findall(r"^Epoch (\d+)/\d+", log, re.M)]
        redone += len(starts) - len(set(starts))
    assert redone <= kills, f"{redone} epochs redone for {kills} kills"
    assert project.run_env().get("STATUS") != "crashed"


# make cron-install / cron-remove. The real `crontab` would edit this machine's cron table
# (root's, here), so a stand-in `crontab` on PATH keeps the table in a file behind the same
# interface: `crontab -l` prints it (exit 1 and "no crontab for <user>" when there is none),
# `crontab -` replaces it with stdin, `crontab -r` removes it. make, watchdog.py and the STATE_DIR lookup are real.
FAKE_CRONTAB = """#!/bin/sh
table="$CRONTAB_FILE"
case "$1" in
  -l) [ -f "$table" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }; cat "$table";;
  -) cat > "$table";;
  -r) rm "$table";;
  *) echo "usage: crontab -l | crontab -" >&2; exit 1;;
esac
"""


@pytest.fixture
def cron_env(project, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "crontab"
    fake.write_text(FAKE_CRONTAB)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    table = tmp_path / "crontab.txt"
    return table, {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CRONTAB_FILE": str(table)}


def test_cron_install_adds_one_line_that_runs_the_watchdog_into_state_dir_logs(project, cron_env):
    table, env = cron_env
    table.write_text("0 3 * * * /usr/local/bin/backup\n")
    for _ in range(2):  # idempotent
        result = project.make("cron-install", **env)
        assert result.returncode == 0, result.stderr
    lines = table.read_text().splitlines()
    assert lines[0] == "0 3 * * * /usr/local/bin/backup"
    [ours] = [line for line in lines if "tweakops-watchdog" in line]
    assert len(lines) == 2
    assert ours.startswith("* * * * * cd ") and "make -s watchdog" in ours
    assert f">> {project.state / 'logs' / 'cron.log'} 2>&1" in ours
    assert (project.state / "logs").is_dir()


def test_cron_remove_drops_only_our_line_and_works_without_a_crontab(project, cron_env):
    table, env = cron_env
    result = project.script("watchdog", "--cron", "remove", **env)  # no crontab yet
    assert result.returncode == 0, result.stderr
    assert not table.exists()
    assert project.script("watchdog", "--cron", "install", **env).returncode == 0
    assert project.make("cron-remove", **env).returncode == 0
    assert not table.exists()  # ours was the only line: no table left, as before
    table.write_text("0 3 * * * /usr/local/bin/backup\n")
    assert project.script("watchdog", "--cron", "install", **env).returncode == 0
    result = project.make("cron-remove", **env)
    assert result.returncode == 0, result.stderr
    assert table.read_text() == "0 3 * * * /usr/local/bin/backup\n"


def test_cron_install_without_crontab_says_what_to_do(project, tmp_path):
    empty = tmp_path / "nobin"
    empty.mkdir()
    python_dir = os.path.dirname(os.path.realpath(os.sys.executable))
    result = project.script("watchdog", "--cron", "install", PATH=f"{empty}{os.pathsep}{python_dir}")
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "crontab not found" in line and "apt-get install cron" in line and "systemd timer" in line


def test_a_run_without_a_recorded_runner_is_left_alone(project):
    """A hand-edited run.env (running, no RUNNER) has no process to look at: no reason to act."""
    (project.state).mkdir(parents=True, exist_ok=True)
    (project.state / "run.env").write_text("ATTEMPT=1\nSTATUS=running\nRUNNER=\n")
    result = project.script("watchdog", RESTART_BACKOFF="0")
    assert result.returncode == 0, result.stderr
    assert "no runner is recorded" in result.stderr
    assert project.run_env()["STATUS"] == "running" and "RESTARTS" not in project.run_env()
    assert not (project.state / "logs" / "watchdog.log").exists()
