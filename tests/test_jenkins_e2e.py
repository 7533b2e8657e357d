"""End to end under "Jenkins": a push to the bare repository runs the deployed jobs to the notification.

No Jenkins can run here. The jobs are deployed with `make jenkins-deploy` to a loopback
server speaking Jenkins' REST API (tests/fake_jenkins.py); the post-receive hook that
`make hooks` installs asks it to build job 1 with the build token; on that request the
server runs the deployed config.xml files with tests/jenkins_executor.py, which follows
the triggers by result as Jenkins does. The stages are the real ones: real training of
the example CNN, real tweaks, a real publish to the bare repository, the notification
written to STATE_DIR/notifications/ (no SMTP configured).
"""

import re
import subprocess
import threading

import pytest

from fake_jenkins import FakeJenkins
from jenkins_executor import ROOT, Executor

pytestmark = pytest.mark.slow

NEEDED = {"fetch", "detect", "train", "accuracy", "tweak", "publish", "notify", "watchdog", "report", "logs"}
MISSING = NEEDED - set(re.findall(r"^([a-zA-Z0-9_-]+):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.skipif(bool(MISSING), reason=f"needs the make targets {sorted(MISSING)} (other issues)")
def test_a_push_runs_the_jobs_from_the_hook_to_the_notification(project, tmp_path):
    env = {**project.env, "JENKINS_BUILD_TOKEN": "e2e-build-token", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "TARGET_ACCURACY": "0.999", "MAX_TWEAKS": "1", "MAX_MINUTES": "30"}
    finished = threading.Event()
    runs = []

    def on_build(job):  # Jenkins queues the build and answers at once; the build runs after
        def run():
            try:
                runs.append(executor.run(job, "Started by remote host 127.0.0.1"))
            finally:
                finished.set()
        threading.Thread(target=run, daemon=True).start()

    with FakeJenkins(on_build=on_build) as jenkins:
        env["JENKINS_URL"] = jenkins.url
        deployed = subprocess.run(["make", "-s", "-C", str(ROOT), "jenkins-deploy"], env=env, capture_output=True, text=True)
        assert deployed.returncode == 0, deployed.stderr
        xml = tmp_path / "deployed"
        for name, text in jenkins.jobs.items():
            (xml / name).mkdir(parents=True)
            (xml / name / "config.xml").write_text(text)
        executor = Executor(xml, tmp_path / "jenkins", env=env, jenkins_url=jenkins.url)

        hooked = subprocess.run(["make", "-s", "-C", str(ROOT), "hooks", f"REPO={project.remote}"], env=env,
                                capture_output=True, text=True)
        assert hooked.returncode == 0, hooked.stderr
        dev = tmp_path / "ada"
        project.git("clone", "-q", str(project.remote), str(dev))
        (dev / "NOTES.md").write_text("Trying the digits CNN.\n")
        project.git("add", "NOTES.md", cwd=dev)
        project.git("-c", "user.name=Ada", "-c", "user.email=ada@example.com", "commit", "-qm", "notes", cwd=dev)
        ada = {**env, "GIT_AUTHOR_NAME": "Ada", "GIT_COMMITTER_NAME": "Ada"}
        pushed = subprocess.run(["git", "push", "origin", "HEAD:main"], cwd=dev, env=ada, capture_output=True, text=True)
        assert pushed.returncode == 0, pushed.stderr
        assert "asked Jenkins to build tweakops-1-fetch" in pushed.stderr
        assert finished.wait(timeout=1500), "the jobs did not finish"

    builds = [repr(b) for b in runs[0]]
    logs = {repr(b): b.log.read_text() for b in runs[0]}
    assert builds[:3] == ["tweakops-1-fetch#1 SUCCESS", "tweakops-2-detect#1 SUCCESS", "tweakops-3-train#1 UNSTABLE"], logs
    assert builds[-2:] == ["tweakops-5-notify#1 SUCCESS", "tweakops-logs#1 SUCCESS"], logs
    middle = builds[3:-2]
    assert middle and all(b.startswith("tweakops-4-tweak#") for b in middle), logs
    assert middle[-1].endswith("SUCCESS") and not any("FAILURE" in b for b in builds), logs
    notes = list((project.state / "notifications").iterdir())
    assert notes, "no notification written"
    assert runs[0][-1].artifacts, "the logs job archived nothing"
