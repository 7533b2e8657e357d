"""The runner interface: where an attempt's training runs.

A runner starts `harness.py MODEL_FILE` detached from the caller, with the output
going straight to the attempt's log file, so a training survives the death of
train.py (the watchdog looks after it); it answers whether a run is alive, waits for
its exit code and stops it. What identifies a run is a small dict of run.env fields
(`PID`/`PID_START`, or `CONTAINER`), so any process — train.py, the watchdog, make
status — can ask about a run another one started.

  local   a child process in its own session (the embedded default; no Docker needed);
          with WARM_WORKER on, a child forked by a warm worker that imported the
          runtime's frameworks once (scripts/worker.py), still in its own session
  docker  a container of the image for the model's type (docker/Dockerfile), named
          tweakops-<type>, through the docker CLI with argument lists (never a shell
          string made from values); see DockerRunner

    runner = runners.get("local", cfg)
    fields = runner.start(job)          # -> {"PID": ..., "PID_START": ...}
    code = runner.wait(fields)
    code, output = runner.run_sync(job, {"TWEAKOPS_BUILD_CHECK": "1"}, timeout=120)

What the script sees: the local runner gives it an allow-list of this machine's
environment (worker.script_env: PATH, HOME, locale, PYTHON*, the frameworks' TF_*/KERAS_*/
CUDA_*/OMP_*..., TWEAKOPS_*; never a credential such as SMTP_PASSWORD or JENKINS_TOKEN),
the harness's keys, and the variables TRAIN_ENV names (comma or space separated, values
from this environment; naming a credential there is the user's choice; a name that is not
set is skipped). The Docker runner passes the TRAIN_ENV names by name (`--env NAME`: the
value never appears on a command line) on top of the container's own environment.

Memory: TRAIN_MEMORY (docker's sizes: 4g, 300m, 512k, bytes) is docker --memory, and
under the local runner the harness's watch of its process tree (TWEAKOPS_MEMORY_LIMIT,
bytes; PSS, so pages shared with a warm worker are not counted twice) kills an attempt
over it and writes `{"exit_code": 137, "reason": "oom", "limit": bytes, "used": bytes}`
to its result file. A SIGKILL where the kernel's own OOM killer got there first (the
oom_kill counter of the attempt's memory cgroup grew) is recorded there too, with
`"killed_by": "kernel"`. Either way LocalRunner.wait, like DockerRunner.wait, sets
STATUS=oom and raises exit 5 (EXIT_RUNNER_FAILED) with one line.

Runtimes (scripts/runtimes.py): a job runs in job.runtime (keras2, keras3, sklearn):
TWEAKOPS_RUNTIME tells the harness which, and keras2 sets TF_USE_LEGACY_KERAS=1 (the
Keras 2 package, tf_keras, is in the .venv and the keras image alike). When
job.requirements names the model repository's requirements.txt, the local runner runs
the derived environment's python and the Docker runner the derived image, each made
once by runtimes.py; a requirement that cannot be installed is exit 2 before anything
starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import runtimes
import dockercli
import state
import worker

HARNESS = Path(__file__).resolve().parent / "harness.py"
EXIT_KILLED = 137  # 128 + SIGKILL: what a killed run reports, like Docker does
# what one attempt's harness is told: never taken from this process's own environment
ATTEMPT_KEYS = {f"TWEAKOPS_{k}" for k in (
    "ATTEMPT", "FRAMEWORK", "RUNTIME", "SEED", "METRICS", "RESULT", "HEARTBEAT", "CHECKPOINT_DIR", "REFERENCE",
    "WEIGHTS_OUT", "WARM_FROM", "WARM_EPOCHS", "DEADLINE", "BUILD_CHECK", "MEMORY_LIMIT")} | {"TF_USE_LEGACY_KERAS"}


def weights_path(attempt: int) -> str:
    """Relative path under STATE_DIR of attempt N's trained weights (the harness writes
    them; a tweak of N warm-starts from them)."""
    return f"weights/attempt-{attempt}.weights.h5"


@dataclass
class Job:
    """One attempt to run: host paths; a runner maps them to what the harness sees."""

    attempt: int
    model_file: str          # relative to checkout
    model_type: str          # cnn, rnn, mlp, sklearn
    checkout: Path
    data_dir: Path | None            # None: the script reads its own data (no DATA_DIR, no /data)
    state_dir: Path
    image: str = ""
    seed: int = 42
    reference: Path | None = None   # metrics file of the best attempt (hopeless-attempt stop)
    extra_env: dict = field(default_factory=dict)
    runtime: str = ""               # keras2, keras3, sklearn; "" = keras3 (Keras types) or sklearn
    requirements: Path | None = None  # the model repository's requirements.txt on the host
    warm_from: Path | None = None   # the parent's weights file under state_dir (WARM_START)
    warm_epochs: int | None = None  # continue at this epoch (an epochs-only tweak)
    deadline: float | None = None   # unix time when MAX_MINUTES ends: the fit stops there

    @property
    def framework(self) -> str:
        return "sklearn" if self.model_type == "sklearn" else "keras"

    @property
    def runtime_name(self) -> str:
        return runtimes.runtime_of(self.model_type, self.runtime)

    @property
    def log(self) -> Path:
        return self.state_dir / "logs" / f"attempt-{self.attempt}.log"

    def state_path(self, kind: str) -> str:
        """Relative path under STATE_DIR of the attempt's metrics/result/checkpoint."""
        return {
            "metrics": f"metrics/attempt-{self.attempt}.json",
            "result": f"results/attempt-{self.attempt}.json",
            "checkpoints": f"checkpoints/attempt-{self.attempt}",
            "heartbeat": "heartbeat",
            "weights": weights_path(self.attempt),
        }[kind]

    def harness_env(self, state_root: str, data_dir: str | None) -> dict[str, str]:
        """The harness's environment, with STATE_DIR and DATA_DIR as the harness sees them."""
        env = {
            "TWEAKOPS_ATTEMPT": str(self.attempt),
            "TWEAKOPS_FRAMEWORK": self.framework,
            "TWEAKOPS_RUNTIME": self.runtime_name,
            "TWEAKOPS_SEED": str(self.seed),
            "TWEAKOPS_METRICS": f"{state_root}/{self.state_path('metrics')}",
            "TWEAKOPS_RESULT": f"{state_root}/{self.state_path('result')}",
            "TWEAKOPS_HEARTBEAT": f"{state_root}/{self.state_path('heartbeat')}",
            "TWEAKOPS_CHECKPOINT_DIR": f"{state_root}/{self.state_path('checkpoints')}",
            "PYTHONUNBUFFERED": "1",
            "PYTHONHASHSEED": str(self.seed),
        }
        if data_dir is not None:
            env["DATA_DIR"] = data_dir
        if self.runtime_name == "keras2":
            env["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras is tf_keras too (the harness points `import keras`)
        if self.reference is not None:
            env["TWEAKOPS_REFERENCE"] = f"{state_root}/{self.reference.relative_to(self.state_dir)}"
        env["TWEAKOPS_WEIGHTS_OUT"] = f"{state_root}/{self.state_path('weights')}"
        if self.warm_from is not None:
            env["TWEAKOPS_WARM_FROM"] = f"{state_root}/{self.warm_from.relative_to(self.state_dir)}"
            if self.warm_epochs:
                env["TWEAKOPS_WARM_EPOCHS"] = str(self.warm_epochs)
        if self.deadline is not None:
            env["TWEAKOPS_DEADLINE"] = f"{self.deadline:.3f}"
        env.update(self.extra_env)
        return env


class RunnerFailed(state.TweakopsError):
    """The runner could not run or finish the attempt: `status` is the run.env STATUS it
    means (engine-down, image-missing, start-failed, oom), `exit_code` the attempt's."""

    def __init__(self, status: str, message: str, exit_code: int | None = None):
        super().__init__(message, state.EXIT_RUNNER_FAILED)
        self.status = status
        self.exit_code = exit_code


class Runner:
    name = "base"

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def start(self, job: Job) -> dict[str, str]:
        raise NotImplementedError

    def alive(self, fields: dict[str, str]) -> bool:
        raise NotImplementedError

    def wait(self, fields: dict[str, str], poll: float = 0.5) -> int:
        raise NotImplementedError

    def pause(self, fields: dict[str, str], seconds: float) -> None:
        """Wait up to `seconds` for the run to end (train.py's log-following loop)."""
        time.sleep(seconds)

    def stop(self, fields: dict[str, str]) -> None:
        raise NotImplementedError

    def fail(self, status: str, message: str, exit_code: int | None = None) -> None:
        """Report a runner failure: RunnerFailed (exit 5, one line); train.py records it."""
        raise RunnerFailed(status, message, exit_code)

    def run_sync(self, job: Job, extra_env: dict, timeout: float) -> tuple[int, str]:
        """Run the harness for `job` to completion with `extra_env` added (e.g.
        TWEAKOPS_BUILD_CHECK=1): (exit code, stdout and stderr together). Nothing goes
        to the attempt's log; past `timeout` seconds the run is killed: EXIT_KILLED."""
        raise NotImplementedError


def read_record(job_result: Path) -> dict | None:
    """The whole result file ({"exit_code", "reason", "limit", "used", ...}), or None."""
    try:
        record = json.loads(Path(job_result).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_result(job_result: Path) -> int | None:
    """The exit code the harness wrote, or None when it never got to write one."""
    try:
        return int((read_record(job_result) or {})["exit_code"])
    except (KeyError, ValueError, TypeError):
        return None


SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgt]?)i?b?", re.IGNORECASE)
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def memory_bytes(text: str) -> int:
    """TRAIN_MEMORY as docker reads it ("4g", "300m", "512k", "1.5g", bytes); 0 or "" = none."""
    text = str(text).strip()
    if text in ("", "0"):
        return 0
    found = SIZE.fullmatch(text)
    if not found:
        raise state.TweakopsError(f"TRAIN_MEMORY={text!r} is not a size; give bytes or a number with k, m or g "
                                  "(4g, 300m)", state.EXIT_BAD_INPUT)
    return int(float(found.group(1)) * SIZE_UNITS[found.group(2).lower()])


def train_env_names(cfg: dict) -> list[str]:
    """The environment variables TRAIN_ENV lets the script see (comma or space separated)."""
    names = [n for n in re.split(r"[\s,]+", str(cfg.get("TRAIN_ENV") or "")) if n]
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise state.TweakopsError(f"TRAIN_ENV names {name!r}, which is not an environment variable name; "
                                      "list names like MY_KEY,OTHER_KEY", state.EXIT_BAD_INPUT)
    return names


def cgroup_oom_kills(pid: int | str = "self") -> tuple[Path, int] | None:
    """(file, count) of the kernel's OOM kills in the memory cgroup of `pid` (cgroup v2
    memory.events, v1 memory.oom_control), or None where neither is readable. The path in
    /proc/PID/cgroup may be longer than what this mount shows (a container's namespace):
    its shorter tails are tried too."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            where = [(Path("/sys/fs/cgroup"), "memory.events"), (Path("/sys/fs/cgroup/unified"), "memory.events")]
        elif "memory" in controllers.split(","):
            where = [(Path("/sys/fs/cgroup/memory"), "memory.oom_control")]
        else:
            continue
        parts = [part for part in path.split("/") if part]
        for root, name in where:
            for i in range(len(parts) + 1):
                counter = root.joinpath(*parts[i:], name)
                count = _oom_kill_count(counter)
                if count is not None:
                    return counter, count
    return None


def _oom_kill_count(counter: Path) -> int | None:
    try:
        for line in counter.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


class LocalRunner(Runner):
    """The harness as a child process of this machine, in its own session.

    With WARM_WORKER on and a job in this interpreter (no job.requirements), the child is
    forked by the warm worker for the job's runtime and environment (scripts/worker.py),
    which imported TensorFlow/Keras (or scikit-learn) once: an attempt skips the 5-7 s
    import. The child gets exactly env(job), leads its own session like a cold one, and
    its exit code comes over the worker's connection. Any worker failure starts the
    attempt cold (`python -u harness.py MODEL_FILE`, as without a worker) with one line.

    Its environment is env(job): the allow-list, TRAIN_ENV's names and the harness's keys,
    TWEAKOPS_MEMORY_LIMIT (TRAIN_MEMORY in bytes) among them; nothing else of this process.
    """

    name = "local"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self._children: dict[int, subprocess.Popen] = {}
        self._attempts: dict[int, worker.Attempt] = {}   # forked by a warm worker for this runner
        self._results: dict[int, Path] = {}
        self._numbers: dict[int, int] = {}               # pid -> attempt number
        self._oom_kills: dict[int, tuple[Path, int]] = {}  # pid -> its cgroup's OOM kills at start

    def warm(self, job: Job) -> bool:
        """Through a warm worker: only this interpreter's jobs (a derived environment's
        python has other packages than the worker imported)."""
        return bool(self.cfg.get("WARM_WORKER", True)) and job.requirements is None

    def _submit(self, job: Job, env: dict[str, str], out_fd: int) -> worker.Attempt | None:
        """The attempt forked by the warm worker, output to `out_fd`; None: start it cold."""
        if not self.warm(job):
            return None
        try:
            with open(os.devnull, "rb") as stdin:
                return worker.submit(job.state_dir, sys.executable, [str(HARNESS), job.model_file],
                                     job.checkout, env, (stdin.fileno(), out_fd, out_fd))
        except worker.WorkerError as exc:
            print(f"tweakops: warm worker unavailable ({exc}); starting the attempt cold",
                  file=sys.stderr, flush=True)
            return None

    def python(self, job: Job) -> str:
        """This interpreter (the .venv), or the derived environment's with job.requirements."""
        if job.requirements is None:
            return sys.executable
        return runtimes.local_python(job.requirements, job.runtime_name)

    def env(self, job: Job, extra_env: dict | None = None) -> dict[str, str]:
        """The attempt's whole environment (the same warm or cold): the allow-list of this
        one, TRAIN_ENV's names, the harness's keys; never an earlier attempt's keys."""
        env = worker.script_env(os.environ)
        env.update({name: os.environ[name] for name in train_env_names(self.cfg) if name in os.environ})
        for key in (*ATTEMPT_KEYS, "DATA_DIR"):  # only the job's own (a script without a DATA_DIR sees none)
            env.pop(key, None)
        env.update(job.harness_env(str(job.state_dir), None if job.data_dir is None else str(job.data_dir)))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", str(self.cfg.get("TF_CPP_MIN_LOG_LEVEL", "2")))
        limit = memory_bytes(self.cfg.get("TRAIN_MEMORY") or "")
        if limit:
            env["TWEAKOPS_MEMORY_LIMIT"] = str(limit)
        env.update(extra_env or {})
        return env

    def run_sync(self, job: Job, extra_env: dict, timeout: float) -> tuple[int, str]:
        python = self.python(job)
        env = self.env(job, extra_env)
        if self.warm(job):
            out_r, out_w = os.pipe()
            try:
                attempt = self._submit(job, env, out_w)
            finally:
                os.close(out_w)
            if attempt is not None:
                return self._collect(job, attempt, out_r, timeout)
            os.close(out_r)
        proc = subprocess.Popen([python, "-u", str(HARNESS), job.model_file], cwd=job.checkout, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return EXIT_KILLED, out.decode(errors="replace") + f"\ntweakops: killed after {timeout:.0f}s\n"
        code = proc.returncode
        return (128 - code if code < 0 else code), out.decode(errors="replace")

    def _collect(self, job: Job, attempt: worker.Attempt, out_r: int, timeout: float) -> tuple[int, str]:
        """run_sync through a worker: read the child's output until it ends, kill its
        process group past `timeout` seconds (from the moment it was forked)."""
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        killed = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    killed = True
                    break
                if select.select([out_r], [], [], left)[0]:
                    chunk = os.read(out_r, 65536)
                    if not chunk:
                        break  # every writer closed it: the run has ended (or closed its output)
                    chunks.append(chunk)
            code = None if killed else attempt.wait(max(0.0, deadline - time.monotonic()))
            if code is None and not attempt.lost:
                killed = True
            if killed:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(attempt.pid, signal.SIGKILL)
                while select.select([out_r], [], [], 5)[0]:
                    chunk = os.read(out_r, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                attempt.wait(5)  # reaped by the worker
        finally:
            os.close(out_r)
            attempt.close()
        out = b"".join(chunks).decode(errors="replace")
        if killed:
            return EXIT_KILLED, out + f"\ntweakops: killed after {timeout:.0f}s\n"
        if code is None:  # the worker died under it: the harness's record, if it wrote one
            code = read_result(job.state_dir / job.state_path("result"))
            return (EXIT_KILLED if code is None else code), out
        return code, out

    def start(self, job: Job) -> dict[str, str]:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        python = self.python(job)
        env = self.env(job)
        with open(job.log, "ab") as log:
            attempt = self._submit(job, env, log.fileno())
            if attempt is None:
                proc = subprocess.Popen(
                    [python, "-u", str(HARNESS), job.model_file],
                    cwd=job.checkout, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
        if attempt is not None:
            pid = attempt.pid
            self._attempts[pid] = attempt
        else:
            pid = proc.pid
            self._children[pid] = proc
        self._results[pid] = job.state_dir / job.state_path("result")
        self._numbers[pid] = job.attempt
        counted = cgroup_oom_kills(pid) or cgroup_oom_kills()
        if counted is not None:
            self._oom_kills[pid] = counted
        return {"PID": str(pid), "PID_START": state.process_start_time(pid) or ""}

    def alive(self, fields: dict[str, str]) -> bool:
        pid = int(fields.get("PID") or 0)
        if pid <= 0:
            return False
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        attempt = self._attempts.get(pid)
        if attempt is not None:
            if attempt.poll() is not None:
                return False
            if not attempt.lost:
                return True  # its worker has not said it ended
        started = state.process_start_time(pid)
        return started is not None and started == fields.get("PID_START")

    def pause(self, fields: dict[str, str], seconds: float) -> None:
        """Back as soon as the attempt ends (its worker's exit message, or the child's exit):
        a short attempt's end is not rounded up to the log loop's next tick."""
        end = time.monotonic() + seconds
        attempt = self._attempts.get(int(fields.get("PID") or 0))
        if attempt is not None and not attempt.lost:
            attempt.wait(timeout=seconds)
        while time.monotonic() < end and self.alive(fields):
            time.sleep(0.02)

    def wait(self, fields: dict[str, str], poll: float = 0.5) -> int:
        """The exit code; an attempt stopped for memory (the harness's watch, or the
        kernel's OOM killer) sets STATUS=oom and raises exit 5, as under Docker."""
        pid = int(fields.get("PID") or 0)
        result = fields.get("RESULT") or (str(self._results[pid]) if pid in self._results else "")
        code = self._exit_code(fields, pid, result, poll)
        record = read_record(Path(result)) if result else None
        if (record or {}).get("reason") != "oom" and code == EXIT_KILLED and self._kernel_killed(pid):
            record = {"exit_code": code, "reason": "oom", "killed_by": "kernel", "attempt": self._numbers.get(pid),
                      "finished_at": time.time()}
            if result:
                state.atomic_write(result, json.dumps(record, indent=1))
        if (record or {}).get("reason") == "oom":
            attempt = record.get("attempt") or self._numbers.get(pid) or "?"
            limit = self.cfg.get("TRAIN_MEMORY")
            if record.get("killed_by") == "kernel":
                self.fail("oom", f"attempt {attempt} ran out of memory: the kernel's OOM killer stopped it before "
                          f"TRAIN_MEMORY={limit} was reached (this machine or its cgroup has less); "
                          "make the model smaller or train where there is more memory", code)
            self.fail("oom", f"attempt {attempt} ran out of memory (TRAIN_MEMORY={limit}) and was killed; "
                      "raise TRAIN_MEMORY or make the model smaller", code)
        return code

    def _exit_code(self, fields: dict[str, str], pid: int, result: str, poll: float) -> int:
        child = self._children.get(pid)
        if child is not None:
            code = child.wait()
            return EXIT_KILLED if code < 0 and -code == signal.SIGKILL else (128 - code if code < 0 else code)
        attempt = self._attempts.get(pid)
        if attempt is not None:
            code = attempt.wait()  # its worker says how it ended
            if code is not None:
                return code
        while self.alive(fields):
            time.sleep(poll)
        # not our child (or its worker died): the harness's own record, else it was
        # killed before writing one
        code = read_result(Path(result)) if result else None
        return EXIT_KILLED if code is None else code

    def _kernel_killed(self, pid: int) -> bool:
        """Did the kernel's OOM killer act in the attempt's cgroup since it started?"""
        before = self._oom_kills.get(pid)
        if before is None:
            return False
        now = _oom_kill_count(before[0])
        return now is not None and now > before[1]

    def stop(self, fields: dict[str, str], grace: float = 10.0) -> None:
        """SIGTERM the run's process group, SIGKILL what is left after `grace` seconds."""
        if not self.alive(fields):
            return
        pid = int(fields["PID"])
        for sig, delay in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            deadline = time.time() + delay
            while time.time() < deadline:
                if pid in self._children:
                    self._children[pid].poll()
                if not self.alive(fields):
                    return
                time.sleep(0.1)


# ---------------------------------------------------------------------------
# Docker

PIDS_LIMIT = 1024        # TensorFlow's thread pools count as pids; a fork bomb stops here
CONTAINER_UID = 1000     # the images' user; used when tweakops itself runs as root
ALIVE_EVERY = 1.0        # seconds a "running" answer of docker inspect is trusted
IN_CONTAINER = {         # where the runner mounts what the harness needs
    "checkout": "/workspace",
    "data": "/data",
    "state": "/state",
    "harness": "/opt/tweakops/harness.py",
}
# Runs in the container: the harness with its output appended to the attempt's log in
# the STATE_DIR mount, so the log survives the death of train.py like the local
# runner's. A constant string: the paths arrive as "$0", "$1", "$2", never pasted in.
IN_CONTAINER_COMMAND = 'exec python -u "$0" "$1" >>"$2" 2>&1'


class DockerRunner(Runner):
    """The harness in a container of the image for the model's type.

    Mounts: the checkout at /workspace (the working directory), DATA_DIR read-only at
    /data, STATE_DIR read-write at /state (log, metrics, heartbeat, result,
    checkpoints: the same files as under the local runner) and scripts/harness.py
    read-only. Untrusted code: no network, no capabilities, no new privileges, a
    read-only root file system with a tmpfs /tmp, memory (no swap), CPU and pid limits,
    a non-root user: 1000:1000 when tweakops runs as root (the writable paths are
    handed to that uid first), else the caller's own uid, so the files it writes stay
    the caller's. The container is kept after it exits, for `docker logs`/`inspect`
    and the OOM check, and removed when the next attempt of that type starts.

    Failures set STATUS in run.env and exit 5 (EXIT_RUNNER_FAILED) with one line:
    engine-down, image-missing, start-failed, oom.
    """

    name = "docker"

    @classmethod
    def usable(cls, cfg: dict) -> bool:
        """For RUNNER=auto: an engine answers and the image this run needs is there."""
        if dockercli.engine_version() is None:
            return False
        run = state.read_run(cfg)
        images = [run["IMAGE"]] if run.get("IMAGE") else [cfg["IMAGE_KERAS"], cfg["IMAGE_SKLEARN"]]
        return all(dockercli.image_present(image) for image in images)

    def image_for(self, job: Job) -> str:
        if job.framework == "keras" and self.cfg.get("GPUS"):
            return self.cfg["IMAGE_GPU"]
        return job.image or self.cfg["IMAGE_SKLEARN" if job.framework == "sklearn" else "IMAGE_KERAS"]

    @staticmethod
    def container_name(job: Job) -> str:
        return f"tweakops-{job.model_type}"

    def user(self, job: Job) -> str:
        """The uid:gid to run as; as root, hand the paths the harness writes to that uid."""
        if os.geteuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        writable = [job.state_dir, job.log.parent, job.log]
        for kind in ("metrics", "result", "checkpoints"):
            writable.append((job.state_dir / job.state_path(kind)).parent)
        writable.append(job.state_dir / job.state_path("heartbeat"))
        for path in writable:
            if path.exists():
                os.chown(path, CONTAINER_UID, CONTAINER_UID)
        checkpoints = job.state_dir / job.state_path("checkpoints")
        if checkpoints.exists():  # a resumed attempt: its backup was written by the container
            for path in [checkpoints, *checkpoints.rglob("*")]:
                os.lchown(path, CONTAINER_UID, CONTAINER_UID)
        return f"{CONTAINER_UID}:{CONTAINER_UID}"

    def cpus(self) -> str:
        wanted = float(self.cfg["TRAIN_CPUS"] or 0)
        available = os.cpu_count() or 1
        if wanted <= 0:
            return str(available)
        if wanted > available:
            state.info(f"docker: TRAIN_CPUS={self.cfg['TRAIN_CPUS']} but this machine has {available}; using {available}")
            return str(available)
        return str(wanted)

    def ready_image(self, job: Job) -> tuple[str, str]:
        """(engine version, image to run): the runtime image, or its derived image with the
        model repository's requirements (runtimes.py builds it once)."""
        version = dockercli.engine_version()
        if version is None:
            self.fail("engine-down", "no Docker engine answers (docker version failed); start one with "
                      "make engine-start, or use RUNNER=local")
        image = self.image_for(job)
        if not dockercli.image_present(image):
            self.fail("image-missing", f"image {image} is missing; build it with make images "
                      "(or make images-pull with DOCKER_REGISTRY set)")
        if job.requirements is not None:
            image = runtimes.docker_image(job.requirements, job.runtime_name, image)
        return version, image

    def run_args(self, job: Job, extra_env: dict | None = None, log: bool = True) -> list[str]:
        """The `docker run` options every run of `job` gets: sandbox, limits, mounts, env
        (`log`: the attempt's log file is made for the container to append to)."""
        mounts = {"checkout": job.checkout, "state": job.state_dir, "harness": HARNESS}
        if job.data_dir is not None:
            mounts["data"] = job.data_dir
        for what, path in mounts.items():
            if "," in str(path) or '"' in str(path):
                raise state.TweakopsError(f"{path} ({what}) contains a comma or a quote, which docker --mount "
                                          "cannot take; move it to a plain path")
        for kind in ("metrics", "result", "checkpoints"):
            (job.state_dir / job.state_path(kind)).parent.mkdir(parents=True, exist_ok=True)
        if log:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            job.log.touch()
        cfg = self.cfg
        env = job.harness_env(IN_CONTAINER["state"], None if job.data_dir is None else IN_CONTAINER["data"])
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", str(cfg.get("TF_CPP_MIN_LOG_LEVEL", "2")))
        env["HOME"] = "/tmp"
        env.update(extra_env or {})
        args = [
            "--label", f"tweakops.attempt={job.attempt}", "--label", f"tweakops.state={job.state_dir}",
            "--network", "none", "--user", self.user(job),
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--read-only", "--tmpfs", "/tmp",
            "--memory", str(cfg["TRAIN_MEMORY"]), "--memory-swap", str(cfg["TRAIN_MEMORY"]),
            "--cpus", self.cpus(), "--pids-limit", str(PIDS_LIMIT),
            "--mount", f"type=bind,source={job.checkout},target={IN_CONTAINER['checkout']}",
        ]
        if (Path(job.checkout) / ".git").exists():
            # git runs on the host in this checkout (publish, fetch): the model's code must
            # not plant a hook or a config there
            args += ["--mount", f"type=bind,source={Path(job.checkout) / '.git'},"
                                f"target={IN_CONTAINER['checkout']}/.git,readonly"]
        if job.data_dir is not None:
            args += ["--mount", f"type=bind,source={job.data_dir},target={IN_CONTAINER['data']},readonly"]
        args += [
            "--mount", f"type=bind,source={job.state_dir},target={IN_CONTAINER['state']}",
            "--mount", f"type=bind,source={HARNESS},target={IN_CONTAINER['harness']},readonly",
            "--workdir", IN_CONTAINER["checkout"],
        ]
        for key, value in sorted(env.items()):
            args += ["--env", f"{key}={value}"]
        for name in train_env_names(cfg):
            if name in os.environ and name not in env:
                args += ["--env", name]  # the docker CLI takes the value from its environment
        if cfg.get("GPUS"):
            args += ["--gpus", str(cfg["GPUS"])]
        return args

    def run_sync(self, job: Job, extra_env: dict, timeout: float) -> tuple[int, str]:
        """A throw-away `docker run --rm` with the attempt's flags and mounts, under a name
        of its own (the training container tweakops-<type> is left alone)."""
        _, image = self.ready_image(job)
        name = f"tweakops-{job.model_type}-check-{os.getpid()}"
        dockercli.docker_cli("rm", "--force", name, check=False)
        args = ["run", "--rm", "--name", name, *self.run_args(job, extra_env, log=False),
                image, "python", "-u", IN_CONTAINER["harness"], job.model_file]
        try:
            proc = subprocess.run(["docker", *args], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            dockercli.docker_cli("rm", "--force", name, check=False)
            out = (exc.stdout or b"") + (exc.stderr or b"")
            return EXIT_KILLED, out.decode(errors="replace") + f"\ntweakops: killed after {timeout:.0f}s\n"
        output = (proc.stdout + proc.stderr).decode(errors="replace")
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode == 125 and stderr.startswith("docker: "):  # docker's own failure, not the script's
            self.fail("start-failed", f"container {name} could not start: {dockercli.docker_reason(stderr)}")
        return proc.returncode, output

    def start(self, job: Job) -> dict[str, str]:
        version, image = self.ready_image(job)
        name = self.container_name(job)
        # the previous instance of this name goes first, running or not
        removed = dockercli.docker_cli("rm", "--force", name, check=False)
        if removed.returncode != 0 and "No such container" not in removed.stderr:
            self.fail("start-failed", f"could not remove the old container {name}: {dockercli.docker_reason(removed.stderr)}")
        args = ["run", "--detach", "--name", name, *self.run_args(job)]
        in_log = f"{IN_CONTAINER['state']}/{job.log.relative_to(job.state_dir)}"
        args += [image, "sh", "-c", IN_CONTAINER_COMMAND, IN_CONTAINER["harness"], job.model_file, in_log]
        started = dockercli.docker_cli(*args, check=False)
        if started.returncode != 0:
            self.fail("start-failed", f"container {name} could not start: {dockercli.docker_reason(started.stderr)}")
        state.info(f"docker: container {name} ({started.stdout.strip()[:12]}) from {image} on Docker {version}")
        return {"CONTAINER": name}

    def inspect(self, name: str) -> dict | None:
        proc = dockercli.docker_cli("inspect", "--type", "container", "--format", "{{json .State}}", name, check=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)

    def alive(self, fields: dict[str, str]) -> bool:
        name = fields.get("CONTAINER")
        if not name:
            return False
        # train.py asks 5 times a second; each `docker inspect` costs ~20 ms of CPU
        seen = getattr(self, "_seen_running", {})
        if time.time() - seen.get(name, 0) < ALIVE_EVERY:
            return True
        try:
            info = self.inspect(name)
        except state.TweakopsError:
            return False
        running = bool(info and info.get("Running"))
        self._seen_running = {name: time.time()} if running else {}
        return running

    def wait(self, fields: dict[str, str], poll: float = 0.5) -> int:
        name = fields.get("CONTAINER") or ""
        while True:
            try:
                info = self.inspect(name)
            except state.TweakopsError:
                info = None
            if info is None:
                if dockercli.engine_version() is None:
                    self.fail("engine-down", f"the Docker engine stopped answering while {name} ran; "
                              "start it (make engine-start) and make watchdog restarts the attempt")
                self.fail("start-failed", f"container {name} is gone (removed from outside?)")
            if not info.get("Running") and info.get("Status") not in ("created", "restarting"):
                break
            time.sleep(poll)
        code = int(info.get("ExitCode", 0))
        if info.get("OOMKilled"):
            self.fail("oom", f"container {name} ran out of memory (TRAIN_MEMORY={self.cfg['TRAIN_MEMORY']}) and "
                      "was killed; raise TRAIN_MEMORY or make the model smaller", code)
        if info.get("Error"):
            self.fail("start-failed", f"container {name} could not start: {info['Error']}")
        return code

    def stop(self, fields: dict[str, str], grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; the container stays for inspection."""
        name = fields.get("CONTAINER")
        if name and self.alive(fields):
            dockercli.docker_cli("stop", "--time", str(int(grace)), name, check=False, timeout=grace + dockercli.DOCKER_TIMEOUT)


RUNNERS: dict[str, type[Runner]] = {"local": LocalRunner, "docker": DockerRunner}


def get(name: str, cfg: dict) -> Runner:
    """The runner called `name` (RUNNER=auto resolves to the best one available)."""
    if name == "auto":
        name = resolve_auto(cfg)
    if name not in RUNNERS:
        raise state.TweakopsError(f"RUNNER={name!r} is not available here; use one of {', '.join(RUNNERS)}")
    return RUNNERS[name](cfg)


def resolve_auto(cfg: dict) -> str:
    """Docker when an engine answers and the image exists, else local (saying which)."""
    docker = RUNNERS.get("docker")
    if docker is not None and getattr(docker, "usable", lambda cfg: False)(cfg):
        state.info("RUNNER=auto: a Docker engine answers and the image exists: using docker")
        return "docker"
    state.info("RUNNER=auto: no usable Docker engine or image: using the local runner")
    return "local"
