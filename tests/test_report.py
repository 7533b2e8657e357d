"""report.py, logs.py and status.py on the history of a real short run."""

import base64
import io
import re
import shutil
import subprocess
import tarfile
from html.parser import HTMLParser

import pytest
from PIL import Image

pytestmark = pytest.mark.slow


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


def test_report_page_shows_every_attempt_and_embeds_the_plot(ran):
    result = ran.script("report", TARGET_ACCURACY="0.99")
    assert result.returncode == 0, result.stderr
    index = ran.state / "report" / "index.html"
    assert result.stdout.strip() == str(index)
    page = Collect()
    page.feed(index.read_text())
    attempts = [r for r in page.rows if r and r[0].isdigit()]
    assert [r[0] for r in attempts] == ["1", "2"]
    assert attempts[0][1] == "baseline" and attempts[0][5] == "baseline"
    assert attempts[1][5] in ("kept", "reverted", "stopped-early")
    [src] = page.images
    png = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (900, 400)
    assert Image.open(ran.state / "report" / "accuracy.png").size == (900, 400)
    assert "../logs/attempt-1.log" in page.links and (ran.state / "logs" / "attempt-1.log").exists()
    assert "http://" not in index.read_text() and "https://" not in index.read_text()  # self-contained
    summary = (ran.state / "report" / "summary.md").read_text()
    assert re.search(r"^\| 1 \| baseline \| 0\.\d{4} \|", summary, re.M)
    assert "**verdict**: below target" in summary


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


def test_status_shows_the_current_run(ran):
    result = ran.script("status")
    assert result.returncode == 0, result.stderr
    for row in ("attempt", "status", "epoch reached", "accuracy so far", "best", "restarts"):
        assert re.search(rf"^{row}\s", result.stdout, re.M), row


def test_status_without_a_run_says_so(project):
    result = project.script("status")
    assert result.returncode == 2
    assert "no run yet" in result.stderr
