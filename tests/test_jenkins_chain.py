"""The rendered jobs, executed as Jenkins would, chain by result: tests/jenkins_executor.py.

The stages are stand-ins here: TWEAKOPS_HOME points the jobs' shell steps at a copy of
scripts/jenkins_step.py next to a Makefile whose targets exit with the codes a scenario
gives them, so that every branch of the chain (below target, cap reached, crash) is
walked in seconds. The real stages run in tests/test_jenkins_e2e.py.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from jenkins_executor import ROOT, Executor, clean_env, render_jobs

STAGES = "fetch detect train accuracy tweak publish notify watchdog report logs".split()

STAGE_SH = """#!/bin/sh
# stand-in stage: log the call, exit with the next code queued for this target
here=$(dirname "$0")
echo "$1 $JOB_NAME#$BUILD_NUMBER" >> "$here/calls.log"
code=0
f="$here/codes/$1"
if [ -s "$f" ]; then code=$(head -n 1 "$f"); tail -n +2 "$f" > "$f.next"; mv "$f.next" "$f"; fi
if [ "$1" = logs ]; then echo "log bundle" > "$here/bundle.tar.gz"; echo "$here/bundle.tar.gz"; fi
exit "$code"
"""


def make_remote(path: Path) -> Path:
    """A bare repository with one commit on main: job 1's SCM checks it out."""
    work = path.parent / "model-work"
    git = lambda *a, cwd=work: subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True)
    work.mkdir()
    git("init", "-q", "-b", "main")
    (work / "model.py").write_text("print('Test accuracy:', 0.9)\n")
    git("add", ".")
    git("-c", "user.name=Ada", "-c", "user.email=ada@example.com", "commit", "-qm", "model")
    git("clone", "-q", "--bare", str(work), str(path), cwd=path.parent)
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    remote = make_remote(tmp / "model.git")
    out = tmp / "xml"
    result = render_jobs(out, clean_env(tmp, JENKINS_LABEL="docker", MODEL_REPO=str(remote)))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def home(tmp_path):
    """A stand-in tweakops installation: the real step runner, stage scripts that obey codes/."""
    home = tmp_path / "tweakops"
    (home / "scripts").mkdir(parents=True)
    for name in ("jenkins_step.py", "state.py"):
        shutil.copy(ROOT / "scripts" / name, home / "scripts" / name)
    (home / "stage.sh").write_text(STAGE_SH)
    (home / "stage.sh").chmod(0o755)
    (home / "Makefile").write_text("".join(f".PHONY: {t}\n{t}:\n\t@./stage.sh $@\n" for t in STAGES))
    (home / "codes").mkdir()
    return home


def run_chain(rendered, home, tmp_path, codes: dict[str, list[int]], start="tweakops-1-fetch"):
    for target, seq in codes.items():
        (home / "codes" / target).write_text("".join(f"{c}\n" for c in seq))
    env = clean_env(tmp_path, TWEAKOPS_HOME=str(home))
    ex = Executor(rendered, tmp_path / "jenkins", env=env, node_labels={"docker"})
    builds = ex.run(start)
    calls = (home / "calls.log").read_text().split("\n") if (home / "calls.log").exists() else []
    return [repr(b) for b in builds], [c.split()[0] for c in calls if c], builds


def test_target_met_at_once_goes_from_fetch_to_notify_and_the_log_bundle(rendered, home, tmp_path):
    builds, calls, objs = run_chain(rendered, home, tmp_path, {})
    assert builds == ["tweakops-1-fetch#1 SUCCESS", "tweakops-2-detect#1 SUCCESS", "tweakops-3-train#1 SUCCESS",
                      "tweakops-5-notify#1 SUCCESS", "tweakops-logs#1 SUCCESS"]
    assert calls == ["fetch", "detect", "train", "accuracy", "notify", "report", "logs"]
    assert [p.name for p in objs[-1].artifacts] == ["bundle.tar.gz"]


def test_below_target_loops_the_tweak_job_until_the_target_is_met_then_publishes(rendered, home, tmp_path):
    builds, calls, _ = run_chain(rendered, home, tmp_path, {"accuracy": [3, 3, 3, 0]})
    assert builds == ["tweakops-1-fetch#1 SUCCESS", "tweakops-2-detect#1 SUCCESS", "tweakops-3-train#1 UNSTABLE",
                      "tweakops-4-tweak#1 UNSTABLE", "tweakops-4-tweak#2 UNSTABLE", "tweakops-4-tweak#3 SUCCESS",
                      "tweakops-5-notify#1 SUCCESS", "tweakops-logs#1 SUCCESS"]
    assert calls.count("tweak") == 3 and calls.count("publish") == 1
    assert calls[-5:] == ["accuracy", "publish", "notify", "report", "logs"]


def test_no_tweak_left_publishes_the_best_so_far_and_notifies(rendered, home, tmp_path):
    builds, calls, _ = run_chain(rendered, home, tmp_path, {"accuracy": [3, 3], "tweak": [0, 8]})
    assert builds[3:] == ["tweakops-4-tweak#1 UNSTABLE", "tweakops-4-tweak#2 SUCCESS",
                          "tweakops-5-notify#1 SUCCESS", "tweakops-logs#1 SUCCESS"]
    # the second tweak finds nothing left: no training, straight to publish
    assert calls[calls.index("tweak", calls.index("tweak") + 1):] == ["tweak", "publish", "notify", "report", "logs"]


@pytest.mark.parametrize("failing, job", [("detect", "tweakops-2-detect"), ("train", "tweakops-3-train")])
def test_a_failed_stage_notifies_calls_the_watchdog_and_stops_the_chain(rendered, home, tmp_path, failing, job):
    builds, calls, _ = run_chain(rendered, home, tmp_path, {failing: [4]})
    assert builds[-4:] == [f"{job}#1 FAILURE", "tweakops-5-notify#1 SUCCESS", "tweakops-6-watchdog#1 SUCCESS",
                           "tweakops-logs#1 SUCCESS"]
    assert calls[calls.index(failing):] == [failing, "notify", "watchdog", "report", "logs"]
    assert "tweak" not in calls and "publish" not in calls


def test_a_failed_tweak_attempt_notifies_and_calls_the_watchdog_not_another_tweak(rendered, home, tmp_path):
    builds, _, _ = run_chain(rendered, home, tmp_path, {"accuracy": [3], "train": [0, 5]})
    assert builds[-4:] == ["tweakops-4-tweak#1 FAILURE", "tweakops-5-notify#1 SUCCESS", "tweakops-6-watchdog#1 SUCCESS",
                           "tweakops-logs#1 SUCCESS"]


def test_a_refused_publish_notifies(rendered, home, tmp_path):
    builds, calls, _ = run_chain(rendered, home, tmp_path, {"accuracy": [3, 0], "publish": [6]})
    assert builds[-4:] == ["tweakops-4-tweak#1 FAILURE", "tweakops-5-notify#1 SUCCESS", "tweakops-6-watchdog#1 SUCCESS",
                           "tweakops-logs#1 SUCCESS"]
    assert calls.count("notify") == 1


def test_nothing_to_report_still_bundles_the_logs(rendered, home, tmp_path):
    builds, calls, objs = run_chain(rendered, home, tmp_path, {"detect": [2], "report": [2]})
    assert builds[-1] == "tweakops-logs#1 SUCCESS" and calls[-2:] == ["report", "logs"]
    assert [p.name for p in objs[-1].artifacts] == ["bundle.tar.gz"]


def test_a_failed_fetch_stops_there(rendered, home, tmp_path):
    builds, calls, _ = run_chain(rendered, home, tmp_path, {"fetch": [2]})
    assert builds == ["tweakops-1-fetch#1 FAILURE"]
    assert calls == ["fetch"]


def test_jobs_export_jenkins_variables_to_the_stages(rendered, home, tmp_path):
    (home / "stage.sh").write_text('#!/bin/sh\necho "$WORKSPACE|$BUILD_NUMBER|$JOB_NAME|$PWD" >> "$(dirname "$0")/env.log"\n')
    run_chain(rendered, home, tmp_path, {}, start="tweakops-6-watchdog")
    ws = tmp_path / "jenkins" / "workspace" / "tweakops-6-watchdog"
    assert (home / "env.log").read_text().strip() == f"{ws}|1|tweakops-6-watchdog|{home}"
