"""Shared test fixtures: an isolated tweakops project (state, checkout, data, remote) per test.

Everything is real: a bare git repository on disk as the remote, the generated digits
dataset, the scripts run as subprocesses exactly as make and Jenkins run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
PYTHON = sys.executable
sys.path.insert(0, str(SCRIPTS))

import state  # noqa: E402

# warm workers (scripts/worker.py, ~260 MB for Keras): one per key for the whole session,
# whatever the test's STATE_DIR (TWEAKOPS_WORKER_DIR), so the TensorFlow import is paid once
# per runtime, not once per test (test_worker.py and test_runner_safety.py watch the
# per-STATE_DIR default and unset it); they go after 20 s idle instead of 300
os.environ.setdefault("TWEAKOPS_WORKER_IDLE", "20")
SESSION_WORKERS: list[str] = []


def pytest_configure(config):
    """In the pytest process only (a test's subprocess may import this module too)."""
    if "TWEAKOPS_WORKER_DIR" not in os.environ:
        SESSION_WORKERS.append(tempfile.mkdtemp(prefix="tweakops-workers-"))
        os.environ["TWEAKOPS_WORKER_DIR"] = SESSION_WORKERS[0]


def pytest_unconfigure(config):
    """The session's worker folder goes at the end: its workers see their socket gone and exit."""
    for folder in SESSION_WORKERS:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """The example dataset, generated once per session."""
    data = tmp_path_factory.mktemp("data") / "digits"
    env = {**os.environ, "TWEAKOPS_ENV_FILE": os.devnull}
    subprocess.run([PYTHON, str(SCRIPTS / "make_data.py"), "--to", str(data)], env=env, check=True, capture_output=True)
    return data


class Project:
    """An isolated configuration: its own STATE_DIR, checkout, remote and data."""

    def __init__(self, root: Path, data: Path, example: str = "cnn"):
        self.root = root
        self.state = root / "state"
        self.checkout = root / "checkout"
        self.remote = root / "remote.git"
        self.data = data
        self.env = {
            **os.environ,
            "TWEAKOPS_ENV_FILE": os.devnull,     # a developer's .env never leaks into tests
            "STATE_DIR": str(self.state),
            "CHECKOUT_DIR": str(self.checkout),
            "DATA_DIR": str(data),
            "MODEL_REPO": str(self.remote),
            "MODEL_BRANCH": "main",
            "RUNNER": "local",
            "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "NO_COLOR": "1",
        }
        for key in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
            self.env.pop(key, None)   # under make test, a make the tests run is still a user's top-level make
        for key in list(self.env):
            if key in state.DEFAULTS and key not in ("STATE_DIR", "CHECKOUT_DIR", "DATA_DIR", "MODEL_REPO",
                                                     "MODEL_BRANCH", "RUNNER", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"):
                del self.env[key]  # the machine's settings never leak in either
        if example:
            self.seed_remote(ROOT / "models" / example / "model.py")

    def seed_remote(self, model: Path, name: str = "model.py") -> None:
        work = self.root / "seed"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        shutil.copy(model, work / name)
        self.git("init", "-q", "-b", "main", cwd=work)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", "model", cwd=work)
        shutil.rmtree(self.remote, ignore_errors=True)
        self.git("clone", "-q", "--bare", str(work), str(self.remote))

    def push_change(self, name: str, text: str, message: str = "change") -> str:
        """Commit `text` as `name` to the remote's main branch, like a developer's push."""
        work = self.root / "dev"
        shutil.rmtree(work, ignore_errors=True)
        self.git("clone", "-q", str(self.remote), str(work))
        (work / name).write_text(text)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", message, cwd=work)
        self.git("push", "-q", "origin", "main", cwd=work)
        return self.git("rev-parse", "HEAD", cwd=work).stdout.strip()

    def git(self, *args, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=cwd, env=self.env, check=True, capture_output=True, text=True)

    def script(self, name: str, *args: str, **env) -> subprocess.CompletedProcess:
        """Run scripts/<name>.py in its own process, as a make target does."""
        return subprocess.run([PYTHON, str(SCRIPTS / f"{name}.py"), *args], cwd=ROOT,
                              env={**self.env, **env}, capture_output=True, text=True, timeout=600)

    def make(self, *targets: str, **env) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "-s", *targets], cwd=ROOT, env={**self.env, **env},
                              capture_output=True, text=True, timeout=900)

    def run_env(self) -> dict:
        return state.read_env(self.state / "run.env")

    def history(self) -> list[dict]:
        return state.read_history({"STATE_DIR": str(self.state)})


def wait_for(predicate, timeout: float = 240, step: float = 0.3):
    """Poll `predicate` until it returns something true (returned), or fail after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out")


@pytest.fixture
def project(tmp_path, digits) -> Project:
    return Project(tmp_path, digits)


# ---------------------------------------------------------------------------
# Docker (tests marked docker): a real engine, real images, built without pulling.

@pytest.fixture(scope="session")
def docker_engine():
    """An engine that answers: the machine's own, else a dockerd started here and stopped
    at the end (scripts/engine.py). Where none can run, the tests skip saying why."""
    import dockercli

    started = False
    if dockercli.engine_version() is None:
        if shutil.which("dockerd") is None or shutil.which("docker") is None:
            pytest.skip("no Docker engine: docker.io is not installed (make system-deps installs it as root)")
        if os.geteuid() != 0:
            pytest.skip("no Docker engine answers and only root can start dockerd (make engine-start)")
        result = subprocess.run([PYTHON, str(SCRIPTS / "engine.py"), "start"], capture_output=True, text=True,
                                env={**os.environ, "TWEAKOPS_ENV_FILE": os.devnull}, timeout=120)
        if result.returncode != 0:
            pytest.skip(f"no Docker engine: {result.stderr.strip().splitlines()[-1]}")
        started = True
    yield dockercli.engine_version()
    if started:
        subprocess.run([PYTHON, str(SCRIPTS / "engine.py"), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def docker_image(docker_engine):
    """build(variant) -> tag: the image, built once per session only when missing or out of
    date (base, wheels and layers are cached under build/, so a second run takes seconds)."""
    done: dict[str, str] = {}

    def build(variant: str) -> str:
        if variant not in done:
            env = {**os.environ, "TWEAKOPS_ENV_FILE": os.devnull}
            result = subprocess.run([PYTHON, str(SCRIPTS / "images.py"), "build", variant], env=env,
                                    capture_output=True, text=True, timeout=1800)
            assert result.returncode == 0, result.stderr[-3000:]
            done[variant] = state.DEFAULTS[{"keras": "IMAGE_KERAS", "sklearn": "IMAGE_SKLEARN"}[variant]]
        return done[variant]

    return build
