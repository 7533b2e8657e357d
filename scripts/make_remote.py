"""Create the local bare repository that stands in for the model's remote.

With MODEL_REPO unset, the embedded default is `remote/<EXAMPLE>.git`, a bare git
repository on disk (a real remote: clone, fetch and push work as over the network)
whose branch MODEL_BRANCH holds the bundled example `models/<EXAMPLE>/model.py`.
An existing repository is kept as it is: it may hold commits tweakops published.
With MODEL_REPO set, there is nothing to create.

Reads:  MODEL_REPO, EXAMPLE (cnn, rnn, sklearn), MODEL_BRANCH
Writes: remote/<EXAMPLE>.git
Exit:   0 ready, 2 bad EXAMPLE

    $ make remote EXAMPLE=rnn
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import state


def create(cfg: dict, bare: Path, example: str) -> str:
    """Make `bare` with one commit holding models/<example>/; return the commit."""
    source = state.ROOT / "models" / example
    bare.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".seed-", dir=bare.parent))
    try:
        work = tmp / "work"
        shutil.copytree(source, work, ignore=shutil.ignore_patterns("__pycache__"))
        branch = cfg["MODEL_BRANCH"]
        state.git(cfg, "init", "-q", "-b", branch, str(work), what="git init")
        state.git(cfg, "add", "-A", cwd=work)
        state.git(cfg, "commit", "-q", "-m", f"Example {example} model", cwd=work, what="git commit")
        state.git(cfg, "clone", "-q", "--bare", str(work), str(tmp / "repo.git"), what="git clone --bare")
        os.replace(tmp / "repo.git", bare)
        return state.git(cfg, "rev-parse", "HEAD", cwd=bare).stdout.strip()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    cfg = state.config()
    bare = Path(cfg["MODEL_REPO"])
    default = state.ROOT / "remote" / f"{cfg['EXAMPLE']}.git"
    if bare != default:
        state.info(f"MODEL_REPO is {state.scrub(cfg['MODEL_REPO'])}: nothing to create")
        return state.EXIT_OK
    if (bare / "HEAD").exists():
        state.info(f"local remote ready: {bare}")
        return state.EXIT_OK
    commit = create(cfg, bare, cfg["EXAMPLE"])
    state.info(f"local remote ready: {bare} (branch {cfg['MODEL_BRANCH']}, example {cfg['EXAMPLE']}, {commit[:10]})")
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
