"""The runner interface: where an attempt's training runs.

A runner starts `harness.py MODEL_FILE` detached from the caller, with the output
going straight to the attempt's log file, so a training survives the death of
train.py (the watchdog looks after it); it answers whether a run is alive, waits for
its exit code and stops it. What identifies a run is a small dict of run.env fields
(`PID`/`PID_START`, or `CONTAINER`), so any process — train.py, the watchdog, make
status — can ask about a run another one started.

  local   a child process in its own session (the embedded default; no Docker needed)

    runner = runners.get("local", cfg)
    fields = runner.start(job)          # -> {"PID": ..., "PID_START": ...}
    code = runner.wait(fields)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import state

HARNESS = Path(__file__).resolve().parent / "harness.py"
EXIT_KILLED = 137  # 128 + SIGKILL: what a killed run reports, like Docker does


@dataclass
class Job:
    """One attempt to run: host paths; a runner maps them to what the harness sees."""

    attempt: int
    model_file: str          # relative to checkout
    model_type: str          # cnn, rnn, mlp, sklearn
    checkout: Path
    data_dir: Path
    state_dir: Path
    image: str = ""
    seed: int = 42
    reference: Path | None = None   # metrics file of the best attempt (hopeless-attempt stop)
    extra_env: dict = field(default_factory=dict)

    @property
    def framework(self) -> str:
        return "sklearn" if self.model_type == "sklearn" else "keras"

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
        }[kind]

    def harness_env(self, state_root: str, data_dir: str) -> dict[str, str]:
        """The harness's environment, with STATE_DIR and DATA_DIR as the harness sees them."""
        env = {
            "TWEAKOPS_ATTEMPT": str(self.attempt),
            "TWEAKOPS_FRAMEWORK": self.framework,
            "TWEAKOPS_SEED": str(self.seed),
            "TWEAKOPS_METRICS": f"{state_root}/{self.state_path('metrics')}",
            "TWEAKOPS_RESULT": f"{state_root}/{self.state_path('result')}",
            "TWEAKOPS_HEARTBEAT": f"{state_root}/{self.state_path('heartbeat')}",
            "TWEAKOPS_CHECKPOINT_DIR": f"{state_root}/{self.state_path('checkpoints')}",
            "DATA_DIR": data_dir,
            "PYTHONUNBUFFERED": "1",
            "PYTHONHASHSEED": str(self.seed),
        }
        if self.reference is not None:
            env["TWEAKOPS_REFERENCE"] = f"{state_root}/{self.reference.relative_to(self.state_dir)}"
        env.update(self.extra_env)
        return env


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

    def stop(self, fields: dict[str, str]) -> None:
        raise NotImplementedError


def read_result(job_result: Path) -> int | None:
    """The exit code the harness wrote, or None when it never got to write one."""
    try:
        return int(json.loads(job_result.read_text())["exit_code"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def process_start_time(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (/proc), against PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has finished
        return None
    return fields[19]


class LocalRunner(Runner):
    """The harness as a child process of this machine, in its own session."""

    name = "local"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self._children: dict[int, subprocess.Popen] = {}
        self._results: dict[int, Path] = {}

    def start(self, job: Job) -> dict[str, str]:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(job.harness_env(str(job.state_dir), str(job.data_dir)))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", str(self.cfg.get("TF_CPP_MIN_LOG_LEVEL", "2")))
        with open(job.log, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-u", str(HARNESS), job.model_file],
                cwd=job.checkout, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self._children[proc.pid] = proc
        self._results[proc.pid] = job.state_dir / job.state_path("result")
        return {"PID": str(proc.pid), "PID_START": process_start_time(proc.pid) or ""}

    def alive(self, fields: dict[str, str]) -> bool:
        pid = int(fields.get("PID") or 0)
        if pid <= 0:
            return False
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        started = process_start_time(pid)
        return started is not None and started == fields.get("PID_START")

    def wait(self, fields: dict[str, str], poll: float = 0.5) -> int:
        pid = int(fields.get("PID") or 0)
        child = self._children.get(pid)
        if child is not None:
            code = child.wait()
            return EXIT_KILLED if code < 0 and -code == signal.SIGKILL else (128 - code if code < 0 else code)
        while self.alive(fields):
            time.sleep(poll)
        # not our child: the harness's own record, else it was killed before writing one
        result = fields.get("RESULT")
        code = read_result(Path(result)) if result else None
        return EXIT_KILLED if code is None else code

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


RUNNERS: dict[str, type[Runner]] = {"local": LocalRunner}


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
