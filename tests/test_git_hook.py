"""make hooks: the git hooks that start the pipeline on a push (scripts/git_hook.py)."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from fake_jenkins import FakeJenkins
from jenkins_executor import ROOT, clean_env, recipe_code, render_jobs

JOB1 = "tweakops-1-fetch"


def git(*args, cwd=None, env=None, check=True):
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=check, capture_output=True, text=True)


@pytest.fixture
def env(tmp_path):
    return clean_env(tmp_path, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
                     GIT_AUTHOR_NAME="tweakops", GIT_AUTHOR_EMAIL="tweakops@localhost")


@pytest.fixture
def bare(tmp_path, env):
    """A bare repository with main, and a developer's clone of it."""
    repo = tmp_path / "model.git"
    git("init", "-q", "--bare", "-b", "main", str(repo))
    dev = tmp_path / "dev"
    git("clone", "-q", str(repo), str(dev))
    return repo, dev


def make(target, env, **kv):
    args = ["make", "-s", "-C", str(ROOT), target] + [f"{k}={v}" for k, v in kv.items()]
    return subprocess.run(args, env=env, capture_output=True, text=True)


def commit(dev, env, author="Ada", name="model.py", text="print('hi')\n"):
    (dev / name).write_text(text)
    git("add", name, cwd=dev, env=env)
    git("-c", f"user.name={author}", "-c", "user.email=a@example.com", "commit", "-qm", "change", cwd=dev,
        env={**env, "GIT_AUTHOR_NAME": author, "GIT_COMMITTER_NAME": author})


def push(dev, env, ref="HEAD:main"):
    return git("push", "origin", ref, cwd=dev, env=env, check=False)


def test_hooks_installs_post_receive_into_a_bare_repository(bare, env):
    repo, _ = bare
    result = make("hooks", env, REPO=repo)
    assert result.returncode == 0, result.stderr
    hook = repo / "hooks" / "post-receive"
    assert os.access(hook, os.X_OK)
    assert "git_hook.py" in hook.read_text() and "post-receive" in hook.read_text()
    assert make("hooks", env, REPO=repo).returncode == 0  # installing again replaces our own hook


def test_hooks_never_overwrites_a_hook_it_did_not_install(bare, env):
    repo, _ = bare
    (repo / "hooks" / "post-receive").write_text("#!/bin/sh\necho mine\n")
    result = make("hooks", env, REPO=repo)
    assert recipe_code(result) == 2
    assert "exists and is not tweakops'; add this line to it" in result.stderr
    assert (repo / "hooks" / "post-receive").read_text() == "#!/bin/sh\necho mine\n"


@pytest.mark.parametrize("repo, message", [
    ("", "error: say which repository: make hooks REPO=path/to/model.git"),
    ("/nonexistent/repo", "error: REPO=/nonexistent/repo: no such folder; give the path of a git repository"),
])
def test_hooks_without_a_repository_says_what_to_give(env, repo, message):
    result = make("hooks", env, REPO=repo)
    assert recipe_code(result) == 2 and result.stderr.splitlines()[0] == message


def test_hooks_refuses_a_folder_that_is_not_a_repository(tmp_path, env):
    result = make("hooks", env, REPO=tmp_path)
    assert recipe_code(result) == 2
    assert "is not a git repository; run git init" in result.stderr


def test_a_push_to_the_model_branch_asks_jenkins_to_build_job1(bare, env, tmp_path):
    repo, dev = bare
    with FakeJenkins(user="ci", token="api-token") as jenkins:
        keys = dict(JENKINS_URL=jenkins.url, JENKINS_USER="ci", JENKINS_TOKEN="api-token", JENKINS_BUILD_TOKEN="push-token")
        out = tmp_path / "xml"
        assert render_jobs(out, {**env, **keys}).returncode == 0
        jenkins.load_jobs(out)  # as deployed
        env.update(keys)
        assert make("hooks", env, REPO=repo).returncode == 0
        commit(dev, env)
        result = push(dev, env)
        assert result.returncode == 0, result.stderr
        assert f"tweakops: asked Jenkins to build {JOB1}" in result.stderr
        assert jenkins.builds == [JOB1]
        method, path, headers = [r for r in jenkins.requests if "/build" in r[1]][0]
        assert method == "POST" and path == f"/job/{JOB1}/build?token=push-token"


def test_tweakops_own_commits_and_other_branches_start_nothing(bare, env):
    repo, dev = bare
    with FakeJenkins() as jenkins:
        env.update(JENKINS_URL=jenkins.url, JENKINS_BUILD_TOKEN="t")
        assert make("hooks", env, REPO=repo).returncode == 0
        commit(dev, env, author="tweakops")   # what publish pushes
        result = push(dev, env)
        assert "is tweakops' own commit (tweakops): nothing to build" in result.stderr
        commit(dev, env, author="Ada", name="other.py")
        result = push(dev, env, "HEAD:experiment")
        assert "no push to main: nothing to build" in result.stderr
        assert jenkins.builds == []


def test_a_wrong_token_is_reported_and_the_push_still_lands(bare, env, tmp_path):
    repo, dev = bare
    with FakeJenkins() as jenkins:
        out = tmp_path / "xml"
        assert render_jobs(out, {**env, "JENKINS_BUILD_TOKEN": "right"}).returncode == 0
        jenkins.load_jobs(out)
        env.update(JENKINS_URL=jenkins.url, JENKINS_BUILD_TOKEN="wrong")
        assert make("hooks", env, REPO=repo).returncode == 0
        commit(dev, env)
        result = push(dev, env)
        assert result.returncode == 0
        assert f"error: Jenkins answered 403 to {jenkins.url}job/{JOB1}/build; check JENKINS_BUILD_TOKEN" in result.stderr
        assert git("rev-parse", "main", cwd=repo).stdout == git("rev-parse", "HEAD", cwd=dev).stdout


def test_without_jenkins_a_push_starts_the_pipeline_in_the_background(bare, env, tmp_path):
    # `make pipeline` itself is tested elsewhere; MAKE stands in for it here and records
    # how it was started
    repo, dev = bare
    record = tmp_path / "started"
    fake_make = tmp_path / "fake-make"
    fake_make.write_text(f'#!/bin/sh\nsleep 1\necho "$* MODEL_REPO=$MODEL_REPO GIT_DIR=$GIT_DIR" > {record}\necho training\n')
    fake_make.chmod(0o755)
    env["MAKE"] = str(fake_make)
    assert make("hooks", env, REPO=repo, MAKE=fake_make).returncode == 0
    commit(dev, env)
    started = time.monotonic()
    result = push(dev, env)
    assert result.returncode == 0
    assert "tweakops: started make pipeline in the background (queued behind a run in progress); log: " in result.stderr
    log = Path(result.stderr.split("log: ")[1].split()[0])
    assert log.parent == tmp_path / "state" / "logs" and log.name.startswith("hook-")
    for _ in range(100):
        if record.exists() and "training" in log.read_text():
            break
        time.sleep(0.1)
    assert record.read_text().strip() == f"-C {ROOT} pipeline WAIT=1 MODEL_REPO={repo} GIT_DIR="
    assert time.monotonic() - started < 60  # sanity only: the push did not wait for the "training"


def test_hooks_installs_post_commit_into_a_working_copy_which_pushes(bare, env):
    repo, dev = bare
    result = make("hooks", env, REPO=dev)
    assert result.returncode == 0, result.stderr
    assert (dev / ".git" / "hooks" / "post-commit").exists()
    commit(dev, env)
    assert git("rev-parse", "main", cwd=repo).stdout == git("rev-parse", "HEAD", cwd=dev).stdout
