"""The jobs rendered from jenkins/*.yaml by Jenkins Job Builder: what Jenkins will be given."""

import re
import shlex
import sys
import xml.etree.ElementTree as ET

import pytest

from jenkins_executor import CONDITIONS, ROOT, clean_env, parse_job, render_jobs

sys.path.insert(0, str(ROOT / "scripts"))
import jenkins_jobs  # noqa: E402
import state  # noqa: E402

P = "tweakops-"
JOBS = [f"{P}1-fetch", f"{P}2-detect", f"{P}3-train", f"{P}4-tweak", f"{P}5-notify", f"{P}6-watchdog", f"{P}logs"]

# Java class prefixes -> the plugin that provides them; "core" is Jenkins itself.
# A class matching none of these fails the test: add its plugin here and to plugins.txt.
CLASS_PLUGINS = {
    "hudson.plugins.git.": "git",
    "hudson.plugins.parameterizedtrigger.": "parameterized-trigger",
    "hudson.plugins.build__timeout.": "build-timeout",
    "hudson.plugins.build_timeout.": "build-timeout",
    "hudson.plugins.timestamper.": "timestamper",
    "au.com.centrumsystems.hudson.plugin.buildpipeline.": "build-pipeline-plugin",
    "hudson.tasks.Shell": "core",
    "hudson.tasks.ArtifactArchiver": "core",
    "hudson.tasks.LogRotator": "core",
    "hudson.triggers.SCMTrigger": "core",
    "hudson.triggers.TimerTrigger": "core",
    "hudson.scm.NullSCM": "core",
    "hudson.model.View$PropertyList": "core",
    "jenkins.model.BuildDiscarderProperty": "core",
    "java.util.": "core",
}


def render(tmp, **keys):
    out = tmp / "xml"
    result = render_jobs(out, clean_env(tmp, **keys))
    assert result.returncode == 0, result.stderr
    return {d.name: (d / "config.xml").read_text(encoding="utf-8") for d in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def xml(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jobs")
    return render(tmp, JENKINS_LABEL="gpu", MODEL_REPO="https://git.example.com/ada/model.git",
                  MODEL_BRANCH="trunk", JENKINS_BUILD_TOKEN="s3cret-token", GIT_AUTHOR_NAME="tweakops-bot",
                  JENKINS_TWEAKOPS_HOME="/opt/tweakops")


@pytest.fixture(scope="module")
def jobs(xml):
    return {name: parse_job(name, text) for name, text in xml.items() if name in JOBS}


def makefile_targets():
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z0-9_-]+):", text, re.M))


def step_targets(command: str):
    """The make targets a shell step runs (jenkins_step.py's arguments and --on-exit ones)."""
    line = [ln for ln in command.splitlines() if "jenkins_step.py" in ln]
    assert len(line) == 1, command
    args = shlex.split(line[0])
    assert args[:2] == ["exec", "python3"] and args[2] == "${TWEAKOPS_HOME:-/opt/tweakops}/scripts/jenkins_step.py", args
    args, targets, options = args[3:], [], {}
    while args:
        a = args.pop(0)
        if a.startswith("--"):
            options[a] = args.pop(0)
        else:
            targets.append(a)
    return targets, options


def edges(jobs):
    """(upstream, downstream, condition) for every trigger."""
    name_of = {v: k for k, v in CONDITIONS.items()}
    return {(name, project, name_of[cond]) for name, job in jobs.items()
            for projects, cond in job.triggers for project in projects}


def test_the_seven_seed_jobs_and_the_pipeline_view_are_rendered(xml):
    assert sorted(xml) == sorted(JOBS + ["tweakops"])
    view = ET.fromstring(xml["tweakops"].encode())
    assert view.tag == "au.com.centrumsystems.hudson.plugin.buildpipeline.BuildPipelineView"
    assert view.findtext("gridBuilder/firstJob") == f"{P}1-fetch"


def test_every_shell_step_runs_existing_make_targets(jobs):
    targets = makefile_targets()
    used = set()
    for name, job in jobs.items():
        assert job.shells, name
        for command, _ in job.shells:
            assert command.startswith("#!/bin/bash -e\n"), name
            stages, options = step_targets(command)
            extra = [t for rule in [options.get("--on-exit", "")] if rule for t in rule.split("=", 1)[1].split(",")]
            used.update(stages + extra)
    assert used <= targets, f"not make targets: {sorted(used - targets)}"
    assert (ROOT / "scripts" / "jenkins_step.py").exists()


def test_each_job_runs_its_seed_stages(jobs):
    got = {name: step_targets(job.shells[0][0]) for name, job in jobs.items()}
    assert got == {
        f"{P}1-fetch": (["fetch"], {}),
        f"{P}2-detect": (["detect"], {}),
        f"{P}3-train": (["train", "accuracy"], {}),
        f"{P}4-tweak": (["tweak", "train", "accuracy", "publish"], {"--on-exit": "8=publish"}),
        f"{P}5-notify": (["notify"], {}),
        f"{P}6-watchdog": (["watchdog"], {}),
        f"{P}logs": (["report", "logs"], {"--on-exit": "2=logs", "--artifacts": "artifacts"}),
    }


def test_the_trigger_graph_is_the_seed_chain_and_every_failure_notifies(jobs):
    assert edges(jobs) == {
        (f"{P}1-fetch", f"{P}2-detect", "SUCCESS"),
        (f"{P}2-detect", f"{P}3-train", "SUCCESS"),
        (f"{P}2-detect", f"{P}5-notify", "FAILED"),
        (f"{P}2-detect", f"{P}6-watchdog", "FAILED"),
        (f"{P}3-train", f"{P}5-notify", "SUCCESS"),
        (f"{P}3-train", f"{P}4-tweak", "UNSTABLE"),
        (f"{P}3-train", f"{P}5-notify", "FAILED"),
        (f"{P}3-train", f"{P}6-watchdog", "FAILED"),
        (f"{P}4-tweak", f"{P}5-notify", "SUCCESS"),
        (f"{P}4-tweak", f"{P}4-tweak", "UNSTABLE"),
        (f"{P}4-tweak", f"{P}5-notify", "FAILED"),
        (f"{P}4-tweak", f"{P}6-watchdog", "FAILED"),
        (f"{P}5-notify", f"{P}logs", "ALWAYS"),
    }


def test_every_trigger_fires_without_parameters(xml):
    # parameterized-trigger skips a config that has no parameters unless told otherwise
    for name in JOBS:
        for cfg in ET.fromstring(xml[name].encode()).iter("hudson.plugins.parameterizedtrigger.BuildTriggerConfig"):
            assert cfg.findtext("triggerWithNoParameters") == "true", name


def test_below_target_exit_3_marks_the_training_jobs_unstable(jobs):
    assert jobs[f"{P}3-train"].shells[0][1] == 3
    assert jobs[f"{P}4-tweak"].shells[0][1] == 3
    assert state.EXIT_BELOW_TARGET == 3  # the code parse_accuracy.py exits with
    # job 4's fallback to publish is tweak's "no tweak left" code
    assert getattr(state, "EXIT_NO_TWEAK_LEFT", 8) == 8


def test_job1_polls_the_model_repository_and_takes_a_build_token(jobs, xml):
    fetch = jobs[f"{P}1-fetch"]
    assert fetch.git == ("https://git.example.com/ada/model.git", "trunk")
    assert fetch.schedules == {"hudson.triggers.SCMTrigger": "H/5 * * * *"}
    assert fetch.auth_token == "s3cret-token"
    root = ET.fromstring(xml[f"{P}1-fetch"].encode())
    assert root.findtext(".//hudson.plugins.git.extensions.impl.UserExclusion/excludedUsers") == "tweakops-bot"
    assert root.find(".//credentialsId") is None
    others = {n: j for n, j in jobs.items() if n != f"{P}1-fetch"}
    assert all(j.git is None and j.auth_token is None for j in others.values())


def test_the_watchdog_runs_every_five_minutes(jobs):
    assert jobs[f"{P}6-watchdog"].schedules == {"hudson.triggers.TimerTrigger": "H/5 * * * *"}
    assert all(not j.schedules for n, j in jobs.items() if n not in (f"{P}1-fetch", f"{P}6-watchdog"))


def test_every_job_runs_on_the_configured_label(jobs):
    assert {j.label for j in jobs.values()} == {"gpu"}


def test_no_label_lets_the_jobs_run_on_any_node(tmp_path):
    xml = render(tmp_path)
    root = ET.fromstring(xml[f"{P}3-train"].encode())
    assert root.findtext("canRoam") == "true" and root.find("assignedNode") is None


def test_git_credentials_are_used_only_when_configured(tmp_path):
    xml = render(tmp_path, JENKINS_GIT_CREDENTIALS="model-repo-deploy-key")
    assert ET.fromstring(xml[f"{P}1-fetch"].encode()).findtext(".//credentialsId") == "model-repo-deploy-key"


def test_without_a_build_token_one_is_generated_once_and_kept(tmp_path):
    first = render(tmp_path)
    path = jenkins_jobs.token_path({"STATE_DIR": str(tmp_path / "state")})
    token = path.read_text().strip()
    assert len(token) == 40
    assert path.stat().st_mode & 0o077 == 0
    assert not list((tmp_path / "state").glob("*token*"))   # never where the model's container can read it
    second = render(tmp_path)
    assert parse_job("f", first[f"{P}1-fetch"]).auth_token == token == parse_job("f", second[f"{P}1-fetch"]).auth_token


def test_jobs_carry_the_shared_defaults(xml, jobs):
    for name in JOBS:
        root = ET.fromstring(xml[name].encode())
        assert "do not edit in the UI" in root.findtext("description")
        assert root.find("buildWrappers/hudson.plugins.timestamper.TimestamperBuildWrapper") is not None
        assert root.findtext("properties/jenkins.model.BuildDiscarderProperty/strategy/numToKeep") == "200"
        assert root.findtext("concurrentBuild") == "false"
        assert jobs[name].timeout_minutes == 180 and jobs[name].timeout_result == "FAILURE"


def test_the_logs_job_archives_what_its_step_collects(jobs):
    assert jobs[f"{P}logs"].archive == (["artifacts/**"], False)


def test_the_jobs_use_exactly_the_plugins_in_plugins_txt(xml):
    listed = {line.split(":")[0].strip() for line in (ROOT / "jenkins" / "plugins.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    used = set()
    for name, text in xml.items():
        for el in ET.fromstring(text.encode()).iter():
            if el.get("plugin"):
                used.add(el.get("plugin").split("@")[0])
            for cls in (el.tag, el.get("class", "")):
                if "." not in cls:
                    continue
                plugin = next((p for prefix, p in CLASS_PLUGINS.items() if cls.startswith(prefix)), None)
                assert plugin, f"{name}: {cls} comes from which plugin? add it to CLASS_PLUGINS and plugins.txt"
                used.add(plugin)
    assert used - {"core"} == listed


def test_shell_variables_survive_the_template_expansion(xml):
    # JJB expands {…}: a shell ${VAR} must be written ${{VAR}} in the YAML
    for name in JOBS:
        for command in ET.fromstring(xml[name].encode()).iter("command"):
            assert "${TWEAKOPS_HOME:-" in command.text and "{{" not in command.text
