"""Execute rendered Jenkins freestyle jobs (config.xml) the way Jenkins does, without Jenkins.

No Jenkins server can run where the tests run, so the tests execute the very XML that
`make jenkins-jobs` renders (and `make jenkins-deploy` uploads). This follows the parts
of Jenkins' behaviour the tweakops jobs rely on, and refuses any element it does not
know, so a job using something not emulated here fails the test instead of passing:

- a job waits for a node carrying its label (`assignedNode`): a label no node has is an
  error here (in Jenkins the build would wait in the queue forever);
- SCM `hudson.plugins.git.GitSCM`: the workspace gets a clone of the url at the branch
  (GIT_COMMIT, GIT_BRANCH, GIT_URL set), as the git plugin checks out before the steps;
- `hudson.tasks.Shell` steps run in order in the job's workspace, each from a script
  file: a `#!` first line picks the interpreter, else `/bin/sh -xe`. Exit 0 goes on;
  the exit code equal to `unstableReturn` marks the build UNSTABLE and goes on; any
  other stops the build as FAILURE;
- build-timeout (absolute): the step is killed when time is up; FAILURE with the
  FailOperation, else ABORTED. Timestamper only decorates the log: ignored;
- publishers run whatever the result: `ArtifactArchiver` copies the matching files to
  the build's archive (none matching and allowEmptyArchive false: FAILURE); then the
  parameterized-trigger `BuildTrigger` queues each config's projects whose `condition`
  holds for the final result; a config without parameters triggers only with
  `triggerWithNoParameters` (Jenkins' rule); the core `BuildTrigger` queues its
  `childProjects` when the result is at least as good as its threshold;
- the queue is first in, first out; a job already waiting is not queued twice (Jenkins
  merges identical queue items); timers and SCM polling are recorded, not fired;
- each build has WORKSPACE, BUILD_NUMBER, BUILD_ID, BUILD_TAG, JOB_NAME, JOB_URL,
  BUILD_URL, JENKINS_URL (when given), NODE_NAME, NODE_LABELS, EXECUTOR_NUMBER in its
  environment, on top of the environment the executor was given (the agent's).

Layout under `home`: jobs/<job>/builds/<n>/log (console), .../archive/ (artifacts),
workspace/<job>/ (kept between builds, as Jenkins keeps it).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = ["SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED"]  # Jenkins' order, best first

# parameterized-trigger's ResultCondition
CONDITIONS = {
    "SUCCESS": lambda r: r == "SUCCESS",
    "UNSTABLE": lambda r: r == "UNSTABLE",
    "UNSTABLE_OR_BETTER": lambda r: RESULTS.index(r) <= 1,
    "UNSTABLE_OR_WORSE": lambda r: r in ("UNSTABLE", "FAILURE"),
    "FAILED": lambda r: r == "FAILURE",
    "FAILED_OR_BETTER": lambda r: RESULTS.index(r) <= 2,
    "ALWAYS": lambda r: True,
}

KNOWN_WRAPPERS = {"hudson.plugins.build__timeout.BuildTimeoutWrapper", "hudson.plugins.timestamper.TimestamperBuildWrapper"}
KNOWN_TRIGGERS = {"hudson.triggers.SCMTrigger", "hudson.triggers.TimerTrigger"}


@dataclass
class Job:
    name: str
    disabled: bool
    label: str | None                    # None = any node
    git: tuple[str, str] | None          # (url, branch)
    shells: list[tuple[str, int | None]]  # (command, unstableReturn)
    timeout_minutes: float | None
    timeout_result: str
    archive: tuple[list[str], bool] | None  # (patterns, allow empty)
    triggers: list[tuple[list[str], callable]]  # (projects, when(result))
    auth_token: str | None
    schedules: dict[str, str] = field(default_factory=dict)  # trigger class -> spec


@dataclass
class Build:
    job: str
    number: int
    result: str
    cause: str
    log: Path
    artifacts: list[Path]

    def __repr__(self):
        return f"{self.job}#{self.number} {self.result}"


def parse_job(name: str, xml_text: str) -> Job:
    root = ET.fromstring(xml_text.encode("utf-8"))
    if root.tag != "project":
        raise ValueError(f"{name}: a {root.tag}, not a freestyle project")
    label = None
    if root.findtext("canRoam") == "false":
        label = root.findtext("assignedNode") or ""

    git = None
    scm = root.find("scm")
    scm_class = scm.get("class") if scm is not None else "hudson.scm.NullSCM"
    if scm_class == "hudson.plugins.git.GitSCM":
        remotes = scm.findall("userRemoteConfigs/hudson.plugins.git.UserRemoteConfig")
        branches = scm.findall("branches/hudson.plugins.git.BranchSpec")
        if len(remotes) != 1 or len(branches) != 1:
            raise NotImplementedError(f"{name}: one git remote and one branch are emulated")
        git = (remotes[0].findtext("url"), branches[0].findtext("name"))
    elif scm_class != "hudson.scm.NullSCM":
        raise NotImplementedError(f"{name}: SCM {scm_class}")

    shells = []
    for step in root.find("builders"):
        if step.tag != "hudson.tasks.Shell":
            raise NotImplementedError(f"{name}: builder {step.tag}")
        unstable = step.findtext("unstableReturn")
        shells.append((step.findtext("command"), int(unstable) if unstable else None))

    timeout_minutes, timeout_result = None, "ABORTED"
    for wrapper in root.find("buildWrappers") if root.find("buildWrappers") is not None else []:
        if wrapper.tag not in KNOWN_WRAPPERS:
            raise NotImplementedError(f"{name}: build wrapper {wrapper.tag}")
        if wrapper.tag.endswith("BuildTimeoutWrapper"):
            strategy = wrapper.find("strategy")
            if not strategy.get("class", "").endswith("AbsoluteTimeOutStrategy"):
                raise NotImplementedError(f"{name}: timeout strategy {strategy.get('class')}")
            timeout_minutes = float(strategy.findtext("timeoutMinutes"))
            ops = [op.tag for op in wrapper.find("operationList")]
            timeout_result = "FAILURE" if any(op.endswith("FailOperation") for op in ops) else "ABORTED"

    archive, triggers = None, []
    for pub in root.find("publishers"):
        if pub.tag == "hudson.tasks.ArtifactArchiver":
            archive = ([p.strip() for p in pub.findtext("artifacts").split(",") if p.strip()],
                       pub.findtext("allowEmptyArchive") == "true")
        elif pub.tag == "hudson.plugins.parameterizedtrigger.BuildTrigger":
            for cfg in pub.findall("configs/hudson.plugins.parameterizedtrigger.BuildTriggerConfig"):
                has_params = len(cfg.find("configs")) > 0
                if not has_params and cfg.findtext("triggerWithNoParameters") != "true":
                    continue  # Jenkins does not trigger a config that has no parameters
                projects = [p.strip() for p in cfg.findtext("projects").split(",") if p.strip()]
                triggers.append((projects, CONDITIONS[cfg.findtext("condition")]))
        elif pub.tag == "hudson.tasks.BuildTrigger":
            ordinal = int(pub.findtext("threshold/ordinal"))
            projects = [p.strip() for p in pub.findtext("childProjects").split(",") if p.strip()]
            triggers.append((projects, lambda r, o=ordinal: RESULTS.index(r) <= o))
        else:
            raise NotImplementedError(f"{name}: publisher {pub.tag}")

    schedules = {}
    for trig in root.find("triggers") if root.find("triggers") is not None else []:
        if trig.tag not in KNOWN_TRIGGERS:
            raise NotImplementedError(f"{name}: trigger {trig.tag}")
        schedules[trig.tag] = trig.findtext("spec")

    return Job(name, root.findtext("disabled") == "true", label, git, shells, timeout_minutes,
               timeout_result, archive, triggers, root.findtext("authToken"), schedules)


class Executor:
    def __init__(self, xml_dir: Path, home: Path, env: dict | None = None, node_labels=(),
                 jenkins_url: str = "", max_builds: int = 40):
        self.home = Path(home)
        self.env = dict(os.environ if env is None else env)
        self.node_labels = set(node_labels)
        self.jenkins_url = jenkins_url
        self.max_builds = max_builds
        self.jobs: dict[str, Job] = {}
        for cfg in sorted(Path(xml_dir).glob("*/config.xml")):
            text = cfg.read_text(encoding="utf-8")
            if ET.fromstring(text.encode()).tag == "project":
                self.jobs[cfg.parent.name] = parse_job(cfg.parent.name, text)
        self.queue: list[tuple[str, str]] = []
        self.builds: list[Build] = []
        self.numbers: dict[str, int] = {}
        self.lock = threading.Lock()

    def trigger(self, job: str, cause: str = "Started by user") -> None:
        if job not in self.jobs:
            raise KeyError(f"no job {job!r}; jobs: {', '.join(self.jobs)}")
        if self.jobs[job].disabled:
            return
        if all(queued != job for queued, _ in self.queue):  # Jenkins merges identical queue items
            self.queue.append((job, cause))

    def run(self, job: str | None = None, cause: str = "Started by user") -> list[Build]:
        """Queue `job` (if given) and run builds until the queue is empty; return the builds."""
        with self.lock:
            start = len(self.builds)
            if job:
                self.trigger(job, cause)
            while self.queue:
                if len(self.builds) >= self.max_builds:
                    raise RuntimeError(f"more than {self.max_builds} builds: a trigger loop? {self.builds}")
                name, why = self.queue.pop(0)
                build = self._build(self.jobs[name], why)
                self.builds.append(build)
                for projects, when in self.jobs[name].triggers:
                    if when(build.result):
                        for project in projects:
                            self.trigger(project, f"Started by upstream project {name} build number {build.number}")
            return self.builds[start:]

    # -- one build -------------------------------------------------------------

    def _build(self, job: Job, cause: str) -> Build:
        if job.label is not None and job.label not in self.node_labels:
            raise RuntimeError(f"{job.name} needs a node labelled {job.label!r}; the nodes have {sorted(self.node_labels)}")
        number = self.numbers[job.name] = self.numbers.get(job.name, 0) + 1
        build_dir = self.home / "jobs" / job.name / "builds" / str(number)
        build_dir.mkdir(parents=True)
        workspace = self.home / "workspace" / job.name
        workspace.mkdir(parents=True, exist_ok=True)
        job_url = f"{self.jenkins_url.rstrip('/')}/job/{job.name}/" if self.jenkins_url else ""
        env = dict(self.env)
        env.update(WORKSPACE=str(workspace), BUILD_NUMBER=str(number), BUILD_ID=str(number),
                   BUILD_TAG=f"jenkins-{job.name}-{number}", JOB_NAME=job.name, JOB_BASE_NAME=job.name,
                   NODE_NAME="built-in", NODE_LABELS=" ".join(sorted(self.node_labels | {"built-in"})),
                   EXECUTOR_NUMBER="0", JENKINS_HOME=str(self.home))
        if self.jenkins_url:
            env.update(JENKINS_URL=self.jenkins_url, JOB_URL=job_url, BUILD_URL=f"{job_url}{number}/")
        result = "SUCCESS"
        log_path = build_dir / "log"
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"{cause}\nRunning as SYSTEM\nBuilding in workspace {workspace}\n")
            log.flush()
            if job.git:
                result = self._checkout(job.git, workspace, env, log)
            for i, (command, unstable) in enumerate(job.shells if result == "SUCCESS" else []):
                code = self._shell(command, i, build_dir, workspace, env, log, job)
                if code == 0:
                    continue
                if isinstance(code, str):  # timed out
                    result = code
                    break
                if unstable is not None and code == unstable:
                    log.write(f"Build step 'Execute shell' marked build as unstable (exit {code})\n")
                    result = "UNSTABLE"
                    continue
                log.write(f"Build step 'Execute shell' marked build as failure\n")
                result = "FAILURE"
                break
            artifacts = []
            if job.archive:
                patterns, allow_empty = job.archive
                artifacts = self._archive(patterns, workspace, build_dir / "archive")
                if not artifacts and not allow_empty:
                    log.write(f"ERROR: No artifacts found that match the file pattern \"{','.join(patterns)}\"\n")
                    result = _worst(result, "FAILURE")
            log.write(f"Finished: {result}\n")
        return Build(job.name, number, result, cause, log_path, artifacts)

    def _checkout(self, git, workspace, env, log) -> str:
        url, branch = git
        branch = branch.split("/")[-1] if branch.startswith(("*/", "origin/", "refs/heads/")) else branch
        shutil.rmtree(workspace, ignore_errors=True)
        clean = {k: v for k, v in env.items() if not k.startswith("GIT_")}
        proc = subprocess.run(["git", "clone", "--quiet", "--branch", branch, url, str(workspace)],
                              stdout=log, stderr=subprocess.STDOUT, env=clean)
        if proc.returncode != 0:
            log.write("ERROR: Error cloning remote repo 'origin'\n")
            workspace.mkdir(parents=True, exist_ok=True)
            return "FAILURE"
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True).stdout.strip()
        env.update(GIT_COMMIT=commit, GIT_BRANCH=f"origin/{branch}", GIT_URL=url)
        log.write(f"Checking out Revision {commit} (origin/{branch})\n")
        return "SUCCESS"

    def _shell(self, command, index, build_dir, workspace, env, log, job):
        script = build_dir / f"jenkins{index}.sh"
        script.write_text(command, encoding="utf-8")
        first = command.splitlines()[0] if command else ""
        argv = first[2:].split() + [str(script)] if first.startswith("#!") else ["/bin/sh", "-xe", str(script)]
        log.write(f"[{job.name}] $ {' '.join(argv)}\n")
        log.flush()
        timeout = job.timeout_minutes * 60 if job.timeout_minutes else None
        proc = subprocess.Popen(argv, cwd=workspace, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # Jenkins kills the whole process tree of the build
            proc.wait()
            log.write(f"Build timed out (after {job.timeout_minutes:g} minutes). Marking the build as "
                      f"{'failed' if job.timeout_result == 'FAILURE' else 'aborted'}.\n")
            return job.timeout_result

    @staticmethod
    def _archive(patterns, workspace: Path, dest: Path) -> list[Path]:
        files = [p for p in workspace.rglob("*") if p.is_file()]
        chosen = []
        for p in files:
            rel = p.relative_to(workspace).as_posix()
            for pattern in patterns:  # Ant patterns: ** spans folders
                if fnmatch.fnmatchcase(rel, pattern) or (pattern.endswith("/**") and rel.startswith(pattern[:-2])):
                    chosen.append(p)
                    break
        out = []
        for p in chosen:
            target = dest / p.relative_to(workspace)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, target)
            out.append(target)
        return out


def _worst(a: str, b: str) -> str:
    return a if RESULTS.index(a) >= RESULTS.index(b) else b


ROOT = Path(__file__).resolve().parent.parent


def render_jobs(out: Path, env: dict) -> subprocess.CompletedProcess:
    """Render the jobs as `make jenkins-jobs` does, into `out`, with this configuration."""
    return subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "jenkins_jobs.py"),
                           "render", "--out", str(out)], env=env, capture_output=True, text=True)


def clean_env(tmp: Path, **keys: str) -> dict:
    """The environment with no tweakops configuration but `keys` (no .env is read)."""
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import state
    env = {k: v for k, v in os.environ.items() if k not in state.DEFAULTS and not k.startswith("GIT_")}
    empty = tmp / "empty.env"
    empty.touch()
    env.update(TWEAKOPS_ENV_FILE=str(empty), STATE_DIR=str(tmp / "state"), NO_COLOR="1", **keys)
    return env


def recipe_code(result: subprocess.CompletedProcess) -> int:
    """The exit code of the script behind a `make` call (make itself always exits 2)."""
    import re
    if result.returncode == 0:
        return 0
    match = re.search(r"\*\*\* \[[^\]\n]*\] \D*?(\d+)", result.stderr)
    return int(match.group(1)) if match else result.returncode
