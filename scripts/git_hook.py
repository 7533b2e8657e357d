"""Git hooks that start the pipeline when model code is pushed.

  $ make hooks REPO=path/to/model.git   # bare repository (the remote): post-receive
  $ make hooks REPO=path/to/model       # working repository: post-commit

post-receive, in the repository people push to: when MODEL_BRANCH moves to a commit
that tweakops did not write (its author is not GIT_AUTHOR_NAME: tweakops' own publish
must not start another loop), it asks Jenkins to build job 1:
POST JENKINS_URL/job/tweakops-1-fetch/build?token=<build token>, as JENKINS_USER with
JENKINS_TOKEN when they are set. With no JENKINS_URL it runs `make pipeline` of this
tweakops checkout in the background, with MODEL_REPO set to the pushed repository; the
output goes to STATE_DIR/logs/hook-<time>.log. The push never waits for training.

post-commit, in a working copy: pushes the new commit to the branch's remote (`git push
<remote> HEAD`), so that a commit is all it takes, as in the seed.

The installed hook is two lines calling this script with this checkout's Python; a hook
that tweakops did not install is never overwritten (exit 2: the message says what to add).

Reads: JENKINS_URL, JENKINS_USER, JENKINS_TOKEN, JENKINS_BUILD_TOKEN (else the token
`make jenkins-jobs` generated in STATE_DIR), MODEL_BRANCH, GIT_AUTHOR_NAME, STATE_DIR;
the pushed refs on stdin (post-receive).
Exit codes: 0; 2 bad repository / foreign hook; 1 Jenkins refused or could not be reached
(the push itself has already succeeded).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import state

MARKER = "# tweakops hook (make hooks)"
ZERO = "0" * 40


def git(*args: str, cwd: str | os.PathLike | None = None) -> str:
    """git's stdout; a failure is bad input here (not a repository, unknown commit)."""
    proc = state.git(state.config(), *args, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise state.TweakopsError(f"git {' '.join(args)}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


def install(repo: str) -> str:
    if not repo:
        raise state.TweakopsError("say which repository: make hooks REPO=path/to/model.git")
    path = Path(repo).expanduser().resolve()
    if not path.is_dir():
        raise state.TweakopsError(f"REPO={repo}: no such folder; give the path of a git repository")
    try:
        bare = git("rev-parse", "--is-bare-repository", cwd=path) == "true"
        hooks = path / git("rev-parse", "--git-path", "hooks", cwd=path)
    except state.TweakopsError:
        raise state.TweakopsError(f"REPO={repo} is not a git repository; run git init (or git init --bare) there first") from None
    name = "post-receive" if bare else "post-commit"
    hook = hooks / name
    if hook.exists() and MARKER not in hook.read_text(errors="replace"):
        raise state.TweakopsError(
            f"{hook} exists and is not tweakops'; add this line to it: "
            f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} {name}"
        )
    hooks.mkdir(parents=True, exist_ok=True)
    state.atomic_write(hook, (
        "#!/bin/sh\n"
        f"{MARKER}: delete this file to stop it\n"
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} {name}\n"
    ))
    hook.chmod(0o755)
    return f"{hook}"


def _clean_env(**extra: str) -> dict:
    # a hook runs with GIT_DIR etc. of the pushed repository; the pipeline's own git
    # commands (fetch, publish) must not inherit them
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(extra)
    return env


def ask_jenkins(cfg: dict) -> str:
    import requests  # only here: the hook's other paths need the stdlib only

    import jenkins_jobs

    token = jenkins_jobs.build_token(cfg)
    if not token:
        raise state.TweakopsError("no build token: set JENKINS_BUILD_TOKEN (the one job 1 was deployed with)")
    url = f"{cfg['JENKINS_URL'].rstrip('/')}/job/{jenkins_jobs.FETCH_JOB}/build"
    auth = (cfg["JENKINS_USER"], cfg["JENKINS_TOKEN"]) if cfg["JENKINS_USER"] else None
    try:
        resp = requests.post(url, params={"token": token}, auth=auth, timeout=15)
    except requests.RequestException as exc:
        raise state.TweakopsError(f"could not reach Jenkins at {cfg['JENKINS_URL']}: {exc.__class__.__name__}; start {jenkins_jobs.FETCH_JOB} by hand", state.EXIT_FAILURE) from None
    if resp.status_code not in (200, 201):
        raise state.TweakopsError(f"Jenkins answered {resp.status_code} to {url}; check JENKINS_BUILD_TOKEN and that the jobs are deployed (make jenkins-deploy)", state.EXIT_FAILURE)
    return f"asked Jenkins to build {jenkins_jobs.FETCH_JOB}"


def run_locally(cfg: dict, repo: Path) -> str:
    logs = state.state_dir(cfg) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"hook-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(log, "ab") as out:
        subprocess.Popen(
            # WAIT=1: a push while a run trains queues behind it (one run per STATE_DIR)
            [os.environ.get("MAKE", "make"), "-C", str(state.ROOT), "pipeline", "WAIT=1"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=_clean_env(MODEL_REPO=str(repo)),
            start_new_session=True,  # outlives the push (nohup)
        )
    return f"started make pipeline in the background (queued behind a run in progress); log: {log}"


def post_receive(cfg: dict, updates: str) -> str:
    branch_ref = f"refs/heads/{cfg['MODEL_BRANCH']}"
    new = ""
    for line in updates.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == branch_ref and parts[1] != ZERO:
            new = parts[1]
    if not new:
        return f"no push to {cfg['MODEL_BRANCH']}: nothing to build"
    author = git("log", "-1", "--format=%an", new)
    if author == cfg["GIT_AUTHOR_NAME"]:
        return f"{new[:10]} is tweakops' own commit ({author}): nothing to build"
    if cfg["JENKINS_URL"]:
        return ask_jenkins(cfg)
    return run_locally(cfg, Path(git("rev-parse", "--absolute-git-dir")).resolve())


def post_commit() -> str:
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch == "HEAD":
        return "detached HEAD (rebase?): not pushing"
    cfg = state.config()
    remote = state.git(cfg, "config", f"branch.{branch}.remote", check=False).stdout.strip() or "origin"
    state.git(cfg, "push", "--quiet", remote, "HEAD", what=f"the commit is made, but git push {remote} HEAD")
    return f"pushed {branch} to {remote}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "post-receive", "post-commit"])
    parser.add_argument("repo", nargs="?", default="", help="install: the repository")
    args = parser.parse_args(argv)

    if args.action == "install":
        hook = install(args.repo)
        print(f"installed {hook}")
        return state.EXIT_OK
    if args.action == "post-commit":
        state.info(f"tweakops: {post_commit()}")
        return state.EXIT_OK
    cfg = state.config()
    state.info(f"tweakops: {post_receive(cfg, sys.stdin.read())}")
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
