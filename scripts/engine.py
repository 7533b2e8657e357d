"""Start and stop a Docker engine of tweakops' own, for CI and machines without one.

`start` does nothing when an engine already answers (a system dockerd, Docker
Desktop, a DOCKER_HOST): that one is used and never touched. Otherwise it starts

    dockerd --iptables=false --bridge=none --data-root build/docker/data

in its own session, listening on the default socket (/var/run/docker.sock), and waits
until it answers. No iptables rules and no bridge: the sandboxes CI runs in allow
neither, and training containers run with `--network none` anyway. The data root lives
under build/, so the base image, the wheels' layers and the images stay cached there
between runs. `stop` stops only the daemon `start` started: the one whose PID is in
build/docker/dockerd.pid and whose command line names that data root.

Reads:  DOCKER_HOST (optional, the docker CLI's own variable)
Writes: build/docker/{data/,dockerd.pid,dockerd.log}
Exit:   0 an engine answers / stopped; 5 dockerd missing, not root, or it did not come up

    $ make engine-start
    $ make engine-stop
    $ python scripts/engine.py status
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dockercli
import state

ENGINE_DIR = state.ROOT / "build" / "docker"
DATA_ROOT = ENGINE_DIR / "data"
PIDFILE = ENGINE_DIR / "dockerd.pid"
LOG = ENGINE_DIR / "dockerd.log"
START_TIMEOUT = 60  # seconds for dockerd to answer (first start: ~5 s)
STOP_TIMEOUT = 30   # seconds between SIGTERM and SIGKILL


def is_dockerd(pid: int) -> bool:
    """Whether `pid` is a dockerd running on our data root (not another daemon, not a reused PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and Path(cmdline[0].decode()).name == "dockerd" and str(DATA_ROOT).encode() in cmdline


def our_pid() -> int | None:
    """The PID of the dockerd this script started, if it still runs."""
    try:
        pid = int(PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_dockerd(pid) else None


def start() -> int:
    version = dockercli.engine_version()
    if version:
        ours = " (started by make engine-start)" if our_pid() else ""
        state.info(f"engine: Docker {version} answers{ours}; using it")
        return state.EXIT_OK
    dockerd = shutil.which("dockerd")
    if dockerd is None or shutil.which("docker") is None:
        raise state.TweakopsError("no Docker engine answers and dockerd is not installed; "
                                  "run make system-deps as root (Debian's docker.io)", state.EXIT_RUNNER_FAILED)
    if os.geteuid() != 0:
        raise state.TweakopsError("no Docker engine answers and only root can start dockerd; "
                                  "start one (systemctl start docker) or run make engine-start as root",
                                  state.EXIT_RUNNER_FAILED)
    if os.environ.get("DOCKER_HOST"):
        raise state.TweakopsError(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer; start that engine "
                                  "or unset DOCKER_HOST to let make engine-start start one", state.EXIT_RUNNER_FAILED)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    state.info(f"engine: starting dockerd (data root {DATA_ROOT}, log {LOG})")
    started = time.time()
    with open(LOG, "ab") as log:
        proc = subprocess.Popen(
            [dockerd, "--iptables=false", "--ip-masq=false", "--bridge=none",
             "--data-root", str(DATA_ROOT), "--pidfile", str(PIDFILE)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    while time.time() - started < START_TIMEOUT:
        if proc.poll() is not None:
            break
        version = dockercli.engine_version(timeout=5)
        if version:
            state.info(f"engine: Docker {version} up in {time.time() - started:.1f}s (pid {proc.pid})")
            return state.EXIT_OK
        time.sleep(0.5)
    if proc.poll() is None:
        proc.terminate()
    tail = LOG.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
    raise state.TweakopsError(f"dockerd did not come up in {START_TIMEOUT}s: {tail[0][:200]} (log: {LOG})",
                              state.EXIT_RUNNER_FAILED)


def stop() -> int:
    pid = our_pid()
    if pid is None:
        state.info("engine: no dockerd started by make engine-start is running; nothing to stop")
        return state.EXIT_OK
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5)):
        os.kill(pid, sig)
        deadline = time.time() + wait
        while time.time() < deadline:
            if not is_dockerd(pid):  # gone (dockerd drops its pidfile before it has finished)
                state.info(f"engine: dockerd (pid {pid}) stopped")
                PIDFILE.unlink(missing_ok=True)
                return state.EXIT_OK
            time.sleep(0.2)
    raise state.TweakopsError(f"dockerd (pid {pid}) did not stop", state.EXIT_RUNNER_FAILED)


def status() -> int:
    version = dockercli.engine_version()
    pid = our_pid()
    print(f"engine: {'Docker ' + version + ' answers' if version else 'no engine answers'}"
          + (f"; dockerd pid {pid} started by make engine-start" if pid else ""))
    return state.EXIT_OK if version else state.EXIT_RUNNER_FAILED


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    args = parser.parse_args(argv)
    return {"start": start, "stop": stop, "status": status}[args.command]()


if __name__ == "__main__":
    state.main(main)
