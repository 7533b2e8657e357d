"""Bad inputs as a user meets them: each row runs the real make target on a real STATE_DIR.

Every row asserts what the user sees and what is left behind: the documented exit code
(make always exits 2; the stage's own code is make's `*** [...] Error N` and
STATE_DIR/exit_code, which is never a stale one), exactly one `error: …` line naming
the problem and a fix, no traceback of tweakops' own, state files that still parse, the
best source, the earlier history, logs and metrics untouched, nothing half-published
on the remote, and, where a push caused the failure, the developer notified.

The model scripts are in tests/fixtures/bad/; the SMTP and webhook servers are real
ones on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import publish
import state
from conftest import PYTHON, ROOT, SCRIPTS, Project, wait_for
from test_publish import loop_project

BAD = ROOT / "tests" / "fixtures" / "bad"
TINY = (BAD / "tiny_sklearn.py").read_text()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MAKE_FAILED = re.compile(r"make(?:\[\d+\])?: \*\*\* \[[^\]\n]*\] \D*?(\d+)")
TRACEBACK = "Traceback (most recent call last)"


# ---------------------------------------------------------------------------
# running make as a user does, and reading what it left

@dataclass
class Outcome:
    code: int              # the stage's own exit code (make itself exits 2)
    stdout: str
    stderr: str
    recorded: str | None   # STATE_DIR/exit_code afterwards
    seconds: float
    root: str              # the test's own folder: its name is no evidence of anything

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def said(self, text: str) -> str:
        """`text` with the test's folder written <tmp>, so that words match what tweakops said."""
        return text.replace(self.root, "<tmp>")


def make(p: Project, *targets: str, drop: tuple[str, ...] = (), timeout: float = 600, **env) -> Outcome:
    """`make -s targets` in the repository with the project's environment (+env, -drop)."""
    environ = {**p.env, **env}
    for key in drop:
        environ.pop(key, None)
    started = time.time()
    proc = subprocess.run(["make", "-s", *targets], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=timeout)
    return outcome(p, proc.returncode, proc.stdout, proc.stderr, time.time() - started)


def outcome(p: Project, returncode: int, stdout: str, stderr: str, seconds: float = 0.0) -> Outcome:
    stdout, stderr = ANSI.sub("", stdout), ANSI.sub("", stderr)
    code = returncode
    if returncode != 0:
        found = MAKE_FAILED.search(stderr)
        code = int(found.group(1)) if found else returncode
    path = p.state / "exit_code"
    recorded = path.read_text().strip() if path.exists() else None
    return Outcome(code, stdout, stderr, recorded, seconds, str(p.root))


def the_error(result: Outcome, *words) -> str:
    """The one `error:` line; each word (or one of a tuple of words) must be in it."""
    lines = result.errors()
    assert len(lines) == 1, f"want exactly one error: line, got {lines}\n--- stderr ---\n{result.stderr[-4000:]}"
    line = lines[0]
    for word in words:
        options = word if isinstance(word, tuple) else (word,)
        assert any(o.lower() in result.said(line).lower() for o in options), f"{options} not in {line!r}"
    return line


def own_tracebacks(text: str, checkout: Path) -> list[str]:
    """Tracebacks that are tweakops' own: none of their frames is in the user's checkout
    (the user's script raising shows the user's traceback: that one is theirs to read)."""
    found = []
    for block in text.split(TRACEBACK)[1:]:
        frames = re.findall(r'^\s*File "([^"]+)"', block, re.MULTILINE)
        if not any(f.startswith(str(checkout) + os.sep) for f in frames):
            found.append(TRACEBACK + block[:1500])
    return found


def assert_no_own_traceback(p: Project, result: Outcome) -> None:
    own = own_tracebacks(result.output, p.checkout)
    assert not own, own[0]


def assert_state_parses(p: Project, torn_kept_aside: bool = False) -> None:
    """run.env, best/best.env, tweak_count, every history line and every metrics/result
    file: what the next stage reads must read."""
    state.read_env(p.state / "run.env")
    state.read_env(p.state / "best" / "best.env")
    count = p.state / "tweak_count"
    if count.exists():
        int(count.read_text().strip() or 0)
    history = p.state / "history.jsonl"
    if history.exists():
        for n, line in enumerate(history.read_text().splitlines(), 1):
            if line.strip():
                assert isinstance(json.loads(line), dict), f"history.jsonl:{n}: {line[:80]}"
    for folder in ("metrics", "results"):
        for path in (p.state / folder).glob("*.json"):
            json.loads(path.read_text())
    if not torn_kept_aside:
        assert not (p.state / "history.jsonl.torn").exists()


def remote_refs(p: Project) -> dict[str, str]:
    out = p.git("for-each-ref", "--format=%(refname) %(objectname)", cwd=p.remote).stdout
    return dict(line.split() for line in out.splitlines())


def record(line: str):
    """A history line as its object (a rewrite may order the keys anew), or as it is."""
    try:
        return json.loads(line)
    except ValueError:
        return line


def snapshot(p: Project) -> dict:
    """What a failing step must leave alone: best/, the history, the earlier attempts'
    logs and metrics, the remote's branches."""
    def files(folder: str, pattern: str = "*") -> dict[str, bytes]:
        root = p.state / folder
        return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.glob(pattern)) if f.is_file()}

    history = p.state / "history.jsonl"
    return {
        "best": files("best"),
        "history": [record(line) for line in history.read_text().splitlines() if line.strip()]
        if history.exists() else [],
        "logs": files("logs", "attempt-*.log"),
        "metrics": files("metrics", "attempt-*.json"),
        "refs": remote_refs(p),
    }


def assert_kept(p: Project, before: dict, *, new_attempts: int = 0, best: bool = True) -> list[dict]:
    """The best source (unless `best` is False: a booked attempt) and the earlier history,
    logs and metrics as they were; up to `new_attempts` records appended (a failed
    training is booked as failed, never kept); the remote unchanged or moved by one
    complete tweakops commit. The new records."""
    after = snapshot(p)
    if best:
        assert after["best"] == before["best"], "STATE_DIR/best/ changed"
    old = before["history"]
    assert after["history"][:len(old)] == old, "earlier history records changed or were lost"
    added = after["history"][len(old):]
    assert len(added) <= new_attempts, f"unexpected history records: {added}"
    for booked in added:
        assert booked.get("outcome") != "kept", booked
    for name, data in before["logs"].items():
        assert after["logs"].get(name) == data, f"logs/{name} of an earlier attempt changed or was deleted"
    for name, data in before["metrics"].items():
        assert after["metrics"].get(name) == data, f"metrics/{name} of an earlier attempt changed or was deleted"
    assert_nothing_half_published(p, before["refs"], after["refs"])
    return added


def assert_nothing_half_published(p: Project, before: dict[str, str], after: dict[str, str]) -> None:
    assert set(before) <= set(after), f"branches deleted: {set(before) - set(after)}"
    for ref, head in after.items():
        if before.get(ref) == head:
            continue
        parents = p.git("rev-list", "--parents", "-n", "1", head, cwd=p.remote).stdout.split()[1:]
        assert len(parents) == 1 and parents[0] in before.values(), f"{ref} moved by more than one commit"
        assert publish.is_own_commit(p.remote, head), f"{ref} got a commit without the Tweakops trailers"


def notifications(p: Project) -> list[str]:
    return [f.read_text() for f in sorted((p.state / "notifications").glob("*.md"))]


def assert_notified(p: Project, *words) -> str:
    """A message under notifications/ (no SMTP configured) naming the failure."""
    messages = notifications(p)
    assert messages, "the developer was not notified (no message in STATE_DIR/notifications/)"
    for text in messages:
        low = text.replace(str(p.root), "<tmp>").lower()
        if all(any(o.lower() in low for o in (w if isinstance(w, tuple) else (w,))) for w in words):
            assert "success" not in text.splitlines()[0].lower(), text.splitlines()[0]
            return text
    raise AssertionError(f"no notification names {words}; got:\n" + "\n---\n".join(m[:800] for m in messages))


def assert_recorded(result: Outcome) -> None:
    """STATE_DIR/exit_code says this run's code or nothing: never an earlier stage's."""
    assert result.recorded in (None, str(result.code)), \
        f"STATE_DIR/exit_code says {result.recorded}, the run exited {result.code}"


# ---------------------------------------------------------------------------
# a model repository and the state an earlier run left

def seed(p: Project, files: dict[str, str]) -> None:
    work = p.root / "seed"
    subprocess.run(["rm", "-rf", str(work), str(p.remote)], check=True)
    work.mkdir()
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    p.git("init", "-q", "-b", "main", cwd=work)
    p.git("add", "-A", cwd=work)
    p.git("commit", "-q", "-m", "model", cwd=work)
    p.git("clone", "-q", "--bare", str(work), str(p.remote))


def push_files(p: Project, files: dict[str, str], delete: tuple[str, ...] = (), message: str = "change") -> str:
    """A developer's push to main: write `files`, remove `delete`."""
    work = p.root / "dev"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    p.git("clone", "-q", str(p.remote), str(work))
    for name in delete:
        p.git("rm", "-q", name, cwd=work)
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    p.git("add", "-A", cwd=work)
    p.git("commit", "-q", "-m", message, cwd=work)
    p.git("push", "-q", "origin", "main", cwd=work)
    return p.git("rev-parse", "HEAD", cwd=work).stdout.strip()


def earlier_run(p: Project, torn: bool = False) -> None:
    """Two attempts an earlier run booked (history, logs, metrics) and its best source."""
    records = [
        {"attempt": 1, "run": "earlier", "tweak": "baseline", "parent": None, "accuracy": 0.61,
         "outcome": "baseline", "source_hash": "earlier-1", "diff": "", "exit_code": 0,
         "log": "logs/attempt-1.log", "metrics": "metrics/attempt-1.json"},
        {"attempt": 2, "run": "earlier", "tweak": "max_depth 3→6", "parent": 1, "accuracy": 0.72,
         "outcome": "kept", "source_hash": "earlier-2", "diff": "…", "exit_code": 0,
         "log": "logs/attempt-2.log", "metrics": "metrics/attempt-2.json"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    if torn:
        text += '{"attempt": 3, "run": "earlier", "tweak": "max_depth 6→12", "acc'   # a crash mid-append
    (p.state / "history.jsonl").write_text(text)
    for n in (1, 2, 3) if torn else (1, 2):
        (p.state / "logs").mkdir(parents=True, exist_ok=True)
        (p.state / "metrics").mkdir(parents=True, exist_ok=True)
        (p.state / "logs" / f"attempt-{n}.log").write_text(f"the log of attempt {n}\naccuracy: 0.{60 + n}\n")
        (p.state / "metrics" / f"attempt-{n}.json").write_text(json.dumps(
            {"framework": "sklearn", "attempt": n, "accuracy": 0.6 + n / 100, "finished": True}))
    (p.state / "best").mkdir(exist_ok=True)
    (p.state / "best" / "model.py").write_text(TINY.replace("max_depth=3", "max_depth=6"))


@pytest.fixture
def fresh(tmp_path, digits) -> Project:
    """The tiny scikit-learn model fetched (STATE_DIR/exit_code 0) after an earlier run."""
    p = Project(tmp_path, digits, example=None)
    seed(p, {"model.py": TINY})
    assert make(p, "fetch").code == 0
    earlier_run(p)
    return p


def pushed(p: Project, files: dict[str, str], delete: tuple[str, ...] = ()) -> None:
    """A developer pushes `files`; it is fetched (a new commit resets best/), then the
    earlier run's state is written again: the pipeline of that same commit must keep it."""
    push_files(p, files, delete)
    assert make(p, "fetch").code == 0
    earlier_run(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# the model a developer pushed: make pipeline, and the developer hears of it

def running_in(folder: Path) -> list[str]:
    """The command lines of live processes working in `folder` (the attempt runs in the checkout)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")).is_relative_to(folder) and proc.name != str(os.getpid()):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def fixture(name: str) -> str:
    return (BAD / name).read_text()


# id: (files pushed, files deleted, env, exit code, words in the error line, words in the notification, trains)
def assert_refused(p: Project, result: Outcome, before: dict, *words) -> str:
    """Bad input stopped before anything ran: exit 2, its one line (returned), no traceback
    of tweakops' own, the code recorded, every state file parsing, nothing lost."""
    assert result.code == state.EXIT_BAD_INPUT, result.stderr[-3000:]
    line = the_error(result, *words)
    assert_no_own_traceback(p, result)
    assert_recorded(result)
    assert_state_parses(p)
    assert_kept(p, before)
    return line


MODEL_ROWS = {
    "syntax-error": ({"model.py": fixture("syntax_error.py")}, (), {}, state.EXIT_BAD_INPUT,
                     ["model.py", "syntax error", ("fix", "push")], ["syntax error"], False),
    "empty-file": ({"model.py": fixture("empty.py")}, (), {}, state.EXIT_BAD_INPUT,
                   ["model.py", "empty"], ["empty"], False),
    "pytorch": ({"model.py": fixture("pytorch.py")}, (), {}, state.EXIT_BAD_INPUT,
                ["PyTorch", "not supported", ("Keras", "scikit-learn")], ["PyTorch"], False),
    "two-entry-files": ({"cnn_experiment.py": TINY, "tree_baseline.py": TINY}, ("model.py",), {},
                        state.EXIT_BAD_INPUT, ["cnn_experiment.py", "tree_baseline.py", "MODEL_FILE"],
                        ["MODEL_FILE"], False),
    "no-accuracy": ({"model.py": fixture("no_accuracy.py")}, (), {}, state.EXIT_BAD_INPUT,
                    ["no accuracy", ("print", "accuracy_score", "score(")], ["accuracy"], True),
    "exit-1-mid-training": ({"model.py": fixture("exits_mid_training.py")}, (), {}, state.EXIT_TRAINING_FAILED,
                            ["training failed", "exit 1", "log"], ["exit 1"], True),
    "raises-mid-training": ({"model.py": fixture("raises_mid_training.py")}, (), {}, state.EXIT_TRAINING_FAILED,
                            ["training failed", ("RuntimeError", "blew up"), "log"], [("RuntimeError", "blew up")],
                            True),
    "sleeps-forever": ({"model.py": fixture("sleeps_forever.py")}, (), {"TRAIN_TIMEOUT": "5"},
                       state.EXIT_TRAINING_FAILED, ["training failed", "TRAIN_TIMEOUT"], ["TRAIN_TIMEOUT"], True),
    "memory-grows": ({"model.py": fixture("memory_hog.py")}, (), {"TRAIN_MEMORY": "300m"},
                     state.EXIT_RUNNER_FAILED, ["TRAIN_MEMORY", "300m"], [("memory", "TRAIN_MEMORY")], True),
    "keras-without-fit": ({"model.py": fixture("keras_no_fit.py")}, (), {}, state.EXIT_TRAINING_FAILED,
                          ["fit"], ["fit"], True),
}
SLOW_MODEL_ROWS = {"no-accuracy", "exit-1-mid-training", "raises-mid-training", "sleeps-forever", "memory-grows",
                   "keras-without-fit"}


@pytest.mark.parametrize("row", [pytest.param(r, marks=pytest.mark.slow) if r in SLOW_MODEL_ROWS else r
                                 for r in MODEL_ROWS])
def test_a_pushed_model_that_cannot_train_is_one_line_and_the_developer_hears_of_it(fresh, row):
    files, delete, env, code, words, told, trains = MODEL_ROWS[row]
    pushed(fresh, files, delete)
    before = snapshot(fresh)
    result = make(fresh, "pipeline", MAX_TWEAKS="0", **env)
    assert result.code == code, result.stderr[-4000:]
    line = the_error(result, *words)
    if code == state.EXIT_TRAINING_FAILED:
        assert line.startswith("error: training failed"), line
    assert_no_own_traceback(fresh, result)
    assert_recorded(result)
    assert_state_parses(fresh)
    added = assert_kept(fresh, before, new_attempts=1 if trains else 0)
    if added:
        assert added[0]["attempt"] == 3, added   # after the earlier run's 1 and 2
    assert_notified(fresh, *told)
    run = fresh.run_env()
    if row == "memory-grows":
        assert run.get("STATUS") == "oom", run
    if row == "sleeps-forever":
        assert result.seconds < 120, f"TRAIN_TIMEOUT=5 took {result.seconds:.0f}s"
    assert not running_in(fresh.checkout), "the attempt is still running"


@pytest.mark.slow
def test_a_nan_loss_is_said_in_words_and_ends_below_target(fresh):
    """A diverged Keras model is not a crash: the attempt is booked (exit 3, below target)
    and tweakops says NaN/diverged in its own words, not only in Keras's progress bar."""
    pushed(fresh, {"model.py": fixture("nan_loss.py")})
    before = snapshot(fresh)
    result = make(fresh, "pipeline", MAX_TWEAKS="0")
    assert result.code == state.EXIT_BELOW_TARGET, result.stderr[-4000:]
    assert result.errors() == []
    assert re.search(r"\bnan\b|diverged", result.said(result.stderr), re.IGNORECASE), result.stderr[-3000:]
    assert_no_own_traceback(fresh, result)
    assert_recorded(result)
    assert_state_parses(fresh)
    [booked] = assert_kept(fresh, before, new_attempts=1, best=False)
    assert booked["attempt"] == 3 and booked["outcome"] == "baseline", booked   # this run's baseline
    assert (fresh.state / "best" / "model.py").read_text() == fixture("nan_loss.py")


# ---------------------------------------------------------------------------
# DATA_DIR: checked before anything runs

def tiny_images(folder: Path, classes=("cat", "dog"), per_class: int = 2) -> Path:
    from PIL import Image

    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            Image.new("L", (8, 8), color=40 * n).save(folder / name / f"{n}.png")
    return folder


def data_missing(tmp: Path) -> Path:
    return tmp / "no-such-data"


def data_empty(tmp: Path) -> Path:
    (tmp / "empty-data").mkdir()
    return tmp / "empty-data"


def data_one_class(tmp: Path) -> Path:
    return tiny_images(tmp / "one-class", classes=("cat",))


def data_corrupt_image(tmp: Path) -> Path:
    folder = tiny_images(tmp / "corrupt")
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    return folder


def data_link_escapes(tmp: Path) -> Path:
    folder = tiny_images(tmp / "linked")
    outside = tiny_images(tmp / "elsewhere", classes=("bird",))
    (folder / "bird").symlink_to(outside / "bird")
    return folder


DATA_ROWS = {
    "missing": (data_missing, ["DATA_DIR", "no-such-data", "does not exist", "set DATA_DIR"]),
    "empty": (data_empty, ["DATA_DIR", "empty-data", "empty", ("put", "set DATA_DIR")]),
    "one-class-folder": (data_one_class, ["one class", "cat", ("at least two", "two")]),
    "corrupt-image": (data_corrupt_image, ["broken.png", ("not a readable image", "corrupt"), ("fix", "remove")]),
    "link-escapes": (data_link_escapes, ["bird", "outside DATA_DIR", "copy"]),
}


@pytest.mark.parametrize("row", DATA_ROWS)
def test_a_bad_data_dir_is_one_line_before_anything_runs(fresh, tmp_path, row):
    make_data, words = DATA_ROWS[row]
    data = make_data(tmp_path)
    before = snapshot(fresh)
    result = make(fresh, "pipeline", DATA_DIR=str(data))
    assert_refused(fresh, result, before, *words)
    assert not list((fresh.state / "logs").glob("attempt-3*")), "an attempt started on a bad DATA_DIR"


# ---------------------------------------------------------------------------
# .env: a typo is one line, a value is data, never code

ENV_ROWS = {
    "unknown-key": ("TARGET_ACCURACY=0.9\nMAX_TWEEKS=3\n", ["MAX_TWEEKS", "unknown", ".env.example"]),
    "bad-number": ("MAX_TWEAKS=ten\n", ["MAX_TWEAKS", "ten", ("whole number", "number"), "e.g."]),
    "negative-cap": ("MAX_TWEAKS=-1\n", ["MAX_TWEAKS", "-1", "negative", ("use", "set", "e.g.")]),
    "target-zero": ("TARGET_ACCURACY=0\n", ["TARGET_ACCURACY", "(0, 1]", ("use", "e.g.")]),
    "target-above-one": ("TARGET_ACCURACY=1.5\n", ["TARGET_ACCURACY", "1.5", "(0, 1]", ("use", "e.g.")]),
    "timeout-zero": ("NOTIFY_TIMEOUT=0\n", ["NOTIFY_TIMEOUT", "positive", "e.g."]),
}


@pytest.mark.parametrize("row", ENV_ROWS)
def test_a_bad_env_file_is_one_line_and_leaves_no_stale_exit_code(fresh, tmp_path, row):
    text, words = ENV_ROWS[row]
    env_file = tmp_path / "user.env"
    env_file.write_text(text)
    assert (fresh.state / "exit_code").read_text().strip() == "0"   # the earlier make fetch
    before = snapshot(fresh)
    result = make(fresh, "pipeline", TWEAKOPS_ENV_FILE=str(env_file))
    line = assert_refused(fresh, result, before, *words)
    if row == "unknown-key":
        assert str(env_file) in line, line   # which file holds the typo


def pwned(p: Project, marker: str) -> list[Path]:
    places = [ROOT, p.root, p.checkout, p.state, Path.cwd(), Path("/tmp")]
    return [place / marker for place in places if (place / marker).exists()] + list(p.root.rglob(marker))


@pytest.mark.parametrize("form", ["dollar-paren", "backticks"])
def test_a_shell_looking_env_value_is_read_literally_through_make(fresh, tmp_path, form):
    """MODEL_BRANCH=$(touch X) is a branch of that literal name (not found: one line
    quoting it as it was written), and nothing ran it."""
    marker = f"PWNED-{form}-{os.getpid()}"
    value = f"$(touch {marker})" if form == "dollar-paren" else f"`touch {marker}`"
    env_file = tmp_path / "user.env"
    env_file.write_text(f"MODEL_BRANCH={value}\n")
    before = snapshot(fresh)
    result = make(fresh, "pipeline", drop=("MODEL_BRANCH",), TWEAKOPS_ENV_FILE=str(env_file))
    assert not pwned(fresh, marker), "a .env value was run by a shell"
    assert result.code == state.EXIT_BAD_INPUT, result.stderr[-3000:]
    the_error(result, value, "MODEL_BRANCH", "not found")
    assert_no_own_traceback(fresh, result)
    assert_recorded(result)
    assert_kept(fresh, before)


@pytest.mark.parametrize("form", ["dollar-paren", "backticks"])
def test_a_shell_looking_author_name_lands_in_the_commit_as_written(tmp_path, form):
    """GIT_AUTHOR_NAME=`touch X` from .env, through make publish: the commit's author is
    that text, and no file X appears."""
    p = loop_project(tmp_path)
    marker = f"PWNED-author-{form}-{os.getpid()}"
    value = f"$(touch {marker})" if form == "dollar-paren" else f"`touch {marker}`"
    env_file = tmp_path / "user.env"
    env_file.write_text(f"GIT_AUTHOR_NAME={value}\nGIT_AUTHOR_EMAIL=bot@example.org\n")
    result = make(p, "publish", drop=("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                                      "GIT_COMMITTER_EMAIL"), TWEAKOPS_ENV_FILE=str(env_file))
    assert not pwned(p, marker), "a .env value was run by a shell"
    assert result.code == 0, result.stderr[-3000:]
    assert result.errors() == []
    author = p.git("log", "-1", "--format=%an <%ae>", "main", cwd=p.remote).stdout.strip()
    assert author == f"{value} <bot@example.org>"


@pytest.mark.slow
def test_an_env_file_with_crlf_line_ends_works_and_its_values_have_no_carriage_return(fresh, tmp_path):
    env_file = tmp_path / "windows.env"
    env_file.write_bytes(f"# saved on Windows\r\nMODEL_REPO={fresh.remote}\r\nMODEL_BRANCH=main\r\n"
                         f"TARGET_ACCURACY=0.4\r\nMAX_TWEAKS=0\r\n".encode())
    result = make(fresh, "pipeline", drop=("MODEL_REPO", "MODEL_BRANCH"), TWEAKOPS_ENV_FILE=str(env_file))
    assert result.code == state.EXIT_OK, result.stderr[-3000:]   # 0.4 read as a number: the target is met
    assert result.errors() == []
    run = fresh.run_env()
    assert run["MODEL_BRANCH"] == "main" and run["MODEL_REPO"] == str(fresh.remote)
    assert "\r" not in (fresh.state / "run.env").read_text()


# ---------------------------------------------------------------------------
# the model repository: unreachable, no such branch, a push refused, a file outside it

def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/models/x.git"


REMOTE_ROWS = {
    "path-does-not-exist": (lambda p: {"MODEL_REPO": str(p.root / "no-such-repo.git")},
                            ["MODEL_REPO", "no-such-repo.git", ("does not exist", "not found"), "set MODEL_REPO"]),
    "closed-port": (lambda p: {"MODEL_REPO": closed_port_url()},
                    ["MODEL_REPO", "127.0.0.1", ("check", "set MODEL_REPO")]),
    "branch-missing": (lambda p: {"MODEL_BRANCH": "nope"}, ["nope", "not found", "MODEL_BRANCH"]),
}


@pytest.mark.parametrize("row", REMOTE_ROWS)
def test_an_unreachable_remote_or_a_missing_branch_is_one_line(fresh, row):
    env, words = REMOTE_ROWS[row]
    before = snapshot(fresh)
    result = make(fresh, "pipeline", **env(fresh))
    assert_refused(fresh, result, before, *words)


REFUSAL = "protected branch: changes need a review"


def refuse_pushes(p: Project) -> None:
    hook = p.remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho '{REFUSAL}' >&2\nexit 1\n")
    hook.chmod(0o755)


def test_a_refused_push_is_exit_6_keeps_the_best_and_is_not_told_as_a_success(tmp_path):
    p = loop_project(tmp_path)
    refuse_pushes(p)
    before = snapshot(p)
    result = make(p, "publish")
    assert result.code == state.EXIT_PUBLISH_FAILED, result.stderr[-3000:]
    the_error(result, ("refused", "rejected"), ("declined", REFUSAL), ("make publish", "run"))
    assert_no_own_traceback(p, result)
    assert_recorded(result)
    assert_state_parses(p)
    assert_kept(p, before)
    assert remote_refs(p) == before["refs"]
    run = p.run_env()
    assert run.get("PUBLISH_ERROR") and re.search("refused|rejected|declined", run["PUBLISH_ERROR"]), run
    assert not run.get("PUBLISHED_COMMIT")
    told = make(p, "notify")
    assert told.code == 0, told.stderr[-3000:]
    text = assert_notified(p, "publish", ("refused", "rejected", "not published", "failed"))
    assert "success" not in text.splitlines()[0].lower()


@pytest.mark.slow
def test_a_refused_push_in_make_pipeline_is_exit_6_and_the_message_says_so(fresh):
    """The loop finds a better source, the remote's hook refuses it: exit 6, the best
    kept in STATE_DIR/best/, PUBLISH_ERROR said, and the message tells it as it is."""
    refuse_pushes(fresh)
    (fresh.state / "best").joinpath("model.py").unlink()
    before = snapshot(fresh)
    result = make(fresh, "pipeline", TARGET_ACCURACY="0.6", MAX_TWEAKS="3")
    assert result.code == state.EXIT_PUBLISH_FAILED, result.stderr[-4000:]
    the_error(result, ("refused", "rejected"), ("declined", REFUSAL))
    assert_no_own_traceback(fresh, result)
    assert_recorded(result)
    assert_state_parses(fresh)
    assert remote_refs(fresh) == before["refs"]
    run = fresh.run_env()
    assert run.get("PUBLISH_ERROR"), run
    best = fresh.state / "best" / "model.py"
    assert best.exists() and best.read_text() != TINY and float(run["BEST_ACCURACY"]) >= 0.6
    text = assert_notified(fresh, ("refused", "rejected", "not published", "publish failed"))
    assert "success" not in text.splitlines()[0].lower()


def outside_model(tmp_path: Path) -> Path:
    """A valid model outside the checkout: ../models/cnn/model.py seen from it."""
    path = tmp_path / "models" / "cnn" / "model.py"
    path.parent.mkdir(parents=True)
    path.write_text(TINY)
    return path


@pytest.mark.parametrize("row", ["dot-dot", "absolute", "etc-passwd"])
def test_a_model_file_outside_the_checkout_is_refused_and_never_touched(fresh, tmp_path, row):
    outside = outside_model(tmp_path)
    value = {"dot-dot": "../models/cnn/model.py", "absolute": str(outside), "etc-passwd": "/etc/passwd"}[row]
    target = Path("/etc/passwd") if row == "etc-passwd" else outside
    kept = (target.read_bytes(), target.stat().st_mtime_ns)
    before = snapshot(fresh)
    result = make(fresh, "pipeline", MODEL_FILE=value, MAX_TWEAKS="1", TARGET_ACCURACY="0.99")
    assert (target.read_bytes(), target.stat().st_mtime_ns) == kept, f"{target} was modified"
    assert_refused(fresh, result, before, "MODEL_FILE", ("outside", "inside", "checkout"))


# ---------------------------------------------------------------------------
# notify: the message is kept when SMTP or the webhook fails

SECRET_PATH = "/services/T0SECRET/B0SECRET/x0x0SeCrEt"


class Refusing:
    """An SMTP handler whose authenticator refuses every login."""

    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        return AuthResult(success=False, handled=False)


@pytest.fixture
def servers():
    """Start real servers on 127.0.0.1; stopped after the test."""
    stops = []

    def smtp_refusing_logins() -> int:
        from aiosmtpd.controller import Controller

        handler = Refusing()
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), authenticator=handler.authenticate,
                                auth_require_tls=False)
        controller.start()
        stops.append(controller.stop)
        return controller.port

    def http(status: int = 200, delay: float = 0.0) -> tuple[int, list[str]]:
        paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                paths.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"server error")

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stops.append(server.shutdown)
        return server.server_address[1], paths

    yield type("Servers", (), {"smtp_refusing_logins": staticmethod(smtp_refusing_logins),
                               "http": staticmethod(http)})
    for stop in stops:
        stop()


def notify_env(servers, row: str) -> tuple[dict, list]:
    mail = {"MAIL_FROM": "tweakops@example.org", "MAIL_TO": "dev@example.org"}
    if row == "smtp-down":
        return {**mail, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port())}, [
            "SMTP", "127.0.0.1", ("SMTP_HOST", "SMTP_PORT")]
    if row == "smtp-auth-refused":
        port = servers.smtp_refusing_logins()
        return {**mail, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_USER": "alice",
                "SMTP_PASSWORD": "hunter2-never-shown"}, ["SMTP", ("refused", "rejected"), "SMTP_PASSWORD"]
    status, delay = (500, 0.0) if row == "webhook-500" else (200, 20.0)
    port, _ = servers.http(status, delay)
    # NOTIFY_TIMEOUT=2: three tries of 2 s, not of the default 15 s, against a 20 s delay
    return {"NOTIFY_WEBHOOK_URL": f"http://127.0.0.1:{port}{SECRET_PATH}", "NOTIFY_TIMEOUT": "2"}, [
        "webhook", ("500",) if row == "webhook-500" else ("timed out", "timeout", "no answer", "Timeout"),
        "NOTIFY_WEBHOOK_URL"]


@pytest.mark.parametrize("row", ["smtp-down", "smtp-auth-refused", "webhook-500",
                                 pytest.param("webhook-timeout", marks=pytest.mark.slow)])
def test_a_failed_notification_is_exit_7_and_the_message_is_kept(tmp_path, servers, row):
    p = loop_project(tmp_path)
    env, words = notify_env(servers, row)
    before = snapshot(p)
    result = make(p, "notify", **env)
    assert result.code == state.EXIT_NOTIFY_FAILED, result.stderr[-3000:]
    the_error(result, *words)
    assert "hunter2-never-shown" not in result.output and "T0SECRET" not in result.output
    assert_no_own_traceback(p, result)
    assert_recorded(result)
    assert_state_parses(p)
    assert_kept(p, before)
    kept = list((p.state / "notifications").glob("*.eml"))
    assert kept and list((p.state / "notifications").glob("*.md")), "the message was not kept"
    assert "T0SECRET" not in "".join(f.read_text(errors="replace") for f in (p.state / "notifications").iterdir())


# ---------------------------------------------------------------------------
# the state files: torn by a crash, locked by a dead or a live run

def test_a_torn_run_env_is_one_line_naming_the_file_and_the_fix(fresh):
    run_env = fresh.state / "run.env"
    with open(run_env, "a") as f:
        f.write("GARBAGE LINE FROM A CRASH\x00\x00\n")
    torn = run_env.read_bytes()
    before = snapshot(fresh)
    result = make(fresh, "detect")
    assert result.code == state.EXIT_BAD_INPUT, result.stderr[-3000:]
    the_error(result, "run.env", ("delete", "remove", "make fetch"))
    assert_no_own_traceback(fresh, result)
    assert_recorded(result)
    assert run_env.read_bytes() == torn, "the torn run.env was changed further"
    assert_kept(fresh, before)


@pytest.mark.slow
def test_a_torn_last_history_line_is_reported_once_kept_aside_and_its_attempt_number_not_reused(fresh):
    earlier_run(fresh, torn=True)   # attempt 3 trained, then its history line was cut mid-write
    torn_line = (fresh.state / "history.jsonl").read_text().splitlines()[-1]
    logs = {n: (fresh.state / "logs" / f"attempt-{n}.log").read_bytes() for n in (1, 2, 3)}
    metrics = {n: (fresh.state / "metrics" / f"attempt-{n}.json").read_bytes() for n in (1, 2, 3)}
    result = make(fresh, "pipeline", MAX_TWEAKS="0")
    assert result.code == state.EXIT_BELOW_TARGET, result.stderr[-3000:]
    assert result.errors() == []
    assert sum("torn" in line for line in result.said(result.output).splitlines()) == 1, result.stderr[-3000:]
    assert_no_own_traceback(fresh, result)
    assert_recorded(result)
    assert_state_parses(fresh, torn_kept_aside=True)
    assert (fresh.state / "history.jsonl.torn").read_text().splitlines() == [torn_line]
    history = fresh.history()
    assert [r["attempt"] for r in history[:2]] == [1, 2]
    new = history[2:]
    assert len(new) == 1 and new[0]["attempt"] > 3, new   # 3 is the torn attempt's: its log is on disk
    for n in (1, 2, 3):
        assert (fresh.state / "logs" / f"attempt-{n}.log").read_bytes() == logs[n], f"logs/attempt-{n}.log"
        assert (fresh.state / "metrics" / f"attempt-{n}.json").read_bytes() == metrics[n], f"metrics/attempt-{n}.json"

    again = make(fresh, "pipeline", MAX_TWEAKS="0")
    assert again.code == state.EXIT_BELOW_TARGET, again.stderr[-3000:]
    assert "torn" not in again.said(again.output)
    assert (fresh.state / "history.jsonl.torn").read_text().splitlines() == [torn_line]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_a_lock_left_by_a_dead_process_does_not_stop_the_run(fresh):
    pid = dead_pid()
    owner = json.dumps({"pid": pid, "start": "1", "since": "2026-01-01T00:00:00+00:00", "what": "pipeline.py"})
    for name in ("lock", "run.lock", "fetch.lock"):
        (fresh.state / name).write_text(owner + "\n")
    result = make(fresh, "pipeline", MAX_TWEAKS="0")
    assert result.code == state.EXIT_BELOW_TARGET, result.stderr[-3000:]
    assert result.errors() == []
    assert len(fresh.history()) == 3




def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent and int(stat.parent.name) not in found:
                found.add(int(stat.parent.name))
                todo.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_a_live_run_makes_a_second_one_exit_10_naming_it_and_wait_queues_behind_it(fresh):
    pushed(fresh, {"model.py": fixture("sleepy_sklearn.py")})
    first = subprocess.Popen(["make", "-s", "pipeline"], cwd=ROOT, env={**fresh.env, "MAX_TWEAKS": "0"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: fresh.run_env().get("STATUS") == "running")
        second = make(fresh, "pipeline", MAX_TWEAKS="0")
        assert first.poll() is None, "the first run ended before the second was tried"
        assert second.code == state.EXIT_BUSY, second.stderr[-3000:]
        line = the_error(second, "pid")
        named = int(re.search(r"pid (\d+)", line).group(1))
        assert named in descendants(first.pid), f"{line} does not name the running pipeline"
        assert second.recorded in (None, "10")

        started = time.time()
        queued = subprocess.run([PYTHON, str(SCRIPTS / "pipeline.py"), "--wait"], cwd=ROOT,
                                env={**fresh.env, "MAX_TWEAKS": "0"}, capture_output=True, text=True, timeout=300)
        first_out, first_err = first.communicate(timeout=120)
        waited = outcome(fresh, queued.returncode, queued.stdout, queued.stderr, time.time() - started)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGTERM)
            first.wait(timeout=30)
    assert outcome(fresh, first.returncode, first_out, first_err).code == state.EXIT_BELOW_TARGET, first_err[-3000:]
    assert waited.code == state.EXIT_BELOW_TARGET, waited.stderr[-3000:]
    assert waited.errors() == []
    assert "wait" in waited.stderr.lower()
    assert_state_parses(fresh)
    assert [r["attempt"] for r in fresh.history()] == [1, 2, 3, 4]
