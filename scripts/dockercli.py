"""The docker CLI as tweakops calls it: argument lists, one-line failures, the engine's
version and whether an image is there. Used by the Docker runner, images.py,
runtimes.py and engine.py."""

from __future__ import annotations

import subprocess

import state

DOCKER_TIMEOUT = 120     # seconds for one docker CLI call (inspect, rm, run --detach)


def docker_reason(stderr: str) -> str:
    """Docker's own reason from its stderr, without the "Run 'docker run --help'" hint."""
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line.startswith("Run '") and not line.startswith("See '")]
    reason = lines[-1] if lines else "(no message)"
    return reason[len("docker: "):] if reason.startswith("docker: ") else reason


def docker_cli(*args: str, check: bool = True, what: str = "", code: int = state.EXIT_RUNNER_FAILED,
               timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the docker CLI with an argument list; a failure raises one line naming `what`."""
    what = what or f"docker {args[0]}"
    try:
        proc = subprocess.run(["docker", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise state.TweakopsError("the docker CLI is not installed; run make system-deps (Debian's docker.io) "
                                  "or use RUNNER=local", state.EXIT_RUNNER_FAILED) from None
    except subprocess.TimeoutExpired:
        raise state.TweakopsError(f"{what} did not answer in {timeout:.0f}s; is the Docker engine hung?", code) from None
    if check and proc.returncode != 0:
        raise state.TweakopsError(f"{what} failed: {docker_reason(proc.stderr)}", code)
    return proc


def engine_version(timeout: float = 10) -> str | None:
    """The engine's version when one answers the docker CLI (DOCKER_HOST or the default socket)."""
    try:
        proc = docker_cli("version", "--format", "{{.Server.Version}}", check=False, timeout=timeout)
    except state.TweakopsError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def image_present(image: str) -> bool:
    return docker_cli("image", "inspect", "--format", "{{.Id}}", image, check=False).returncode == 0
