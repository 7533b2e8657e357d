"""A branch and a model file whose names are full of shell syntax go through every stage unharmed.

The branch `feat/it's-a-"test";>PWNED;$(>PWNED);`>PWNED`` (git accepts it: no spaces
in a ref) and the file `it's my model; "x" $(>PWNED).py` each create a file named
PWNED if any step pastes them into a shell line; quotes, `;`, `$( )` and backticks
are all there. Through make (fetch, detect, train, tweak, publish) and through the
rendered Jenkins jobs run by their step runner (scripts/jenkins_step.py, executed by
tests/jenkins_executor.py as Jenkins would): no PWNED file anywhere, the published
commit is on that very branch with the Tweakops trailers, and it changes only that
file, whose content is the best source.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import publish
import state
from conftest import ROOT, Project
from jenkins_executor import Executor, render_jobs
from test_bad_inputs import TINY, make

pytestmark = pytest.mark.slow

BRANCH = "feat/it's-a-\"test\";>PWNED;$(>PWNED);`>PWNED`"
MODEL = "it's my model; \"x\" $(>PWNED).py"


def seed_branch(p: Project) -> str:
    """The remote with `main` (a README) and BRANCH holding MODEL (the tiny model)."""
    work = p.root / "seed"
    work.mkdir()
    (work / "README.md").write_text("Models.\n")
    p.git("init", "-q", "-b", "main", cwd=work)
    p.git("add", "-A", cwd=work)
    p.git("commit", "-q", "-m", "readme", cwd=work)
    p.git("checkout", "-q", "-b", BRANCH, cwd=work)
    (work / MODEL).write_text(TINY)
    p.git("add", "-A", cwd=work)
    p.git("commit", "-q", "-m", "the model", cwd=work)
    p.git("clone", "-q", "--bare", str(work), str(p.remote))
    return p.git("rev-parse", "HEAD", cwd=work).stdout.strip()


def pwned(p: Project) -> list[Path]:
    places = [ROOT, ROOT / "scripts", Path.cwd(), Path("/tmp"), Path.home()]
    return [place / "PWNED" for place in places if (place / "PWNED").exists()] + list(p.root.rglob("PWNED"))


def assert_published_on_the_branch(p: Project, fetched: str) -> str:
    run = p.run_env()
    assert run.get("MODEL_FILE") == MODEL and run.get("MODEL_BRANCH") == BRANCH, run
    commit = run.get("PUBLISHED_COMMIT")
    assert commit and run.get("PUBLISHED_BRANCH") == BRANCH, run
    head = p.git("rev-parse", f"refs/heads/{BRANCH}", cwd=p.remote).stdout.strip()
    assert head == commit
    assert p.git("rev-parse", f"{commit}^", cwd=p.remote).stdout.strip() == fetched
    assert publish.is_own_commit(p.remote, commit)
    changed = p.git("diff-tree", "--no-commit-id", "--name-only", "-z", "-r", commit, cwd=p.remote).stdout
    assert changed.split("\0")[:-1] == [MODEL]
    published = p.git("show", f"{commit}:{MODEL}", cwd=p.remote).stdout
    assert published == (p.state / "best" / MODEL).read_text() != TINY
    assert p.git("rev-parse", "refs/heads/main", cwd=p.remote).stdout.strip() != commit   # main left alone
    return commit


def test_make_pipeline_on_a_branch_and_a_file_named_with_shell_syntax(tmp_path, digits):
    p = Project(tmp_path, digits, example=None)
    fetched = seed_branch(p)
    result = make(p, "pipeline", MODEL_BRANCH=BRANCH, TARGET_ACCURACY="0.99", MAX_TWEAKS="1")
    assert not pwned(p), "a name was run by a shell"
    assert result.code == state.EXIT_BELOW_TARGET, result.stderr[-4000:]
    assert result.errors() == []
    assert f"entry script: {MODEL}" in result.stderr
    history = p.history()
    assert [r["outcome"] for r in history][:1] == ["baseline"] and len(history) == 2, history
    assert_published_on_the_branch(p, fetched)
    assert (p.checkout / MODEL).read_text() == (p.state / "best" / MODEL).read_text()


def test_the_jenkins_jobs_on_a_branch_and_a_file_named_with_shell_syntax(tmp_path, digits):
    """Rendered with that MODEL_BRANCH, job 1's SCM checks out that very branch; the chain
    of jobs (fetch → detect → train → tweak → publish → notify → logs) runs the real
    stages through jenkins_step.py with MODEL_FILE set to the odd name."""
    p = Project(tmp_path, digits, example=None)
    fetched = seed_branch(p)
    env = {**p.env, "MODEL_BRANCH": BRANCH, "MODEL_FILE": MODEL, "TARGET_ACCURACY": "0.99", "MAX_TWEAKS": "1",
           "JENKINS_BUILD_TOKEN": "quoting-build-token",   # none generated into the repository's build/secrets/
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    xml = tmp_path / "jobs"
    rendered = render_jobs(xml, env)
    assert rendered.returncode == 0, rendered.stderr
    assert not pwned(p)
    import xml.etree.ElementTree as ET

    fetch_job = ET.parse(xml / "tweakops-1-fetch" / "config.xml")
    assert [b.findtext("name") for b in fetch_job.iter("hudson.plugins.git.BranchSpec")] == [BRANCH]
    for config in xml.glob("*/config.xml"):
        for command in ET.parse(config).iter("command"):
            assert "PWNED" not in (command.text or ""), f"{config.parent.name}: the branch is pasted into a shell step"

    builds = Executor(xml, tmp_path / "jenkins", env=env).run("tweakops-1-fetch")
    logs = {repr(b): b.log.read_text() for b in builds}
    assert not pwned(p), "a name was run by a shell"
    names = [repr(b) for b in builds]
    assert names[:3] == ["tweakops-1-fetch#1 SUCCESS", "tweakops-2-detect#1 SUCCESS", "tweakops-3-train#1 UNSTABLE"], logs
    assert not any("FAILURE" in n for n in names), logs
    assert "tweakops-5-notify#1 SUCCESS" in names, logs
    assert_published_on_the_branch(p, fetched)
