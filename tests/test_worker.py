"""The warm worker (scripts/worker.py) under the local runner: real workers, the real
harness, real tiny Keras and scikit-learn scripts, real signals.

One STATE_DIR for the module: its Keras 3 and Keras 2 workers pay the TensorFlow import
once and serve every test that uses them (each test has its own checkout and attempt
numbers). Tests that watch a worker's own life (idle exit, a dead one, a race, an
unusable socket path) get a STATE_DIR of their own and a scikit-learn job (cheap to
import). Each worker a test started is stopped at its end.
"""

import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, SCRIPTS
from test_runtimes import job_for
from test_watchdog import wait_for

import parse_accuracy  # noqa: E402  (conftest puts scripts/ on sys.path)
import runners  # noqa: E402
import state  # noqa: E402
import worker  # noqa: E402

# What the script sees of its process; a few hundred samples made with numpy.
KERAS_SCRIPT = """import json, os, sys, time
import numpy as np
import keras
print("probe:", json.dumps({"ppid": os.getppid(), "argv": sys.argv, "path": sys.path, "cwd": os.getcwd(),
                            "env": dict(os.environ), "keras": keras.__version__}), flush=True)
rng = np.random.default_rng(0)
x = rng.normal(size=(400, 8)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
pause = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, l: time.sleep(float(os.environ.get("EPOCH_SLEEP", "0"))))
model.fit(x[:300], y[:300], epochs=int(os.environ.get("EPOCHS", "2")), batch_size=32,
          validation_data=(x[300:], y[300:]), verbose=2, callbacks=[pause])
print("Test accuracy:", model.evaluate(x[300:], y[300:], verbose=0)[1])
"""

SKLEARN_SCRIPT = """import json, os, sys, time
print("probe:", json.dumps({"ppid": os.getppid(), "env": dict(os.environ)}), flush=True)
print("to stderr", file=sys.stderr, flush=True)
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture(autouse=True)
def per_state_dir_workers(monkeypatch):
    """These tests watch the default: a worker per STATE_DIR (conftest shares them)."""
    monkeypatch.delenv("TWEAKOPS_WORKER_DIR", raising=False)


def probe(output: str) -> dict:
    [line] = [line for line in output.splitlines() if line.startswith("probe: ")]
    return json.loads(line[len("probe: "):])


def is_worker(pid: int) -> bool:
    """A live (not zombie) warm worker process."""
    if state.process_start_time(pid) is None:
        return False
    return "worker.py" in open(f"/proc/{pid}/cmdline").read()


def config(**values) -> dict:
    return {**state.config(os.devnull, {}), **values}


def workers_of(state_dir) -> set[int]:
    """The workers that ever started for this STATE_DIR (their `ready` lines)."""
    log = state_dir / "logs" / "worker.log"
    if not log.exists():
        return set()
    return {int(line.split()[3]) for line in log.read_text().splitlines() if ": ready in " in line}


def stop_workers(state_dir) -> None:
    for pid in workers_of(state_dir):
        if is_worker(pid):
            os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("warm") / "state"
    yield state_dir
    stop_workers(state_dir)


@pytest.fixture
def own_state(tmp_path):
    state_dir = tmp_path / "own-state"
    yield state_dir
    stop_workers(state_dir)


attempts = iter(range(1, 10_000))


def keras_job(tmp_path, state_dir, **fields):
    """A Keras job in its own checkout under the shared STATE_DIR, with a fresh attempt number."""
    job = job_for(tmp_path, KERAS_SCRIPT, model_type="mlp", **fields)
    return dataclasses.replace(job, state_dir=state_dir, attempt=next(attempts))


def sklearn_job(tmp_path, state_dir, **extra_env):
    job = job_for(tmp_path, SKLEARN_SCRIPT, model_type="sklearn", extra_env=extra_env)
    return dataclasses.replace(job, state_dir=state_dir, attempt=next(attempts))


def run_attempt(runner, job) -> tuple[dict, int]:
    """start, follow until it is no longer alive (as train.py does), then wait."""
    fields = runner.start(job)
    wait_for(lambda: not runner.alive(fields), timeout=120, step=0.2)
    return fields, runner.wait({**fields, "RESULT": str(job.state_dir / job.state_path("result"))})


def test_two_attempts_fork_from_one_warm_worker_and_book_their_accuracy(tmp_path, shared_state):
    runner = runners.get("local", config())
    seen = []
    for _ in range(2):
        job = keras_job(tmp_path, shared_state)
        fields, code = run_attempt(runner, job)
        log = job.log.read_text()
        assert code == 0, log
        seen.append(probe(log)["ppid"])
        accuracy, source = parse_accuracy.read_accuracy(job.state_dir / job.state_path("metrics"), job.log)
        assert source == "evaluate" and 0 < accuracy <= 1
        assert runners.read_result(job.state_dir / job.state_path("result")) == 0
    assert seen[0] == seen[1] and is_worker(seen[0])  # not this process: nothing ran cold


def test_the_child_sees_what_a_cold_run_sees_and_nothing_of_an_earlier_attempt(tmp_path, shared_state):
    warm, cold = runners.get("local", config()), runners.get("local", config(WARM_WORKER=False))
    job = keras_job(tmp_path, shared_state)
    code, output = warm.run_sync(job, {"PROBE_VAR": "one", "TWEAKOPS_BUILD_CHECK": "1"}, timeout=120)
    assert code == 0 and "build check passed" in output, output
    first = probe(output)
    assert first["env"]["PROBE_VAR"] == "one" and is_worker(first["ppid"])
    code, output = warm.run_sync(job, {"TWEAKOPS_BUILD_CHECK": "1"}, timeout=120)
    assert code == 0, output
    second = probe(output)
    assert second["ppid"] == first["ppid"] and "PROBE_VAR" not in second["env"]
    given = warm.env(job, {"TWEAKOPS_BUILD_CHECK": "1"})
    assert {k: v for k, v in second["env"].items() if k in given} == given  # the runner's env, all of it
    code, output = cold.run_sync(job, {"TWEAKOPS_BUILD_CHECK": "1"}, timeout=120)
    assert code == 0, output
    bare = probe(output)
    assert bare["ppid"] == os.getpid()
    for key in ("argv", "path", "cwd", "env", "keras"):
        assert second[key] == bare[key], key


def test_a_killed_child_is_seen_killed_by_anyone_and_its_worker_survives(tmp_path, shared_state):
    runner = runners.get("local", config())
    job = keras_job(tmp_path, shared_state, extra_env={"EPOCHS": "500", "EPOCH_SLEEP": "0.1"})
    fields = runner.start(job)
    fields["RESULT"] = str(job.state_dir / job.state_path("result"))
    pid = int(fields["PID"])
    metrics = job.state_dir / job.state_path("metrics")
    wait_for(lambda: metrics.exists() and json.loads(metrics.read_text())["epochs"], timeout=120, step=0.1)
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # it leads its own session
    watchdog = runners.get("local", config())  # another process's view: run.env fields only
    assert runner.alive(fields) and watchdog.alive(fields)
    os.killpg(pid, signal.SIGKILL)
    assert runner.wait(fields) == runners.EXIT_KILLED
    assert not watchdog.alive(fields) and watchdog.wait(fields) == runners.EXIT_KILLED
    parent = probe(job.log.read_text())["ppid"]
    assert is_worker(parent)
    _, code = run_attempt(runner, dataclasses.replace(job, attempt=next(attempts), extra_env={}))
    assert code == 0


def test_stop_ends_a_warm_child(tmp_path, shared_state):
    runner = runners.get("local", config())
    job = keras_job(tmp_path, shared_state, extra_env={"EPOCHS": "500", "EPOCH_SLEEP": "0.1"})
    fields = runner.start(job)
    wait_for(lambda: "probe:" in job.log.read_text(), timeout=60, step=0.1)
    runners.get("local", config()).stop(fields, grace=5)  # as the watchdog does: run.env fields only
    assert runner.wait(fields) == 128 + signal.SIGTERM
    assert not runner.alive(fields)


def test_a_keras2_job_gets_a_worker_of_its_own(tmp_path, shared_state):
    runner = runners.get("local", config())
    keras3 = probe(runner.run_sync(keras_job(tmp_path / "k3", shared_state), {"TWEAKOPS_BUILD_CHECK": "1"}, 120)[1])
    job = keras_job(tmp_path / "k2", shared_state, runtime="keras2")
    fields, code = run_attempt(runner, job)
    assert code == 0, job.log.read_text()
    keras2 = probe(job.log.read_text())
    assert keras2["keras"].startswith("2.") and keras3["keras"].startswith("3.")
    assert keras2["env"]["TF_USE_LEGACY_KERAS"] == "1"
    assert keras2["ppid"] != keras3["ppid"] and is_worker(keras2["ppid"]) and is_worker(keras3["ppid"])
    assert parse_accuracy.read_accuracy(job.state_dir / job.state_path("metrics"), job.log)[1] == "evaluate"


def test_run_sync_captures_both_streams_and_kills_past_its_timeout(tmp_path, own_state):
    runner = runners.get("local", config())
    code, output = runner.run_sync(sklearn_job(tmp_path, own_state), {"EXIT": "7"}, timeout=60)
    assert code == 7 and "to stderr" in output, output
    parent = probe(output)["ppid"]
    assert is_worker(parent)
    started = time.time()
    code, output = runner.run_sync(sklearn_job(tmp_path, own_state), {"SLEEP": "60"}, timeout=3)
    assert code == runners.EXIT_KILLED and time.time() - started < 15
    assert "probe:" in output and output.endswith("tweakops: killed after 3s\n")
    assert is_worker(parent)
    assert not any((own_state / "logs").glob("attempt-*.log"))


def test_an_idle_worker_exits_and_removes_its_socket(tmp_path, own_state, monkeypatch):
    monkeypatch.setenv("TWEAKOPS_WORKER_IDLE", "2")
    runner = runners.get("local", config())
    job = sklearn_job(tmp_path, own_state)
    code, output = runner.run_sync(job, {}, timeout=60)
    assert code == 0, output
    pid = probe(output)["ppid"]
    sock = worker.address(own_state, worker.key_for(PYTHON, runner.env(job)))
    assert sock.exists()
    wait_for(lambda: not is_worker(pid), timeout=30)
    assert not sock.exists()
    assert "s: exiting" in (own_state / "logs" / "worker.log").read_text()


def test_a_dead_workers_socket_is_replaced(tmp_path, own_state, capfd):
    runner = runners.get("local", config())
    job = sklearn_job(tmp_path, own_state)
    first = probe(runner.run_sync(job, {}, timeout=60)[1])["ppid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not is_worker(first), timeout=30)
    assert worker.address(own_state, worker.key_for(PYTHON, runner.env(job))).exists()  # stale
    code, output = runner.run_sync(job, {}, timeout=60)
    assert code == 0, output
    second = probe(output)["ppid"]
    assert second != first and is_worker(second)
    assert "warm worker unavailable" not in capfd.readouterr().err


def test_two_clients_racing_end_with_one_worker(tmp_path, own_state):
    code = ("import os, sys, dataclasses, runners, state\nfrom test_runtimes import job_for\n"
            "from pathlib import Path\n"
            "job = job_for(Path(sys.argv[1]), sys.argv[3], model_type='sklearn')\n"
            "job = dataclasses.replace(job, state_dir=Path(sys.argv[2]), attempt=int(sys.argv[4]))\n"
            "print(runners.get('local', state.config(os.devnull, {})).run_sync(job, {}, 60)[1])\n")
    env = {**os.environ, "PYTHONPATH": f"{SCRIPTS}{os.pathsep}{SCRIPTS.parent / 'tests'}"}
    clients = [subprocess.Popen([PYTHON, "-c", code, str(tmp_path / f"c{n}"), str(own_state), SKLEARN_SCRIPT, str(n)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in (1, 2)]
    outputs = [client.communicate(timeout=120) for client in clients]
    parents = {probe(out)["ppid"] for out, _ in outputs}
    assert len(parents) == 1 and len(workers_of(own_state)) == 1, outputs
    assert not any("warm worker unavailable" in err for _, err in outputs)


def test_an_unusable_socket_path_starts_the_attempt_cold_with_one_line(tmp_path, own_state, capfd):
    runner = runners.get("local", config())
    job = sklearn_job(tmp_path, own_state)
    sock = worker.address(own_state, worker.key_for(PYTHON, runner.env(job)))
    sock.mkdir(parents=True)  # something that is no socket in its way
    try:
        fields, code = run_attempt(runner, job)
    finally:
        sock.rmdir()
    assert code == 0
    assert probe(job.log.read_text())["ppid"] == os.getpid()  # cold: this process's child
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("tweakops: warm worker unavailable")]
    assert len(notes) == 1 and notes[0].endswith("; starting the attempt cold"), err


def test_warm_worker_off_or_a_derived_environment_runs_cold(tmp_path, own_state):
    job = sklearn_job(tmp_path, own_state)
    code, output = runners.get("local", config(WARM_WORKER=False)).run_sync(job, {}, timeout=60)
    assert code == 0 and probe(output)["ppid"] == os.getpid()
    runner = runners.get("local", config())
    assert not runner.warm(dataclasses.replace(job, requirements=tmp_path / "requirements.txt"))
    assert not workers_of(own_state)


def test_a_classifier_fitted_in_a_child_of_a_warm_sklearn_worker_gets_its_training_accuracy(tmp_path, own_state):
    """The worker imported the estimator modules before the harness patched the fit's data
    validation: their bound name is patched too, so the training accuracy is still there."""
    source = (Path(__file__).parent / "fixtures" / "harness" / "sklearn_train_score.py").read_text()
    job = dataclasses.replace(job_for(tmp_path, source, model_type="sklearn",
                                      extra_env={"SHAPE": "deep", "SCORE_WITH": "accuracy_score"}),
                              state_dir=own_state, attempt=next(attempts))
    runner = runners.get("local", config())
    fields, code = run_attempt(runner, job)
    assert code == 0, job.log.read_text()
    assert "sklearn.tree" in worker.SKLEARN_COMMON
    assert "ready in" in (own_state / "logs" / "worker.log").read_text()    # it ran in a worker's child
    data = json.loads((job.state_dir / job.state_path("metrics")).read_text())
    assert data["train_score"] == 1.0 and data["scores"][-1] < 0.9


def test_under_tweakops_worker_dir_one_worker_serves_every_state_dir(tmp_path, monkeypatch):
    """Several projects of one user (a test suite's STATE_DIRs) share a worker per key; the
    worker's own environment holds nothing of the project that started it."""
    shared = tmp_path / "workers"
    monkeypatch.setenv("TWEAKOPS_WORKER_DIR", str(shared))
    runner = runners.get("local", config())
    one, two = tmp_path / "one" / "state", tmp_path / "two" / "state"
    try:
        code, output = runner.run_sync(sklearn_job(tmp_path / "a", one), {}, timeout=60)
        assert code == 0, output
        first = probe(output)
        code, output = runner.run_sync(sklearn_job(tmp_path / "b", two), {}, timeout=60)
        assert code == 0, output
        second = probe(output)
        assert first["ppid"] == second["ppid"] and is_worker(first["ppid"])
        assert [p.suffix for p in shared.iterdir() if p.suffix == ".sock"] == [".sock"]
        assert not (one / "workers").exists() and not (two / "workers").exists()
        environ = Path(f"/proc/{first['ppid']}/environ").read_bytes().split(b"\0")
        names = {item.split(b"=", 1)[0].decode() for item in environ if item}
        assert "DATA_DIR" not in names and {n for n in names if n.startswith("TWEAKOPS_")} <= {"TWEAKOPS_RUNTIME"}
        assert second["env"]["TWEAKOPS_METRICS"].startswith(str(two))   # each child: its own attempt's files
    finally:
        stop_workers(one)
