"""End of Job 4: commit the best source to the model repository and push it.

One commit, one file: STATE_DIR/best/<model file> replaces MODEL_FILE on top of the
fetched commit (built with git plumbing and a scratch index, so nothing the training
left in the checkout can slip in). The message says what changed and how much it
helped, for a person reading `git log`:

    tweakops: filters 32→64, +dense 64 → accuracy 0.71 → 0.93

    <the kept tweaks in order, accuracy before → after, target, attempts>

    Tweakops-Accuracy: 0.9312
    Tweakops-Target: 0.80
    Tweakops-Attempt: 4
    Tweakops-Source-Hash: <state.source_hash of the published source>

The push goes to PUBLISH_BRANCH (default MODEL_BRANCH), never forced. When it is
rejected because the branch moved, the branch is fetched: if the model file did not
change there, the commit is rebuilt on the new head (a rebase of a one-file change)
and pushed again; if it did, the commit goes to a new branch `tweakops/<first 10 of the source hash>`
and the line says so. The local branch only moves once the push is accepted, so a
failure leaves no half-pushed state: no local commit on the branch, the best source
untouched in STATE_DIR/best. Credentials come from the `origin` URL/credential helper
of the checkout, never from the command line; URLs are scrubbed in every message.

`is_own_commit(repo_dir, commit)` is the loop guard: the trailers of a tweakops
commit (the Tweakops-* keys), None for any other commit.

Nothing to publish (the best source is the fetched one, or it is not more accurate
than the baseline, or the branch already holds it) is a line and exit 0.

Reads:  run.env (COMMIT, MODEL_FILE, RUN_ID, BEST_ACCURACY, BEST_ATTEMPT),
        STATE_DIR/best/<model file>, history.jsonl, CHECKOUT_DIR, PUBLISH_BRANCH,
        MODEL_BRANCH, TARGET_ACCURACY, GIT_AUTHOR_NAME, GIT_AUTHOR_EMAIL
Writes: a commit on PUBLISH_BRANCH (or tweakops/<hash>) of MODEL_REPO;
        run.env PUBLISHED_COMMIT, PUBLISHED_BRANCH; stdout: the commit
Exit:   0 published or nothing to publish; 2 nothing fetched/trained yet;
        6 the push failed (one line; the branch and the best source are as they were)

    $ make publish
    $ make publish PUBLISH_BRANCH=tweakops-results
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

import confirm
import attempts
import state

TRAILER_PREFIX = "Tweakops-"
MAX_PUSHES = 3          # the branch may move again between our fetch and push; then we give up
SUBJECT_TWEAKS = 50     # characters of tweak labels in the subject before "and N more"


# ---------------------------------------------------------------------------
# trailers: the loop guard reads them, so they are parsed in this one place

def commit_trailers(repo_dir: str | os.PathLike, commit: str) -> dict[str, str]:
    """All trailers of `commit` as {key: value} (git's own parser; the last value of a key wins)."""
    proc = subprocess.run(
        ["git", "log", "-1", "--format=%(trailers:only,unfold)", commit],
        cwd=repo_dir, text=True, capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if proc.returncode != 0:
        return {}
    trailers = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            trailers[key.strip()] = value.strip()
    return trailers


def is_own_commit(repo_dir: str | os.PathLike, commit: str) -> dict[str, str] | None:
    """The Tweakops-* trailers when `commit` is a tweakops commit, else None.

    {"Tweakops-Accuracy": "0.9312", "Tweakops-Attempt": "4", "Tweakops-Source-Hash": "…", …}
    """
    own = {k: v for k, v in commit_trailers(repo_dir, commit).items() if k.startswith(TRAILER_PREFIX)}
    return own if "Tweakops-Source-Hash" in own else None


# ---------------------------------------------------------------------------
# what to say: the kept tweaks, before and after

def lineage(history: list[dict], best_attempt: int) -> list[dict]:
    """The attempts from the baseline to the best one, following `parent` (the kept tweaks in order)."""
    by_attempt = {r.get("attempt"): r for r in history}
    chain, seen = [], set()
    record = by_attempt.get(best_attempt)
    while record is not None and record.get("attempt") not in seen:
        seen.add(record.get("attempt"))
        chain.append(record)
        if record.get("outcome") == "baseline":
            break
        record = by_attempt.get(record.get("parent"))
    return list(reversed(chain))


def baseline_accuracy(history: list[dict], chain: list[dict]) -> float | None:
    for record in (chain[:1] if chain and chain[0].get("outcome") == "baseline" else []) + history:
        if record.get("outcome") == "baseline" and record.get("accuracy") is not None:
            return float(record["accuracy"])
    return None


def published_accuracy(history: list[dict], chain: list[dict], best_acc: float,
                       best_attempt: int) -> tuple[float, str | None]:
    """The accuracy the trailer carries, and a line on where it comes from: the
    from-scratch confirmation of a warm-started best (confirm.py), else the best's own,
    said plainly when that one was warm-started."""
    best = chain[-1] if chain else {}
    if best.get("warm_from") is None:
        return best_acc, None
    done = confirm.confirmation_of(history, best_attempt)
    if done is not None and isinstance(done.get("accuracy"), (int, float)):
        return float(done["accuracy"]), (
            f"Trained from scratch (attempt {done['attempt']}): {done['accuracy']:.4f}; the search's "
            f"attempt {best_attempt}, warm-started from attempt {best['warm_from']}'s weights, gave "
            f"{best_acc:.4f} ({float(done['accuracy']) - best_acc:+.4f})")
    return best_acc, (f"Warm-started: attempt {best_attempt} trained from attempt {best['warm_from']}'s "
                      f"weights; trained from scratch its accuracy may differ (not confirmed: CONFIRM=0 "
                      f"or the confirmation did not run)")


def message(cfg: dict, run: dict, history: list[dict], chain: list[dict], base_acc: float | None,
            best_acc: float, best_attempt: int, source_hash: str) -> str:
    search_acc = best_acc
    best_acc, origin = published_accuracy(history, chain, best_acc, best_attempt)
    tweaks = [r for r in chain if r.get("outcome") != "baseline"]
    labels = [str(r.get("tweak") or "tweak") for r in tweaks] or ["tweaked source"]
    shown = ", ".join(labels)
    if len(shown) > SUBJECT_TWEAKS and len(labels) > 1:
        shown = f"{labels[0]} and {len(labels) - 1} more"
    before = f"{base_acc:.2f} → " if base_acc is not None else ""
    subject = f"tweakops: {shown} → accuracy {before}{best_acc:.2f}"

    target = cfg["TARGET_ACCURACY"]
    model_file = run["MODEL_FILE"]
    lines = [subject, "", f"tweakops tweaked {model_file} and kept what raised the accuracy:", ""]
    previous = base_acc
    for record in tweaks:
        acc = record.get("accuracy")
        step = f"{previous:.4f} → {acc:.4f}" if previous is not None and acc is not None else (
            f"{acc:.4f}" if acc is not None else "")
        lines.append(f"- attempt {record.get('attempt')}: {record.get('tweak')}" + (f" ({step})" if step else ""))
        if record.get("why"):
            lines.append(f"  why: {record['why']}")
        previous = acc if acc is not None else previous
    if not tweaks:
        lines.append(f"- attempt {best_attempt}")
    outcomes: dict[str, int] = {}
    for record in history:
        outcomes[record.get("outcome", "?")] = outcomes.get(record.get("outcome", "?"), 0) + 1
    counts = ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items()))
    verdict = "met" if state.meets(best_acc, target) else "not reached"
    lines += [
        "",
        f"Accuracy: {'' if base_acc is None else f'{base_acc:.4f} → '}{search_acc:.4f} (attempt {best_attempt})",
        *([origin] if origin else []),
        f"Target:   {target:.2f} ({verdict})",
        f"Attempts: {len(history)} ({counts})",
        f"Based on: {run['COMMIT'][:12]}",
        "",
        f"Tweakops-Accuracy: {best_acc:.4f}",
        f"Tweakops-Target: {target:.2f}",
        f"Tweakops-Attempt: {best_attempt}",
        f"Tweakops-Source-Hash: {source_hash}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# git: a one-file commit on any parent, a push that is never forced

class PushRejected(Exception):
    """The branch moved (non-fast-forward): fetch and try again."""


@contextlib.contextmanager
def scratch_index(checkout: Path):
    """A throw-away index, so the checkout's own index and working tree stay untouched."""
    fd, path = tempfile.mkstemp(prefix="tweakops-index.", dir=checkout / ".git")
    os.close(fd)
    os.unlink(path)  # git wants to create the index itself
    old = os.environ.get("GIT_INDEX_FILE")
    os.environ["GIT_INDEX_FILE"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("GIT_INDEX_FILE", None)
        else:
            os.environ["GIT_INDEX_FILE"] = old
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def blob_at(cfg: dict, checkout: Path, commit: str, path: str) -> str | None:
    proc = state.git(cfg, "rev-parse", "-q", "--verify", f"{commit}:{path}", cwd=checkout, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def make_commit(cfg: dict, checkout: Path, parent: str, path: str, text: str, msg: str) -> str:
    """A commit on `parent` whose only change is `path` := `text`."""
    mode = "100644"
    listed = state.git(cfg, "ls-tree", parent, "--", path, cwd=checkout).stdout.split()
    if listed and listed[0] in ("100644", "100755"):
        mode = listed[0]
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin", "--path", path], cwd=checkout,
                          input=text.encode("utf-8"), capture_output=True, check=True).stdout.decode().strip()
    with scratch_index(checkout):
        state.git(cfg, "read-tree", parent, cwd=checkout, what="git read-tree")
        state.git(cfg, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", cwd=checkout,
                  what="git update-index")
        tree = state.git(cfg, "write-tree", cwd=checkout, what="git write-tree").stdout.strip()
    fd, msg_file = tempfile.mkstemp(prefix="tweakops-msg.", dir=checkout / ".git")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(msg)
        return state.git(cfg, "commit-tree", tree, "-p", parent, "-F", msg_file, cwd=checkout,
                         what="git commit-tree").stdout.strip()
    finally:
        os.unlink(msg_file)


def remote_branch(cfg: dict, checkout: Path, branch: str) -> str | None:
    """Fetch `branch` from origin; its head, or None when the branch does not exist there."""
    proc = state.git(cfg, "ls-remote", "--heads", "origin", f"refs/heads/{branch}", cwd=checkout, check=False)
    if proc.returncode != 0:
        raise state.TweakopsError(f"cannot read the model repository: {_last(proc)}; nothing was pushed",
                                  state.EXIT_PUBLISH_FAILED)
    if not proc.stdout.strip():
        return None
    proc = state.git(cfg, "fetch", "-q", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
                     cwd=checkout, check=False)
    if proc.returncode != 0:
        raise state.TweakopsError(f"git fetch of {branch} failed: {_last(proc)}; nothing was pushed",
                                  state.EXIT_PUBLISH_FAILED)
    return state.git(cfg, "rev-parse", f"refs/remotes/origin/{branch}", cwd=checkout).stdout.strip()


def push(cfg: dict, checkout: Path, commit: str, branch: str) -> None:
    """Push `commit` to origin's `branch` as a fast-forward (or a new branch); never forced."""
    proc = state.git(cfg, "push", "--porcelain", "origin", f"{commit}:refs/heads/{branch}",
                     cwd=checkout, check=False)
    if proc.returncode == 0:
        state.git(cfg, "update-ref", f"refs/remotes/origin/{branch}", commit, cwd=checkout, check=False)
        return
    for line in proc.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0] == "!":
            summary = fields[2]
            if summary.startswith("[rejected]") and ("fetch first" in summary or "non-fast-forward" in summary):
                raise PushRejected(summary)
            said = [l[len("remote:"):].strip() for l in proc.stderr.splitlines() if l.startswith("remote:")]
            said = [l for l in said if l]
            why = state.scrub(summary + (f": {said[-1]}" if said else ""))
            raise state.TweakopsError(f"push to {branch} refused: {why}; nothing was pushed, "
                                      "run make publish again once the remote accepts it", state.EXIT_PUBLISH_FAILED)
    raise state.TweakopsError(f"push to {branch} failed: {_last(proc)}; nothing was pushed", state.EXIT_PUBLISH_FAILED)


def _last(proc: subprocess.CompletedProcess) -> str:
    lines = [l for l in (proc.stderr + "\n" + proc.stdout).strip().splitlines() if l.strip()]
    return state.scrub(lines[-1].strip() if lines else f"exit {proc.returncode}")


def same_source(cfg: dict, checkout: Path, commit: str, path: str, source_hash: str) -> bool:
    proc = state.git(cfg, "show", f"{commit}:{path}", cwd=checkout, check=False)
    return proc.returncode == 0 and state.source_hash(proc.stdout) == source_hash


def follow_in_checkout(cfg: dict, checkout: Path, path: str, text: str, commit: str, branch: str) -> None:
    """Move the checkout onto the published commit when that loses nothing (else leave it be)."""
    current = state.git(cfg, "symbolic-ref", "-q", "--short", "HEAD", cwd=checkout, check=False).stdout.strip()
    if current != branch:
        return
    changed = [line[3:] for line in state.git(cfg, "status", "--porcelain", "--untracked-files=no",
                                              cwd=checkout).stdout.splitlines()]
    if set(changed) - {path}:
        state.warn(f"the checkout has other local changes; it stays at its commit ({', '.join(changed)})")
        return
    if path in changed and state.read_source(checkout / path) != text:
        state.warn(f"{path} in the checkout is not the published source; the checkout stays at its commit")
        return
    state.git(cfg, "reset", "-q", "--hard", commit, cwd=checkout, what="git reset")


# ---------------------------------------------------------------------------

def nothing(cfg: dict, why: str) -> int:
    state.update_run(cfg, PUBLISHED_COMMIT=None, PUBLISHED_BRANCH=None)
    state.info(f"nothing to publish: {why}")
    return state.EXIT_OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    cfg = state.config()
    state.hold_run(cfg, "publish")
    run = state.read_run(cfg)
    for key, what in (("COMMIT", "make fetch"), ("MODEL_FILE", "make detect")):
        if not run.get(key):
            raise state.TweakopsError(f"run.env has no {key}; run {what} first")
    checkout = Path(cfg["CHECKOUT_DIR"])
    if not (checkout / ".git").exists():
        raise state.TweakopsError(f"{checkout} is not a git checkout; run make fetch first")
    base, path = run["COMMIT"], run["MODEL_FILE"]
    attempts.model_path(cfg, path)   # a MODEL_FILE outside the checkout is never published
    branch = cfg["PUBLISH_BRANCH"] or run.get("MODEL_BRANCH") or cfg["MODEL_BRANCH"]
    state.banner("publish", f"{path} to {branch}")

    best_file = attempts.best_source(cfg, path)
    if not best_file.is_file() or not run.get("BEST_ACCURACY") or not run.get("BEST_ATTEMPT"):
        return nothing(cfg, f"no best source yet ({best_file}); run make train accuracy first")
    text = state.read_source(best_file)
    source_hash = state.source_hash(text)
    best_acc, best_attempt = float(run["BEST_ACCURACY"]), int(run["BEST_ATTEMPT"])
    history = attempts.this_run(run, state.read_history(cfg))
    chain = lineage(history, best_attempt)
    base_acc = baseline_accuracy(history, chain)

    if blob_at(cfg, checkout, base, path) is None:
        raise state.TweakopsError(f"{path} is not in the fetched commit {base[:12]}; run make fetch detect again")
    if same_source(cfg, checkout, base, path, source_hash):
        return nothing(cfg, f"the best source is the fetched one ({base[:12]}), accuracy {best_acc:.4f}")
    if base_acc is not None and best_acc <= base_acc:
        return nothing(cfg, f"the best accuracy {best_acc:.4f} is not above the baseline {base_acc:.4f}")

    fallback = f"tweakops/{source_hash[:10]}"
    for candidate in (branch, fallback):
        head = remote_branch(cfg, checkout, candidate)
        if head and same_source(cfg, checkout, head, path, source_hash):
            state.update_run(cfg, PUBLISHED_COMMIT=head, PUBLISHED_BRANCH=candidate)
            state.info(f"nothing to publish: {candidate} already holds this source at {head[:12]}")
            print(head)
            return state.EXIT_OK

    msg = message(cfg, run, history, chain, base_acc, best_acc, best_attempt, source_hash)
    parent, target = base, branch
    for _ in range(MAX_PUSHES):
        commit = make_commit(cfg, checkout, parent, path, text, msg)
        try:
            push(cfg, checkout, commit, target)
            break
        except PushRejected:
            head = remote_branch(cfg, checkout, target)
            if head is None:
                continue  # deleted meanwhile: pushing again creates it
            if blob_at(cfg, checkout, head, path) == blob_at(cfg, checkout, base, path):
                state.info(f"{target} moved to {head[:12]} without touching {path}: rebased onto it")
                parent = head
            elif target == branch:
                state.warn(f"{target} moved to {head[:12]} and changed {path} there; "
                           f"publishing to the new branch {fallback} instead (merge it by hand)")
                parent, target = base, fallback
            else:
                raise state.TweakopsError(f"{target} moved while publishing; nothing was pushed, run make publish again",
                                          state.EXIT_PUBLISH_FAILED) from None
    else:
        raise state.TweakopsError(f"{target} kept moving while publishing ({MAX_PUSHES} tries); nothing was pushed, "
                                  "run make publish again", state.EXIT_PUBLISH_FAILED)

    state.update_run(cfg, PUBLISHED_COMMIT=commit, PUBLISHED_BRANCH=target)
    follow_in_checkout(cfg, checkout, path, text, commit, target)
    state.info(f"published {commit[:12]} to {target}: {msg.splitlines()[0]}")
    print(commit)
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
