"""The Docker runner against a real engine: real containers train real models.

The engine is the machine's own or one the session fixture starts (conftest.py); the
images are built locally without pulling. Where no engine can run, these tests skip
with the reason (pytest -ra prints it). Nothing is faked.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import PYTHON, ROOT, SCRIPTS

pytestmark = pytest.mark.slow
needs_engine = pytest.mark.docker

SKLEARN_EXAMPLE = (ROOT / "models" / "sklearn" / "model.py").read_text()

# Runs inside the container before the example trains: what can untrusted code do there?
SANDBOX_PROBE = '''
import errno, os, socket
print("probe: uid", os.getuid())
for where in (os.environ["DATA_DIR"], "/", "/workspace"):
    try:
        open(os.path.join(where, "written-from-the-container"), "w").close()
        print("probe: write to", where, "allowed")
    except OSError as exc:
        print("probe: write to", where, "refused", errno.errorcode[exc.errno])
print("probe: interfaces", sorted(name for _, name in socket.if_nameindex()))
print("probe: capabilities", [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
'''


def docker(*args, check=True):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def container_state(name="tweakops-sklearn"):
    result = docker("inspect", "--type", "container", name, check=False)
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def ready(project, source=None, **env):
    if source is not None:
        project.push_change("model.py", source)
    for name in ("fetch", "detect_type"):
        result = project.script(name, **env)
        assert result.returncode == 0, result.stderr


@pytest.fixture
def sklearn_project(project, docker_image):
    docker_image("sklearn")
    project.seed_remote(ROOT / "models" / "sklearn" / "model.py")
    project.env["RUNNER"] = "docker"
    return project


@needs_engine
def test_sklearn_trains_in_a_container_with_the_data_mounted_read_only(sklearn_project):
    project = sklearn_project
    ready(project, SANDBOX_PROBE + SKLEARN_EXAMPLE)
    result = project.make("train")
    assert result.returncode == 0, result.stderr
    assert "probe: uid" in result.stdout  # the container's output, followed live from the log
    project.make("accuracy")
    assert (project.state / "exit_code").read_text().strip() in ("0", "3")
    run = project.run_env()
    assert run["RUNNER"] == "docker" and run["STATUS"] == "trained"
    # the accuracy is the one the container wrote into the STATE_DIR mount
    metrics = json.loads((project.state / "metrics" / "attempt-1.json").read_text())
    assert metrics["framework"] == "sklearn" and metrics["finished"] is True
    assert float(run["ACCURACY"]) == pytest.approx(metrics["accuracy"]) and 0.3 < metrics["accuracy"] <= 1
    assert run["ACCURACY_SOURCE"] == "score"
    assert json.loads((project.state / "results" / "attempt-1.json").read_text())["exit_code"] == 0

    log = (project.state / "logs" / "attempt-1.log").read_text()
    assert "probe: uid 1000" in log
    assert "probe: write to /data refused EROFS" in log       # DATA_DIR is read-only
    assert "probe: write to / refused EROFS" in log            # so is the image
    assert "probe: interfaces ['lo']" in log                   # --network none
    assert "probe: capabilities 0000000000000000" in log       # --cap-drop ALL
    assert not any(p.name == "written-from-the-container" for p in project.data.iterdir())

    info = container_state()
    assert info["State"]["ExitCode"] == 0 and info["Config"]["User"] == "1000:1000"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/data"]["RW"] is False and mounts["/data"]["Source"] == str(project.data)
    assert mounts["/state"]["RW"] is True and mounts["/state"]["Source"] == str(project.state)
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
    assert "no-new-privileges" in host["SecurityOpt"] and host["Memory"] == 4 * 1024**3 and host["PidsLimit"] > 0


@needs_engine
def test_the_previous_container_of_the_same_name_is_removed_first(sklearn_project, docker_image):
    project = sklearn_project
    old = docker("create", "--name", "tweakops-sklearn", docker_image("sklearn"), "true", check=False)
    if old.returncode != 0:  # one is left from an earlier test: that one is the old one
        old_id = container_state()["Id"]
    else:
        old_id = old.stdout.strip()
    ready(project)
    result = project.script("train")
    assert result.returncode == 0, result.stderr
    assert docker("inspect", "--type", "container", old_id, check=False).returncode != 0
    assert container_state()["Id"] != old_id


@needs_engine
def test_docker_kill_leaves_the_attempt_crashed_for_the_watchdog(sklearn_project):
    project = sklearn_project
    ready(project, "import time\nfrom sklearn.tree import DecisionTreeClassifier\n"
                   "print('training', flush=True)\ntime.sleep(300)\nDecisionTreeClassifier().fit([[0], [1]], [0, 1])\n")
    train = subprocess.Popen([PYTHON, str(SCRIPTS / "train.py")], cwd=ROOT, env=project.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = project.state / "logs" / "attempt-1.log"
        deadline = time.time() + 120
        while time.time() < deadline and not (log.exists() and "training" in log.read_text()):
            time.sleep(0.5)
        assert project.run_env()["STATUS"] == "running" and project.run_env()["CONTAINER"] == "tweakops-sklearn"
        docker("kill", "tweakops-sklearn")
        _, stderr = train.communicate(timeout=120)
    finally:
        train.kill()
    assert train.returncode == 1, stderr
    assert "was killed; make watchdog restarts it" in stderr
    run = project.run_env()
    assert run["STATUS"] == "crashed" and run["EXIT_CODE"] == "137"
    assert not (project.state / "results" / "attempt-1.json").exists()  # how the watchdog tells a crash


@needs_engine
def test_an_oom_kill_is_status_oom_and_exit_5(sklearn_project):
    project = sklearn_project
    ready(project, "import numpy as np\nfrom sklearn.tree import DecisionTreeClassifier\n"
                   "blocks = [np.ones(2**24) for _ in range(16)]  # 128 MB each, 2 GB in all\n"
                   "DecisionTreeClassifier().fit([[0], [1]], [0, 1])\n")
    result = project.script("train", TRAIN_MEMORY="256m")
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: container tweakops-sklearn ran out of memory (TRAIN_MEMORY=256m) and was killed; "
        f"raise TRAIN_MEMORY or make the model smaller; log: {project.state / 'logs' / 'attempt-1.log'}")
    assert project.history()[-1]["outcome"] == "failed" and project.history()[-1]["reason"] == "oom"
    run = project.run_env()
    assert run["STATUS"] == "oom" and run["EXIT_CODE"] == "137"
    assert container_state()["State"]["OOMKilled"] is True


@needs_engine
def test_a_missing_image_is_status_image_missing_and_exit_5(project, docker_engine):
    ready(project, IMAGE_KERAS="tweakops/no-such-image:1")  # detect records the image in run.env
    result = project.script("train", RUNNER="docker")
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("error: image tweakops/no-such-image:1 is missing; build it with make images "
                                     "(or make images-pull with DOCKER_REGISTRY set)")
    assert project.run_env()["STATUS"] == "image-missing"


@needs_engine
def test_a_container_that_cannot_start_is_status_start_failed_and_exit_5(sklearn_project):
    project = sklearn_project
    ready(project)
    result = project.script("train", TRAIN_MEMORY="lots")
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: container tweakops-sklearn could not start: ")
    assert project.run_env()["STATUS"] == "start-failed"


@needs_engine
def test_gpus_put_keras_models_in_the_gpu_image_with_gpus_passed(project, docker_image):
    if shutil.which("nvidia-container-runtime") or shutil.which("nvidia-container-toolkit"):
        pytest.skip("this machine has a GPU runtime: the container would start")
    keras_image = docker_image("keras")  # stands in for IMAGE_GPU: only what docker run is told matters
    ready(project)
    result = project.script("train", RUNNER="docker", GPUS="all", IMAGE_GPU=keras_image)
    assert result.returncode == 5, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: container tweakops-cnn could not start: Error response from daemon: ")
    assert "capabilities: [[gpu]]" in last  # --gpus all reached the engine, which has no GPU runtime
    assert project.run_env()["STATUS"] == "start-failed"


@needs_engine
def test_runner_auto_takes_docker_when_the_engine_and_image_are_there(sklearn_project):
    project = sklearn_project
    ready(project)
    result = project.script("train", RUNNER="auto")
    assert result.returncode == 0, result.stderr
    assert "RUNNER=auto: a Docker engine answers and the image exists: using docker" in result.stderr
    assert project.run_env()["RUNNER"] == "docker"


@needs_engine
def test_the_keras_cnn_trains_in_its_container(project, docker_image):
    docker_image("keras")
    ready(project)
    result = project.script("train", RUNNER="docker")
    assert result.returncode == 0, result.stderr
    assert "Test accuracy:" in result.stdout  # the script's own output, followed live from the log
    assert project.script("parse_accuracy").returncode in (0, 3)
    run = project.run_env()
    assert run["RUNNER"] == "docker" and run["ACCURACY_SOURCE"] == "evaluate"
    metrics = json.loads((project.state / "metrics" / "attempt-1.json").read_text())
    assert metrics["framework"] == "keras" and metrics["epochs"] and metrics["finished"] is True
    assert container_state("tweakops-cnn")["State"]["ExitCode"] == 0


# --- no engine needed: what happens when there is none ------------------------------------

def test_an_engine_that_does_not_answer_is_status_engine_down_and_exit_5(project):
    ready(project)
    result = project.script("train", RUNNER="docker", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("error: no Docker engine answers (docker version failed); start one with "
                                     "make engine-start, or use RUNNER=local")
    assert project.run_env()["STATUS"] == "engine-down"


def test_runner_auto_falls_back_to_local_and_says_so(project):
    project.seed_remote(ROOT / "models" / "sklearn" / "model.py")
    ready(project)
    result = project.script("train", RUNNER="auto", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert result.returncode == 0, result.stderr
    assert "RUNNER=auto: no usable Docker engine or image: using the local runner" in result.stderr
    assert project.run_env()["RUNNER"] == "local"


@needs_engine
@pytest.mark.slow
def test_the_watchdog_restarts_a_killed_container_and_it_resumes(project, docker_image):
    docker_image("keras")
    project.env["RUNNER"] = "docker"
    ready(project, (ROOT / "models" / "cnn" / "model.py").read_text().replace("epochs = 1", "epochs = 5"))
    metrics = project.state / "metrics" / "attempt-1.json"

    def epochs():
        try:
            return len(json.loads(metrics.read_text())["epochs"])
        except (OSError, ValueError, KeyError):
            return 0

    fast = {"RESTART_BACKOFF": "0", "HEARTBEAT_TIMEOUT": "120"}
    train = subprocess.Popen([PYTHON, str(SCRIPTS / "train.py")], cwd=ROOT, env={**project.env, **fast},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and epochs() < 2:
        time.sleep(0.5)
    docker("kill", "tweakops-cnn")
    train.communicate(timeout=120)
    assert project.run_env()["STATUS"] == "crashed"
    result = project.script("watchdog", **fast)
    assert "restarted it from its checkpoint" in result.stderr, result.stderr
    deadline = time.time() + 300
    while time.time() < deadline and project.run_env().get("STATUS") not in ("trained", "failed"):
        time.sleep(1)
    assert project.run_env()["STATUS"] == "trained"
    data = json.loads(metrics.read_text())
    assert data["resumed_from_epoch"] >= 1
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3, 4, 5]
