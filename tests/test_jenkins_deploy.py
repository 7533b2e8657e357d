"""make jenkins-deploy against a loopback server speaking Jenkins' REST API (tests/fake_jenkins.py)."""

import os
import subprocess

import pytest

from fake_jenkins import FakeJenkins
from jenkins_executor import ROOT, clean_env, recipe_code, render_jobs

SECRET = "11aa22bb33cc44dd55ee66ff77"


def plugins_txt():
    lines = (ROOT / "jenkins" / "plugins.txt").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def error_line(result):
    return next(line for line in result.stderr.splitlines() if line.startswith("error:"))


def deploy(env):
    return subprocess.run(["make", "-s", "-C", str(ROOT), "jenkins-deploy"], env=env, capture_output=True, text=True)


@pytest.fixture
def env(tmp_path):
    return clean_env(tmp_path, JENKINS_LABEL="docker", JENKINS_BUILD_TOKEN="push-token",
                     XDG_CACHE_HOME=str(tmp_path / "cache"), TMPDIR=str(tmp_path))


def test_deploy_uploads_exactly_the_rendered_jobs_and_view(env, tmp_path):
    with FakeJenkins(user="ci-bot", token=SECRET, plugins=plugins_txt()) as jenkins:
        env.update(JENKINS_URL=jenkins.url, JENKINS_USER="ci-bot", JENKINS_TOKEN=SECRET)
        result = deploy(env)
        assert result.returncode == 0, result.stderr
        out = tmp_path / "xml"
        assert render_jobs(out, env).returncode == 0
        rendered = {d.name: (d / "config.xml").read_text() for d in out.iterdir()}
        uploaded = {**jenkins.jobs, **jenkins.views}
        assert sorted(uploaded) == sorted(rendered)
        for name, text in rendered.items():
            assert uploaded[name].strip() == text.strip(), name
        creates = [path for method, path, _ in jenkins.requests if method == "POST"]
        assert sorted(creates) == sorted([f"/createItem?name={n}" for n in jenkins.jobs] +
                                         [f"/createView?name={n}" for n in jenkins.views])
    assert "deployed the tweakops jobs to" in result.stdout


def test_the_token_travels_only_in_the_auth_header_never_in_output_or_files(env, tmp_path):
    with FakeJenkins(user="ci-bot", token=SECRET) as jenkins:
        env.update(JENKINS_URL=jenkins.url, JENKINS_USER="ci-bot", JENKINS_TOKEN=SECRET)
        result = deploy(env)
        assert result.returncode == 0, result.stderr
        assert all(r[2].get("Authorization") for r in jenkins.requests)
        assert all(SECRET not in r[1] for r in jenkins.requests)
    assert SECRET not in result.stdout + result.stderr
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET in p.read_text(errors="ignore")]
    assert leftovers == []  # the temporary jenkins_jobs.ini is gone


def test_a_second_deploy_reconfigures_the_jobs_in_place(env):
    with FakeJenkins() as jenkins:
        env["JENKINS_URL"] = jenkins.url
        assert deploy(env).returncode == 0
        jenkins.jobs["tweakops-3-train"] = jenkins.jobs["tweakops-3-train"].replace("train accuracy", "edited in the UI")
        del jenkins.requests[:]
        result = deploy(env)
        assert result.returncode == 0, result.stderr
        posts = {path for method, path, _ in jenkins.requests if method == "POST"}
        assert "/job/tweakops-3-train/config.xml" in posts and not any("create" in p for p in posts)
        assert "train accuracy" in jenkins.jobs["tweakops-3-train"]


def test_wrong_credentials_fail_with_one_line(env):
    with FakeJenkins(user="ci-bot", token=SECRET) as jenkins:
        env.update(JENKINS_URL=jenkins.url, JENKINS_USER="ci-bot", JENKINS_TOKEN="not-it")
        result = deploy(env)
    assert recipe_code(result) == 1
    assert error_line(result).startswith("error: jenkins-jobs update failed: ")
    assert "authentication failed [401]" in error_line(result)
    assert "not-it" not in result.stderr


@pytest.mark.parametrize("keys, message", [
    ({}, "error: JENKINS_URL is not set; put JENKINS_URL=https://jenkins.example.com/ in .env"),
    ({"JENKINS_URL": "http://127.0.0.1:9/", "JENKINS_USER": "ci"},
     "error: set both JENKINS_USER and JENKINS_TOKEN (an API token: Jenkins > your user > Security > API Token), or neither"),
])
def test_deploy_without_what_it_needs_says_what_to_set(env, keys, message):
    env.update(keys)
    result = deploy(env)
    assert recipe_code(result) == 2 and error_line(result) == message
