"""What a model's script may see and use: its environment, its memory, its heartbeat.

Real runners, real warm workers, the real harness, real processes and kills: a script
that prints its environment, one whose memory grows, one that sleeps and one that
computes, tiny Keras models that never train or diverge. Scripts in
tests/fixtures/safety/.
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

from conftest import PYTHON, ROOT, SCRIPTS, wait_for

import runners  # noqa: E402  (conftest puts scripts/ on sys.path)
import state  # noqa: E402

HARNESS = SCRIPTS / "harness.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "safety"
SECRETS = {"SMTP_PASSWORD": "s3cr3t-xyz", "SMTP_USER": "mailer-xyz", "JENKINS_TOKEN": "jenkins-tok-xyz",
           "JENKINS_USER": "jenkins-user-xyz", "NOTIFY_WEBHOOK_URL": "https://hooks.example/xyz",
           "MODEL_REPO": "https://user:repo-tok-xyz@example.com/m.git", "JENKINS_BUILD_TOKEN": "build-tok-xyz",
           "NVIDIA_API_KEY": "nv-key-xyz"}
MIB = 1 << 20




@pytest.fixture(autouse=True)
def per_state_dir_workers(monkeypatch):
    """These tests watch the default: a worker per STATE_DIR (conftest shares them)."""
    monkeypatch.delenv("TWEAKOPS_WORKER_DIR", raising=False)


def config(state_dir: Path, **values) -> dict:
    return {**state.config(os.devnull, {}), "STATE_DIR": str(state_dir), **values}


def job_of(tmp_path: Path, script: str, model_type: str = "sklearn", attempt: int = 1, **fields) -> runners.Job:
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    (checkout / "model.py").write_text((FIXTURES / script).read_text())
    return runners.Job(attempt=attempt, model_file="model.py", model_type=model_type, checkout=checkout,
                       data_dir=None, state_dir=tmp_path / "state", **fields)


def workers_of(state_dir: Path) -> set[int]:
    log = state_dir / "logs" / "worker.log"
    return {int(line.split()[3]) for line in log.read_text().splitlines() if ": ready in " in line} \
        if log.exists() else set()


@pytest.fixture
def stop_workers(tmp_path):
    yield
    for pid in workers_of(tmp_path / "state"):
        try:
            if "worker.py" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def run_attempt(runner: runners.Runner, job: runners.Job) -> int:
    """As train.py does: start, follow until it is not alive, wait (which may raise)."""
    fields = runner.start(job)
    fields["RESULT"] = str(job.state_dir / job.state_path("result"))
    wait_for(lambda: not runner.alive(fields), step=0.1)
    return runner.wait(fields)


# ---------------------------------------------------------------------------
# secrets

@pytest.mark.parametrize("warm", [True, False], ids=["warm-worker", "cold"])
def test_the_script_sees_no_credential_and_what_train_env_names(tmp_path, monkeypatch, stop_workers, warm):
    for key, value in {**SECRETS, "MY_KEY": "my-value-1", "OTHER_KEY": "other-value"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONSTARTUP", str(tmp_path / "startup.py"))
    cfg = config(tmp_path / "state", WARM_WORKER=warm, TRAIN_ENV="MY_KEY, JENKINS_TOKEN NOT_SET_ANYWHERE")
    job = job_of(tmp_path, "prints_environ.py")
    assert run_attempt(runners.get("local", cfg), job) == 0
    log = job.log.read_text()
    [seen] = [json.loads(line.split(" ", 1)[1]) for line in log.splitlines() if line.startswith("environ: ")]
    [raw] = [json.loads(line.split(" ", 1)[1]) for line in log.splitlines() if line.startswith("proc-environ: ")]
    assert seen["MY_KEY"] == "my-value-1"                     # named in TRAIN_ENV
    assert seen["JENKINS_TOKEN"] == "jenkins-tok-xyz"         # named on purpose: the user's choice
    for key in ("OTHER_KEY", "NOT_SET_ANYWHERE", "PYTHONSTARTUP", *set(SECRETS) - {"JENKINS_TOKEN"}):
        assert key not in seen, key
    for value in set(SECRETS.values()) - {"jenkins-tok-xyz"}:
        assert value not in log, value                        # nor in the process's own environ block
    assert seen["PATH"] == os.environ["PATH"] and seen["TWEAKOPS_ATTEMPT"] == "1"
    assert not any(entry.startswith(("SMTP_", "OTHER_KEY=")) for entry in raw), raw
    if warm:
        [worker_pid] = workers_of(job.state_dir)
        own = Path(f"/proc/{worker_pid}/environ").read_bytes().decode()
        assert "MY_KEY" not in own and "jenkins-tok-xyz" not in own and "s3cr3t-xyz" not in own
    else:
        assert not workers_of(job.state_dir)


def test_the_docker_runner_passes_train_env_names_by_name_only(tmp_path, monkeypatch):
    for key, value in {**SECRETS, "MY_KEY": "my-value-1"}.items():
        monkeypatch.setenv(key, value)
    runner = runners.get("docker", config(tmp_path / "state", TRAIN_ENV="MY_KEY,NOT_SET_ANYWHERE"))
    args = runner.run_args(job_of(tmp_path, "prints_environ.py"))
    named = [args[i + 1] for i, arg in enumerate(args) if arg == "--env"]
    assert "MY_KEY" in named and "NOT_SET_ANYWHERE" not in named
    assert "TWEAKOPS_ATTEMPT=1" in named and not any(n.startswith("TWEAKOPS_MEMORY_LIMIT") for n in named)
    assert not any(value in arg for arg in args for value in (*SECRETS.values(), "my-value-1"))


def test_a_bad_train_env_or_train_memory_is_one_line_and_exit_2(tmp_path):
    job = job_of(tmp_path, "prints_environ.py")
    for values, words in (({"TRAIN_ENV": "MY-KEY"}, "TRAIN_ENV names 'MY-KEY'"),
                          ({"TRAIN_MEMORY": "lots"}, "TRAIN_MEMORY='lots' is not a size")):
        with pytest.raises(state.TweakopsError) as failed:
            runners.get("local", config(tmp_path / "state", **values)).start(job)
        assert failed.value.code == state.EXIT_BAD_INPUT and words in str(failed.value)
        assert "\n" not in str(failed.value)
    assert not job.log.exists()


def test_train_memory_reads_docker_sizes():
    assert [runners.memory_bytes(t) for t in ("4g", "300m", "512k", "1048576", "1.5g", "2GB", "0", "")] == [
        4 << 30, 300 << 20, 512 << 10, 1048576, 3 << 29, 2 << 30, 0, 0]


# ---------------------------------------------------------------------------
# memory

@pytest.mark.parametrize("warm", [True, False], ids=["warm-worker", "cold"])
def test_memory_over_train_memory_is_oom_exit_5_and_status_oom(tmp_path, stop_workers, warm):
    cfg = config(tmp_path / "state", WARM_WORKER=warm, TRAIN_MEMORY="300m")
    job = job_of(tmp_path, "memory_grows.py", attempt=4)
    with pytest.raises(state.TweakopsError) as failed:
        run_attempt(runners.get("local", cfg), job)
    assert failed.value.code == state.EXIT_RUNNER_FAILED
    assert str(failed.value) == ("attempt 4 ran out of memory (TRAIN_MEMORY=300m) and was killed; "
                                 "raise TRAIN_MEMORY or make the model smaller")
    # the runner reports (status, exit code); train.py records them in run.env
    assert isinstance(failed.value, runners.RunnerFailed)
    assert (failed.value.status, failed.value.exit_code) == ("oom", 137)
    record = runners.read_record(job.state_dir / job.state_path("result"))
    assert record["exit_code"] == 137 and record["reason"] == "oom"
    assert record["limit"] == 300 * MIB < record["used"] < 2000 * MIB
    log = job.log.read_text()
    assert "holding 2000 MB" not in log and "accuracy" not in log
    assert [line for line in log.splitlines() if line.startswith("tweakops: error: out of memory")]


def cgroup_with_limit(name: str, limit: int) -> Path | None:
    """A memory cgroup of our own with `limit` bytes (v1 memory.limit_in_bytes or v2
    memory.max), or None where this machine lets us make none."""
    candidates = []
    if Path("/sys/fs/cgroup/memory/cgroup.procs").exists():
        candidates.append((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"))
    try:
        if "memory" in Path("/sys/fs/cgroup/cgroup.subtree_control").read_text().split():
            candidates.append((Path("/sys/fs/cgroup"), "memory.max"))
    except OSError:
        pass
    for parent, limit_file in candidates:
        group = parent / name
        try:
            group.mkdir()
            (group / limit_file).write_text(str(limit))
            return group
        except OSError:
            if group.exists():
                group.rmdir()
    return None


DRIVER = """import json, os, sys
import runners, state
from pathlib import Path
cfg = {**state.config(os.devnull, {}), "STATE_DIR": sys.argv[1], "WARM_WORKER": False, "TRAIN_MEMORY": "0"}
job = runners.Job(attempt=2, model_file="model.py", model_type="sklearn", checkout=Path(sys.argv[2]),
                  data_dir=None, state_dir=Path(sys.argv[1]))
runner = runners.get("local", cfg)
fields = runner.start(job)
try:
    print(json.dumps({"code": runner.wait(fields)}))
except runners.RunnerFailed as exc:
    print(json.dumps({"error": exc.code, "message": str(exc), "status": exc.status}))
"""


def test_a_kill_by_the_kernels_oom_killer_is_oom_too(tmp_path):
    group = cgroup_with_limit(f"tweakops-test-{os.getpid()}", 400 * MIB)
    if group is None:
        pytest.skip("no memory cgroup can be made here (needs root and a writable cgroup file system)")
    job = job_of(tmp_path, "memory_grows.py", attempt=2)
    procs = group / "cgroup.procs"
    try:
        driver = subprocess.run([PYTHON, "-c", DRIVER, str(job.state_dir), str(job.checkout)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(SCRIPTS)}, capture_output=True, text=True,
                                timeout=300, preexec_fn=lambda: procs.write_text(str(os.getpid())))
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    assert driver.returncode == 0, driver.stderr
    said = json.loads(driver.stdout.strip().splitlines()[-1])
    assert said.get("error") == state.EXIT_RUNNER_FAILED, said
    assert said["message"].startswith("attempt 2 ran out of memory"), said
    record = runners.read_record(job.state_dir / job.state_path("result"))
    assert record["reason"] == "oom" and record["killed_by"] == "kernel" and record["exit_code"] == 137
    assert said["status"] == "oom"


@pytest.mark.slow
def test_the_bundled_cnn_forked_from_a_warm_worker_fits_in_the_default_memory(tmp_path, digits, stop_workers):
    cfg = config(tmp_path / "state")   # TRAIN_MEMORY=4g, WARM_WORKER on
    assert cfg["TRAIN_MEMORY"] == "4g" and cfg["WARM_WORKER"]
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "model.py").write_text((ROOT / "models" / "cnn" / "model.py").read_text())
    job = runners.Job(attempt=1, model_file="model.py", model_type="cnn", checkout=checkout, data_dir=digits,
                      state_dir=tmp_path / "state")
    runner = runners.get("local", cfg)
    assert run_attempt(runner, job) == 0, job.log.read_text()[-3000:]
    assert workers_of(job.state_dir), "it did not run from a warm worker"
    metrics = json.loads((job.state_dir / job.state_path("metrics")).read_text())
    assert metrics["trained"] is True and 0 < metrics["memory_peak"] < runners.memory_bytes("4g") / 2
    print(f"cnn example, warm child: peak PSS {metrics['memory_peak'] / MIB:.0f} MiB")


# ---------------------------------------------------------------------------
# the harness on its own: heartbeat, no training, divergence

def harness(tmp_path: Path, script: str, **extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWEAKOPS_")}
    env.update({"TWEAKOPS_METRICS": str(tmp_path / "metrics.json"), "TWEAKOPS_RESULT": str(tmp_path / "result.json"),
                "TWEAKOPS_HEARTBEAT": str(tmp_path / "heartbeat"), "TWEAKOPS_ATTEMPT": "3",
                "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **extra})
    out = open(tmp_path / "out.log", "w")
    err = open(tmp_path / "err.log", "w")
    return subprocess.Popen([sys.executable, str(HARNESS), script], cwd=FIXTURES, env=env, stdout=out, stderr=err,
                            start_new_session=True)


def finish(tmp_path: Path, proc: subprocess.Popen) -> tuple[int, str, str]:
    code = proc.wait(timeout=300)
    return code, (tmp_path / "out.log").read_text(), (tmp_path / "err.log").read_text()


def heartbeat(tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "heartbeat"
    return path.stat().st_mtime_ns, path.read_text()


@pytest.mark.parametrize("script", ["sleeps.py", "busy.py"])
def test_the_heartbeat_moves_only_while_the_script_makes_progress(tmp_path, script):
    every = 0.3
    proc = harness(tmp_path, script, TWEAKOPS_FRAMEWORK="sklearn", TWEAKOPS_HEARTBEAT_EVERY=str(every))
    try:
        wait_for(lambda: (tmp_path / "out.log").read_text().strip() in ("sleeping", "busy"), timeout=60)
        time.sleep(3 * every)   # a beat for the imports before the script may still be due
        first = heartbeat(tmp_path)
        assert first[1].split()[0] == "3" and len(first[1].split()) == 4   # attempt epoch batch time
        if script == "busy.py":
            wait_for(lambda: heartbeat(tmp_path) != first, timeout=30)
        else:
            time.sleep(10 * every)
            assert heartbeat(tmp_path) == first, "a sleeping script's heartbeat moved"
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_keras_script_that_never_trains_exits_65_with_one_line(tmp_path):
    code, out, err = finish(tmp_path, harness(tmp_path, "keras_never_fits.py"))
    assert code == 65, err
    assert "accuracy:" in out   # the script ran to its end and printed an untrained model's accuracy
    assert err.strip().splitlines()[-1] == ("tweakops: error: the script never trains a model: no fit() call ran; "
                                            "call model.fit(...) in keras_never_fits.py")
    assert err.count("tweakops: error:") == 1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["trained"] is False and metrics["finished"] is False
    assert json.loads((tmp_path / "result.json").read_text())["reason"] == "never-trained"

    check = tmp_path / "check"
    check.mkdir()
    code, _, err = finish(check, harness(check, "keras_never_fits.py", TWEAKOPS_BUILD_CHECK="1"))
    assert code == 0 and "never trains" not in err, err   # a build check is not judged on it


def test_a_custom_training_loop_counts_as_training(tmp_path):
    code, out, err = finish(tmp_path, harness(tmp_path, "keras_custom_loop.py"))
    assert code == 0, err
    assert "never trains" not in err and "accuracy:" in out
    assert json.loads((tmp_path / "metrics.json").read_text())["trained"] is True


def test_a_nan_loss_stops_the_fit_with_one_line_and_is_recorded(tmp_path):
    weights = tmp_path / "weights" / "attempt-3.weights.h5"
    code, out, err = finish(tmp_path, harness(tmp_path, "keras_diverges.py", TWEAKOPS_WEIGHTS_OUT=str(weights)))
    assert code == 0, err    # the script goes on to its evaluate: a diverged model is booked, not a crash
    said = [line for line in err.splitlines() if "the loss became" in line]
    assert said == ["tweakops: the loss became NaN at epoch 1: the training diverged; "
                    "a smaller learning rate usually fixes it"], err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["diverged"] == 1
    assert [e["epoch"] for e in metrics["epochs"]] == [1]   # of 5: the fit stopped there
    assert "Epoch 2/5" not in out
    assert not weights.exists()   # nothing to warm-start from
