"""report.py, logs.py and status.py: on a handcrafted STATE_DIR (fast) and on the history
of a real short run (slow)."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import report  # noqa: E402
import state  # noqa: E402

DIFF = "--- a/model.py\n+++ b/model.py\n@@ -1,2 +1,2 @@\n-EPOCHS = 1\n+EPOCHS = 3\n"
ATTEMPTS = [  # attempt, tweak, accuracy, outcome, restarts
    (1, "baseline", 0.61, "baseline", 0),
    (2, "epochs 1→3", 0.82, "kept", 1),
    (3, "filters x2", 0.79, "reverted", 0),
    (4, "dropout 0.2", None, "failed", 0),
]


class Handmade:
    """A STATE_DIR written by hand, as the stages leave it: run.env, history, metrics, logs, best/."""

    def __init__(self, root: Path):
        self.state = root / "state"
        for sub in ("logs", "metrics", "best"):
            (self.state / sub).mkdir(parents=True)
        self.env = {**{k: v for k, v in os.environ.items() if k not in state.DEFAULTS},  # no machine settings
                    "TWEAKOPS_ENV_FILE": os.devnull, "STATE_DIR": str(self.state), "NO_COLOR": "1",
                    "TARGET_ACCURACY": "0.9"}
        run = {"RUN_ID": "run-7", "COMMIT": "a" * 40, "PUBLISHED_COMMIT": "b" * 40, "MODEL_FILE": "model.py",
               "MODEL_TYPE": "cnn", "BEST_ACCURACY": "0.82", "BEST_ATTEMPT": "2", "STATUS": "done",
               "ATTEMPT": "4", "RUNNER": "local", "METRICS": str(self.state / "metrics" / "attempt-4.json")}
        (self.state / "run.env").write_text("".join(f"{k}={v}\n" for k, v in run.items()))
        with open(self.state / "history.jsonl", "w") as history:
            history.write(json.dumps({"attempt": 1, "run": "older-run", "tweak": "old", "accuracy": 0.1,
                                      "outcome": "baseline"}) + "\n")  # another run: not in the report
            for n, tweak, acc, outcome, restarts in ATTEMPTS:
                history.write(json.dumps({
                    "attempt": n, "run": "run-7", "tweak": tweak, "accuracy": acc, "duration": 10.0 * n,
                    "outcome": outcome, "restarts": restarts, "diff": DIFF if n > 1 else "",
                    "log": f"logs/attempt-{n}.log", "metrics": f"metrics/attempt-{n}.json",
                    "started_at": f"2026-11-22T15:0{n}:00+00:00"}) + "\n")
                (self.state / "logs" / f"attempt-{n}.log").write_text(f"attempt {n} log\n")
                epochs = [{"epoch": e, "val_accuracy": (acc or 0.3) * e / 3} for e in (1, 2, 3)]
                if outcome == "failed":
                    epochs = epochs[:1]
                (self.state / "metrics" / f"attempt-{n}.json").write_text(json.dumps({"epochs": epochs, "accuracy": acc}))
        (self.state / "best" / "model.py").write_text("EPOCHS = 3\n")

    def script(self, name, *args, **env):
        return subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *args], cwd=ROOT,
                              env={**self.env, **env}, capture_output=True, text=True, timeout=300)


@pytest.fixture
def handmade(tmp_path):
    return Handmade(tmp_path)


@pytest.fixture(scope="module")
def ran(tmp_path_factory, digits):
    from conftest import Project

    project = Project(tmp_path_factory.mktemp("report"), digits)
    result = project.script("pipeline", MAX_TWEAKS="1", TARGET_ACCURACY="0.99")
    assert result.returncode == 3, result.stderr[-2000:]
    return project


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.images, self.links, self._row = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self._row = []
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._row)
            self._row = None


# ---------------------------------------------------------------------------
# fast: a handcrafted STATE_DIR with a baseline and kept, reverted and failed attempts

def test_report_of_a_handmade_run_has_every_attempt_and_the_plot(handmade):
    result = handmade.script("report")
    assert result.returncode == 0, result.stderr
    out = handmade.state / "report"
    assert result.stdout == f"{out / 'index.html'}\n"  # the only line on stdout: Jenkins archives it
    page = Collect()
    page.feed((out / "index.html").read_text())
    attempts = [r for r in page.rows if r and r[0].isdigit()]
    assert [(r[0], r[1], r[5]) for r in attempts] == [(str(n), t, o) for n, t, _, o, _ in ATTEMPTS]
    assert [r[3] for r in attempts] == ["—", "+0.2100", "-0.0300", "—"]  # Δ vs the best so far
    assert [r[6] for r in attempts] == ["0", "1", "0", "0"]  # restarts
    head = {r[0]: r[1] for r in page.rows if r and len(r) == 2}
    assert head["commit"] == "aaaaaaaaaaaa → bbbbbbbbbbbb"
    assert head["verdict"] == "below target" and head["attempts"] == "4"
    assert head["wall time"].startswith("220s")  # 15:01 → 15:04 plus the last attempt's 40s
    assert [f"../logs/attempt-{n}.log" for n in (1, 2, 3, 4)] == page.links
    [src] = page.images
    png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (900, 400)
    assert len(png.convert("RGB").getcolors(maxcolors=1 << 20)) > 10
    assert Image.open(out / "accuracy.png").size == (900, 400)
    text = (out / "index.html").read_text()
    assert '<span class="add">+EPOCHS = 3</span>' in text and '<span class="del">-EPOCHS = 1</span>' in text
    assert "older-run" not in text and "http" not in text


def test_summary_markdown_has_the_headline_the_table_and_the_kept_change(handmade):
    assert handmade.script("report").returncode == 0
    summary = (handmade.state / "report" / "summary.md").read_text()
    assert "- **best accuracy**: 0.8200 (attempt 2)" in summary
    assert "| attempt | tweak | accuracy | Δ vs best | time | outcome | restarts |" in summary
    assert "| 2 | epochs 1→3 | 0.8200 | +0.2100 | 20s | kept | 1 |" in summary
    assert "| 4 | dropout 0.2 | — | — | 40s | failed | 0 |" in summary
    assert "```diff\n--- a/model.py" in summary


def test_report_without_attempts_says_what_to_do(tmp_path):
    empty = Handmade(tmp_path)
    (empty.state / "history.jsonl").write_text("")
    result = empty.script("report")
    assert result.returncode == 2 and result.stdout == ""
    assert "nothing to report yet" in result.stderr


def test_attempt_line_is_plain_for_a_pipe_and_with_no_color(monkeypatch):
    record = {"tweak": "+conv block", "accuracy": 0.8741, "duration": 41.3, "outcome": "kept"}
    line = "attempt 3/10  +conv block  acc 0.874 (best 0.874, target 0.90)  41s  kept"
    assert report.attempt_line(record, 0.8741, 0.9, 3, 10) == line

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert report.attempt_line(record, 0.8741, 0.9, 3, 10, io.StringIO()) == line  # a pipe: Jenkins' console
    assert report.attempt_line(record, 0.8741, 0.9, 3, 10, Tty()) == line.replace("kept", "\033[1;32mkept\033[0m")
    monkeypatch.setenv("NO_COLOR", "1")
    assert report.attempt_line(record, 0.8741, 0.9, 3, 10, Tty()) == line


def test_logs_bundle_of_a_handmade_run_leaves_out_what_links_outside(handmade, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside STATE_DIR")
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (outside / "private.log").write_text("outside STATE_DIR")
    (handmade.state / "logs" / "escape.txt").symlink_to(secret)
    (handmade.state / "logs" / "escape-dir").symlink_to(outside)
    assert handmade.script("report").returncode == 0
    result = handmade.script("logs")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    archive = Path(line)
    assert archive.parent == handmade.state / "archives" and archive.name.startswith("tweakops-logs-")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"history.jsonl", "run.env", "logs/attempt-4.log", "report/index.html", "best/model.py"} <= names
        assert "logs/escape-dir/private.log" not in names
        for member in tar.getmembers():
            assert not member.name.startswith(("/", "..")) and not member.name.startswith("archives")
            if member.isfile():
                assert b"outside STATE_DIR" not in tar.extractfile(member).read()


def test_status_of_a_handmade_run_shows_attempt_epoch_accuracy_and_watchdog(handmade):
    (handmade.state / "logs" / "watchdog.log").write_text("".join(f"line {n}\n" for n in range(1, 9)) + "restarted attempt 2\n")
    result = handmade.script("status")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^attempt\s+4$", result.stdout, re.M)
    assert re.search(r"^status\s+done$", result.stdout, re.M)
    assert re.search(r"^epoch reached\s+1$", result.stdout, re.M)
    assert re.search(r"^best\s+0\.8200 \(attempt 2\)$", result.stdout, re.M)
    assert "restarted attempt 2" in result.stdout and "line 1\n" not in result.stdout


def test_status_without_a_run_directory_says_so(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPTS / "status.py")], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TWEAKOPS_ENV_FILE": os.devnull, "STATE_DIR": str(tmp_path / "none")})
    assert result.returncode == 2 and "no run yet" in result.stderr


def test_report_check_renders_the_page_in_chromium_and_it_is_not_blank(handmade):
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (Debian package chromium; make system-deps)")
    assert handmade.script("report").returncode == 0
    result = handmade.script("report", "--check")
    assert result.returncode == 0, result.stderr
    shot = Path(result.stdout.strip())
    assert shot == handmade.state / "report" / "screenshot.png"
    image = Image.open(shot)
    assert image.size[0] > 0 and len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_report_check_without_a_report_says_to_make_one(tmp_path):
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (Debian package chromium; make system-deps)")
    result = Handmade(tmp_path).script("report", "--check")
    assert result.returncode == 2 and "run make report first" in result.stderr


# ---------------------------------------------------------------------------
# slow: the report of a real short pipeline

@pytest.mark.slow
def test_report_page_shows_every_attempt_and_embeds_the_plot(ran):
    result = ran.script("report", TARGET_ACCURACY="0.99")
    assert result.returncode == 0, result.stderr
    index = ran.state / "report" / "index.html"
    assert result.stdout.strip() == str(index)
    page = Collect()
    page.feed(index.read_text())
    attempts = [r for r in page.rows if r and r[0].isdigit()]
    assert [r[0] for r in attempts][:2] == ["1", "2"]
    assert attempts[0][1] == "baseline" and attempts[0][5] == "baseline"
    assert attempts[1][5] in ("kept", "reverted", "stopped-early")
    assert attempts[1][7].startswith(ran.history()[1]["why"])        # why the change was made
    if len(attempts) == 3:   # a warm-started best, retrained from scratch before publishing
        assert attempts[2][5] == "confirmation" and attempts[2][7] == "from-scratch retraining of attempt 2"
    [src] = page.images
    png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (900, 400)
    assert Image.open(ran.state / "report" / "accuracy.png").size == (900, 400)
    assert "../logs/attempt-1.log" in page.links and (ran.state / "logs" / "attempt-1.log").exists()
    assert "http://" not in index.read_text() and "https://" not in index.read_text()  # self-contained
    summary = (ran.state / "report" / "summary.md").read_text()
    assert re.search(r"^\| 1 \| baseline \| 0\.\d{4} \|", summary, re.M)
    assert "**verdict**: below target" in summary


@pytest.mark.slow
def test_report_renders_in_headless_chromium_and_is_not_blank(ran, tmp_path):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("chromium is not installed (Debian package chromium)")
    assert ran.script("report").returncode == 0
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={shot}",
                    f"file://{ran.state / 'report' / 'index.html'}"], capture_output=True, timeout=120)
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50


@pytest.mark.slow
def test_logs_bundle_holds_the_state_and_nothing_from_outside(ran, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside STATE_DIR")
    (ran.state / "logs" / "escape.txt").symlink_to(secret)
    result = ran.script("logs")
    assert result.returncode == 0, result.stderr
    archive = result.stdout.strip()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert {"history.jsonl", "run.env", "logs/attempt-1.log", "report/index.html", "best/model.py"} <= set(names)
        link = tar.getmember("logs/escape.txt")
        assert link.issym()  # stored as a link, the outside file's content is not in the archive
        for member in tar.getmembers():
            if member.isfile():
                assert b"outside STATE_DIR" not in tar.extractfile(member).read()


@pytest.mark.slow
def test_status_shows_the_current_run(ran):
    result = ran.script("status")
    assert result.returncode == 0, result.stderr
    for row in ("attempt", "status", "epoch reached", "accuracy so far", "best", "restarts"):
        assert re.search(rf"^{row}\s", result.stdout, re.M), row


@pytest.mark.slow
def test_status_without_a_run_says_so(project):
    result = project.script("status")
    assert result.returncode == 2
    assert "no run yet" in result.stderr


def test_a_build_failed_tweak_is_listed_without_an_attempt_number(handmade):
    with open(handmade.state / "history.jsonl", "a") as history:
        history.write(json.dumps({"attempt": None, "run": "run-7", "tweak": "kernel 3→5", "rule": "kernel",
                                  "outcome": "build-failed", "accuracy": None,
                                  "reason": "does not build (exit 1): ValueError: negative size"}) + "\n")
    result = handmade.script("report")
    assert result.returncode == 0, result.stderr
    page = Collect()
    page.feed((handmade.state / "report" / "index.html").read_text())
    assert ["—", "kernel 3→5"] == [r[:2] for r in page.rows if "build-failed" in r][0]
    head = {r[0]: r[1] for r in page.rows if r and len(r) == 2}
    assert head["attempts"] == "4"  # it trained nothing: not an attempt
    assert head["wall time"].startswith("220s")
    assert "does not build (exit 1): ValueError: negative size" in (handmade.state / "report" / "index.html").read_text()


# ---------------------------------------------------------------------------
# the verdict and the message: what notify.py sends is composed here

def cfg_for(tmp_path, **keys):
    return {**state.DEFAULTS, "STATE_DIR": str(tmp_path / "state"), "TARGET_ACCURACY": 0.80, **keys}


RUN = {"COMMIT": "c" * 40, "MODEL_BRANCH": "main", "MODEL_FILE": "m.py"}
BASE = {"attempt": 1, "tweak": "baseline", "accuracy": 0.61, "outcome": "baseline"}
KEPT = {"attempt": 2, "tweak": "epochs 1→3", "accuracy": 0.85, "outcome": "kept"}


@pytest.mark.parametrize("run, records, kind, subject, says", [
    ({"BEST_ACCURACY": "0.85", "BEST_ATTEMPT": "2", "PUBLISHED_COMMIT": "d" * 40, "PUBLISHED_BRANCH": "main"},
     [BASE, KEPT], "target met", "main @ cccccccccccc: success, m.py reached 0.8500 (target 0.80)",
     "Published as dddddddddddd on main."),
    ({"BEST_ACCURACY": "0.80", "BEST_ATTEMPT": "1"}, [{**BASE, "accuracy": 0.80}], "target met",
     "main @ cccccccccccc: success, m.py reached 0.8000 (target 0.80)", "Nothing to publish: the pushed source is the best one."),
    ({"BEST_ACCURACY": "0.61", "BEST_ATTEMPT": "1"}, [BASE], "below target",
     "main @ cccccccccccc: m.py best 0.6100, below target 0.80", "What to do: raise MAX_TWEAKS (now 10)"),
    ({"BEST_ACCURACY": "0.85", "BEST_ATTEMPT": "2", "PUBLISH_ERROR": "push refused: main moved and model.py changed"},
     [BASE, KEPT], "target met", "main @ cccccccccccc: m.py reached 0.8500 (target 0.80, met), NOT published",
     "The better source was NOT published: push refused: main moved and model.py changed."),
    ({"BEST_ACCURACY": "0.85", "BEST_ATTEMPT": "2", "FAILED_STAGE": "publish", "FAILURE": "push refused.",
      "PUBLISH_ERROR": "push refused."}, [BASE, KEPT], "target met",
     "main @ cccccccccccc: m.py reached 0.8500 (target 0.80, met), NOT published",
     "The better source was NOT published: push refused. It is kept in"),
    ({"STATUS": "failed"}, [{"attempt": 1, "tweak": "baseline", "accuracy": None, "outcome": "failed", "exit_code": 1}],
     "failed", "main @ cccccccccccc: m.py failed (attempt 1, exit 1)", "nothing was tweaked and nothing was published"),
    ({"STATUS": "oom", "ATTEMPT": "1", "EXIT_CODE": "137"}, [], "failed",
     "main @ cccccccccccc: m.py failed (attempt 1, exit 137)", "raise TRAIN_MEMORY (now 4g)"),
    ({"FAILED_STAGE": "detect", "FAILURE": "m.py line 2: SyntaxError: invalid syntax"}, [], "stage failed",
     "main @ cccccccccccc: detect failed", "    m.py line 2: SyntaxError: invalid syntax"),
    ({"FAILED_STAGE": "fetch", "FAILURE": "branch 'main' not found", "STATUS": "running"}, [], "stage failed",
     "main: fetch failed",
     "What to do: check MODEL_REPO"),
    ({"STATUS": "crashed", "ATTEMPT": "3", "FAILED_STAGE": "train",
      "FAILURE": "attempt 3 was killed; make watchdog restarts it from its checkpoint"}, [BASE, KEPT], "in progress",
     "main @ cccccccccccc: attempt 3 of m.py crashed, not finished", "The watchdog (make watchdog; Jenkins job 6) restarts it"),
    ({"STATUS": "running", "ATTEMPT": "2", "BEST_ACCURACY": "0.61"}, [BASE], "in progress",
     "main @ cccccccccccc: attempt 2 of m.py running, not finished", "Attempt 2 of m.py on main @ cccccccccccc is running"),
    ({"STATUS": "detected"}, [], "no result", "main @ cccccccccccc: no result yet (status detected)", "make status"),
])
def test_the_verdict_tells_what_happened_and_what_to_do(tmp_path, run, records, kind, subject, says):
    v = report.verdict(cfg_for(tmp_path), {**RUN, **run}, records)
    assert (v.kind, v.subject) == (kind, subject)
    assert any(line.startswith(says) or says in line for line in v.lines), v.lines
    if kind != "below target":
        assert not any("below" in line for line in v.lines)


def test_the_report_of_a_run_whose_only_attempt_failed_says_failed_with_the_line(tmp_path):
    made = Handmade(tmp_path)
    (made.state / "history.jsonl").write_text(json.dumps({
        "attempt": 1, "run": "run-7", "tweak": "baseline", "accuracy": None, "outcome": "failed", "exit_code": 1,
        "log": "logs/attempt-1.log", "metrics": "metrics/attempt-1.json"}) + "\n")
    (made.state / "logs" / "attempt-1.log").write_text("Epoch 1/3\nTraceback (most recent call last):\n"
                                                       "NameError: name 'layers' is not defined\n")
    (made.state / "run.env").write_text("RUN_ID=run-7\nCOMMIT=" + "a" * 40 + "\nMODEL_FILE=model.py\nSTATUS=failed\n")
    result = made.script("report")
    assert result.returncode == 0, result.stderr
    summary = (made.state / "report" / "summary.md").read_text()
    assert "- **verdict**: failed (exit 1): NameError: name 'layers' is not defined" in summary
    assert "below target" not in summary


def test_message_writes_a_missing_report_and_carries_its_summary_and_plot(handmade):
    cfg = state.config(environ=handmade.env)
    assert not (handmade.state / "report").exists()
    m = report.message(cfg, note="restarted twice by the watchdog")
    summary = (handmade.state / "report" / "summary.md").read_text()
    assert m.kind == "below target" and m.subject == "main @ aaaaaaaaaaaa: model.py best 0.8200, below target 0.90"
    assert m.text.startswith("restarted twice by the watchdog\n\nmodel.py on main @ aaaaaaaaaaaa reached at best 0.8200 "
                             "(attempt 2), below the target 0.90, in 4 attempts.\n")
    assert m.text.endswith(summary) and "| 3 | filters x2 | 0.7900 | -0.0300 |" in summary
    assert m.attachments == [handmade.state / "report" / "accuracy.png"]
    assert Image.open(m.attachments[0]).size == (900, 400)
    assert "cid:accuracy.png" in m.html and "data:image" not in m.html and "../logs/" not in m.html
    assert "restarted twice by the watchdog" in m.html
