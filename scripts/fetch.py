"""Job 1: bring the model code in — clone or update MODEL_REPO at MODEL_BRANCH.

MODEL_REPO is a URL or a path (a bare repository on disk is a real remote). The
checkout in CHECKOUT_DIR is set to exactly the remote head, as a CI workspace is:
edits tweak.py made there are dropped (the best source lives in STATE_DIR/best).
A new commit starts a new run in run.env; a different repository or branch starts
a new lineage (the old history, counter and best source move to STATE_DIR/previous/).

Reads:  MODEL_REPO, MODEL_BRANCH, CHECKOUT_DIR, STATE_DIR/run.env
Writes: CHECKOUT_DIR, run.env (RUN_ID, RUN_STARTED_AT, MODEL_REPO without credentials, MODEL_BRANCH, COMMIT,
        COMMIT_AUTHOR, STATUS=fetched, OWN_COMMIT)
Exit:   0 fetched; 9 with --if-changed when the remote head did not move;
        2 repository or branch not found

    $ make fetch
    $ python scripts/fetch.py --if-changed   # from cron or a hook: 0 only on a new head
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path

import attempts
import state
from publish import is_own_commit


def remote_head(cfg: dict) -> str:
    """The commit MODEL_BRANCH points at on MODEL_REPO (one clear line when it cannot be read)."""
    repo, branch = cfg["MODEL_REPO"], cfg["MODEL_BRANCH"]
    if "://" not in repo and ":" not in repo.split("/")[0] and not Path(repo).exists():
        raise state.TweakopsError(f"MODEL_REPO {repo} does not exist; set MODEL_REPO to a git URL or path (or unset it for the example)")
    proc = state.git(cfg, "ls-remote", "--heads", repo, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        raise state.TweakopsError(f"MODEL_REPO {state.scrub(repo)} is not a readable git repository ({state.scrub(last)}); check the URL and credentials")
    heads = {}
    for line in proc.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        heads[ref.removeprefix("refs/heads/")] = sha
    if branch not in heads:
        known = ", ".join(sorted(heads)) or "none"
        raise state.TweakopsError(f"branch {branch!r} not found in {state.scrub(repo)} (branches: {known}); set MODEL_BRANCH")
    return heads[branch]


def checkout(cfg: dict) -> str:
    """Clone or update CHECKOUT_DIR. Its origin is MODEL_REPO without credentials: a token
    in MODEL_REPO reaches git through its environment only (state.git), never a file."""
    repo, branch, target = state.without_credentials(cfg["MODEL_REPO"]), cfg["MODEL_BRANCH"], Path(cfg["CHECKOUT_DIR"])
    same_origin = (target / ".git").exists() and state.git(
        cfg, "remote", "get-url", "origin", cwd=target, check=False).stdout.strip() == repo
    if not same_origin:
        if target.exists():
            shutil.rmtree(target)
        state.git(cfg, "clone", "-q", "--branch", branch, repo, str(target), what=f"git clone of {repo}")
    else:
        state.git(cfg, "fetch", "-q", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}", cwd=target, what="git fetch")
        state.git(cfg, "checkout", "-q", "-f", "-B", branch, f"origin/{branch}", cwd=target, what="git checkout")
        state.git(cfg, "reset", "-q", "--hard", f"origin/{branch}", cwd=target, what="git reset")
        state.git(cfg, "clean", "-q", "-fdx", cwd=target, what="git clean")
    return state.git(cfg, "rev-parse", "HEAD", cwd=target).stdout.strip()


def new_lineage(cfg: dict) -> None:
    """Move the previous model's history, counter and best source aside."""
    sd = state.state_dir(cfg)
    keep = [p for p in (sd / "history.jsonl", sd / "tweak_count", attempts.best_dir(cfg)) if p.exists()]
    if not keep:
        return
    dest = sd / "previous" / dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for path in keep:
        path.rename(dest / path.name)
    state.info(f"another repository or branch: the previous history moved to {dest}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--if-changed", action="store_true", help="exit 9 without touching anything when the remote head did not move")
    args = parser.parse_args(argv)
    cfg = state.config()
    state.hold_run(cfg, "fetch")
    try:
        run = state.read_run(cfg)
    except state.TweakopsError as exc:
        state.warn(f"{state.run_env_path(cfg)} does not parse ({exc}); fetch starts a new run")
        run = {}
    state.banner("fetch", f"{state.scrub(cfg['MODEL_REPO'])} @ {cfg['MODEL_BRANCH']}")
    head = remote_head(cfg)
    same_source = run.get("MODEL_REPO") == state.scrub(cfg["MODEL_REPO"]) and run.get("MODEL_BRANCH") == cfg["MODEL_BRANCH"]
    if args.if_changed and same_source and run.get("COMMIT") == head:
        state.info(f"no change: {cfg['MODEL_BRANCH']} is still at {head[:10]}")
        return state.EXIT_NO_CHANGE
    with state.locked(cfg, "fetch.lock"):
        commit = checkout(cfg)
        if run and not same_source:
            new_lineage(cfg)
        if not same_source or run.get("COMMIT") != commit:
            shutil.rmtree(attempts.best_dir(cfg), ignore_errors=True)
        state.reset_run(
            cfg,
            RUN_ID=dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ"),
            RUN_STARTED_AT=state.now_iso(),
            MODEL_REPO=state.scrub(cfg["MODEL_REPO"]),   # never a credential on disk
            MODEL_BRANCH=cfg["MODEL_BRANCH"],
            COMMIT=commit,
            STATUS=attempts.FETCHED,
        )
    trailers = is_own_commit(cfg["CHECKOUT_DIR"], commit)
    if trailers:
        # our own published commit coming back (a push triggers Job 1): confirm, never loop
        state.update_run(cfg, OWN_COMMIT=1)
        state.info(f"{commit[:10]} is tweakops' own commit (accuracy {trailers.get('Tweakops-Accuracy', '?')}): "
                   "it is confirmed, not tweaked again")
    subject, author = state.git(cfg, "log", "-1", "--format=%s%n%an <%ae>", cwd=cfg["CHECKOUT_DIR"]).stdout.splitlines()[:2]
    state.update_run(cfg, COMMIT_AUTHOR=author)   # who pushed it: the one to tell when it cannot be trained
    state.info(f"checked out {commit[:10]} ({subject}) in {cfg['CHECKOUT_DIR']}")
    print(commit)
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
