"""notify.py: a real SMTP server (aiosmtpd on 127.0.0.1) and a real HTTP server read back what they got."""

from __future__ import annotations

import email
import email.policy
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import notify
import state
from conftest import ROOT, Project
from test_publish import loop_project

PASSWORD = "pa55-w0rd-never-shown"


@pytest.fixture
def project(tmp_path) -> Project:
    """The state of a finished, published tweak loop (no training)."""
    p = loop_project(tmp_path)
    published = p.script("publish")
    assert published.returncode == 0, published.stderr
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """What the SMTP server accepted."""

    def __init__(self):
        self.envelopes, self.logins, self.tls = [], [], []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        self.tls.append(session.ssl is not None)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alice" and auth_data.password == PASSWORD.encode()
        self.logins.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)  # not handled: the server answers 535 itself

    def message(self, n: int = 0) -> email.message.EmailMessage:
        return email.message_from_bytes(self.envelopes[n].content, policy=email.policy.default)


@pytest.fixture
def smtp_server():
    """Start aiosmtpd on 127.0.0.1 with the given options; stopped after the test."""
    controllers = []

    def start(**options):
        inbox = Inbox()
        if options.pop("auth", False):
            options.update(authenticator=inbox.authenticate, auth_required=True)
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        controllers.append(controller)
        return inbox, controller.port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1 (the client trusts it through SSL_CERT_FILE)."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=digitalSignature,keyCertSign"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


def smtp_env(port: int, **extra) -> dict:
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "MAIL_FROM": "tweakops@example.org",
            "MAIL_TO": "dev@example.org, lead@example.org", **extra}


def parts(message) -> dict[str, str]:
    """The text parts by type (line ends as sent over SMTP made \\n again)."""
    return {part.get_content_type(): part.get_content().replace("\r\n", "\n")
            for part in message.walk() if part.get_content_maintype() == "text"}


def all_state_bytes(p: Project) -> bytes:
    return b"".join(f.read_bytes() for f in p.state.rglob("*") if f.is_file())


def subject_of(p: Project) -> str:
    """The run's subject: `<branch> @ <commit12>: …` after the prefix."""
    return f"[tweakops] main @ {p.run_env()['COMMIT'][:12]}: success, model.py reached 0.9312 (target 0.80)"


def read_md(result) -> str:
    return open(result.stdout.strip().replace(".eml", ".md")).read()


def test_notify_with_nothing_configured_writes_the_message_and_the_report_it_carries(project):
    assert not (project.state / "report").exists()   # under Jenkins job 5 runs before the logs job (report)
    result = project.script("notify")
    assert result.returncode == 0, result.stderr
    eml = project.state / "notifications" / result.stdout.strip().rsplit("/", 1)[-1]
    assert result.stdout.strip() == str(eml) and eml.exists()
    assert f"no SMTP_HOST or NOTIFY_WEBHOOK_URL configured: the message is in {eml}" in result.stderr
    assert "-success-model-py-" in eml.name
    md = eml.with_suffix(".md").read_text()
    run = project.run_env()
    assert md.startswith(f"# {subject_of(project)}\n")
    assert f"reached 0.9312 (attempt 3), meeting the target 0.80, in 4 attempts.\n" \
           f"Published as {run['PUBLISHED_COMMIT'][:12]} on main.\n" in md
    summary = (project.state / "report" / "summary.md").read_text()
    assert summary in md                                   # the report's summary is the body, as report.py wrote it
    assert "| 3 | epochs 1→3 | 0.9312 | +0.0912 |" in summary and "- **verdict**: target met" in summary
    assert "-FILTERS = 32  # conv filters\n-EPOCHS = 1\n+FILTERS = 64  # conv filters\n+EPOCHS = 3\n" in md  # the change published
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert set(parts(message)) == {"text/plain", "text/html"}
    [png] = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert png.get_content() == (project.state / "report" / "accuracy.png").read_bytes()
    assert Image.open(io.BytesIO(png.get_content())).size == (900, 400)   # report.py's real plot


def test_notify_mails_text_and_html_with_the_plot_inlined_to_every_recipient(project, smtp_server):
    inbox, port = smtp_server()
    result = project.script("notify", **smtp_env(port))
    assert result.returncode == 0, result.stderr
    assert f"sent: e-mail to dev@example.org, lead@example.org via 127.0.0.1:{port}" in result.stderr
    assert len(inbox.envelopes) == 1
    assert inbox.envelopes[0].rcpt_tos == ["dev@example.org", "lead@example.org"]
    assert inbox.envelopes[0].mail_from == "tweakops@example.org"
    message = inbox.message()
    assert message["Subject"] == subject_of(project)
    body = parts(message)
    assert "+EPOCHS = 3" in body["text/plain"]
    assert "<td>epochs 1→3</td>" in body["text/html"] and "<td>0.9312</td>" in body["text/html"]
    assert 'src="cid:accuracy.png"' in body["text/html"] and "../logs/" not in body["text/html"]
    [png] = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert png["Content-ID"] == "<accuracy.png>" and png.get_content_disposition() == "inline"
    assert png.get_content() == (project.state / "report" / "accuracy.png").read_bytes()
    assert list((project.state / "notifications").glob("*.eml"))  # the copy is kept too


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_notify_logs_in_with_auth(project, smtp_server, mechanism):
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    # plain-text AUTH on 127.0.0.1 only: aiosmtpd allows it without TLS when told so
    inbox, port = smtp_server(auth=True, auth_require_tls=False, auth_exclude_mechanism=[other])
    result = project.script("notify", **smtp_env(port, SMTP_USER="alice", SMTP_PASSWORD=PASSWORD))
    assert result.returncode == 0, result.stderr
    assert inbox.logins == [(mechanism, True)]
    assert len(inbox.envelopes) == 1
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("mode", ["STARTTLS", "SSL"])
def test_notify_speaks_tls_and_checks_the_certificate(project, smtp_server, certificate, mode):
    cert, context = certificate
    if mode == "STARTTLS":
        inbox, port = smtp_server(auth=True, tls_context=context, require_starttls=True)
        env = smtp_env(port, SMTP_STARTTLS="1", SMTP_USER="alice", SMTP_PASSWORD=PASSWORD)
    else:
        inbox, port = smtp_server(ssl_context=context)
        env = smtp_env(port, SMTP_SSL="1")
    untrusted = project.script("notify", **env)
    assert untrusted.returncode == state.EXIT_NOTIFY_FAILED
    assert f"TLS with SMTP server 127.0.0.1:{port} failed" in untrusted.stderr
    trusted = project.script("notify", **env, SSL_CERT_FILE=str(cert))
    assert trusted.returncode == 0, trusted.stderr
    assert len(inbox.envelopes) == 1
    if mode == "STARTTLS":
        assert inbox.tls == [True]   # SSL: the untrusted certificate refused above shows TLS was spoken


def test_notify_uses_a_fresh_report_as_it_is_and_rewrites_a_stale_one(project):
    report_dir = project.state / "report"
    report_dir.mkdir()
    for name in ("summary.md", "index.html"):
        (report_dir / name).write_text(f"stand-in {name}\n")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64   # stands in for report.py's plot: a fresh report is not redrawn
    (report_dir / "accuracy.png").write_bytes(png)
    first = project.script("notify")
    assert first.returncode == 0, first.stderr
    assert (report_dir / "summary.md").read_text() == "stand-in summary.md\n"
    sent = email.message_from_bytes(open(first.stdout.strip(), "rb").read(), policy=email.policy.default)
    assert [p.get_content() for p in sent.walk() if p.get_content_type() == "image/png"] == [png]

    with open(project.state / "history.jsonl", "a") as history:    # a later attempt: the report is stale now
        history.write(json.dumps({"attempt": 5, "run": project.run_env()["RUN_ID"], "tweak": "dropout 0.25",
                                  "accuracy": 0.91, "outcome": "reverted", "why": "overfit: val_loss rises"}) + "\n")
    past = os.stat(project.state / "history.jsonl").st_mtime - 10
    for name in ("summary.md", "index.html", "accuracy.png"):
        os.utime(report_dir / name, (past, past))
    second = project.script("notify")
    assert second.returncode == 0, second.stderr
    summary = (report_dir / "summary.md").read_text()
    assert "| 5 | dropout 0.25 | 0.9100 | -0.0212 |" in summary and "overfit: val_loss rises" in summary
    assert summary in read_md(second)
    assert Image.open(report_dir / "accuracy.png").size == (900, 400)


class Hook(BaseHTTPRequestHandler):
    statuses: list[int] = []
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "json": json.loads(body)})
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"error")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Hook.statuses, Hook.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Hook, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_notify_webhook_retries_after_a_server_error(project, webhook):
    hook, base = webhook
    hook.statuses = [500]
    result = project.script("notify", NOTIFY_WEBHOOK_URL=f"{base}/services/T0/B0/secret")
    assert result.returncode == 0, result.stderr
    assert len(hook.received) == 2
    text = hook.received[-1]["json"]["text"]
    assert text.startswith(f"*{subject_of(project)}*\nmodel.py on main @ ")
    assert hook.received[-1]["path"] == "/services/T0/B0/secret"


def test_notify_webhook_that_refuses_the_request_is_not_retried_and_its_secret_stays_hidden(project, webhook):
    hook, base = webhook
    hook.statuses = [404, 404, 404]
    result = project.script("notify", NOTIFY_WEBHOOK_URL=f"{base}/services/T0/B0/secret")
    assert result.returncode == state.EXIT_NOTIFY_FAILED
    assert len(hook.received) == 1
    assert f"error: webhook {base} failed (HTTP 404, 1 tries); check NOTIFY_WEBHOOK_URL" in result.stderr
    assert "secret" not in result.stderr + result.stdout


def test_notify_with_the_smtp_server_down_exits_7_and_keeps_the_message(project):
    port = free_port()   # nothing listens there
    result = project.script("notify", **smtp_env(port))
    assert result.returncode == state.EXIT_NOTIFY_FAILED
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot reach SMTP server 127.0.0.1:{port} (Connection refused); "
                                "check SMTP_HOST and SMTP_PORT; the message is kept in ")
    assert len([l for l in lines if not l.startswith("==>")]) == 1
    kept = lines[-1].rsplit(" ", 1)[-1]
    assert subject_of(project) in open(kept.replace(".eml", ".md")).read()


def test_notify_with_a_wrong_password_exits_7_and_never_shows_it(project, smtp_server):
    inbox, port = smtp_server(auth=True, auth_require_tls=False)
    wrong = "wr0ng-" + PASSWORD
    result = project.script("notify", **smtp_env(port, SMTP_USER="alice", SMTP_PASSWORD=wrong), DEBUG="1")
    assert result.returncode == state.EXIT_NOTIFY_FAILED, result.stderr
    assert f"error: SMTP server 127.0.0.1:{port} refused the login of alice (535); check SMTP_USER and SMTP_PASSWORD" \
        in result.stderr
    assert inbox.logins and not inbox.logins[0][1] and not inbox.envelopes
    assert wrong not in result.stdout + result.stderr
    assert wrong.encode() not in all_state_bytes(project)
    assert list((project.state / "notifications").glob("*.eml"))


def test_notify_with_smtp_but_no_recipient_is_one_clear_line(project):
    result = project.script("notify", SMTP_HOST="127.0.0.1")
    assert result.returncode == state.EXIT_BAD_INPUT
    assert "error: SMTP_HOST is set but MAIL_TO is empty; set MAIL_TO=you@example.com" in result.stderr


def failed_baseline(p: Project, **run) -> str:
    """The state of a run whose only attempt failed, as train.py leaves it."""
    log = p.state / "logs" / "attempt-1.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "ValueError: shapes (32,10) and (32,) do not match\n")
    (p.state / "history.jsonl").write_text(json.dumps({
        "attempt": 1, "run": p.run_env()["RUN_ID"], "tweak": "baseline", "accuracy": None, "exit_code": 1,
        "outcome": "failed", "duration": 3.0, "log": "logs/attempt-1.log", "metrics": "metrics/attempt-1.json"}) + "\n")
    state.update_run({"STATE_DIR": str(p.state)}, MODEL_FILE="model.py", MODEL_TYPE="cnn", ATTEMPT=1, STATUS="failed",
                     EXIT_CODE=1, LOG=str(log), BEST_ACCURACY=None, BEST_ATTEMPT=None, ACCURACY=None,
                     PUBLISHED_COMMIT=None, PUBLISHED_BRANCH=None, **run)
    return p.run_env()["COMMIT"][:12]


BROKEN_SKLEARN = """import os
from sklearn.svm import SVC
print("files:", sorted(os.listdir(os.environ["DATA_DIR"])))
raise ValueError("Found input variables with inconsistent numbers of samples: [10, 9]")
"""


def test_a_run_whose_only_attempt_failed_says_train_failed_with_the_line_and_the_log(tmp_path, smtp_server):
    p = Project(tmp_path, tmp_path / "data", example=None)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("1,2\n")
    (tmp_path / "model.py").write_text(BROKEN_SKLEARN)
    p.seed_remote(tmp_path / "model.py")
    for name in ("fetch", "detect_type"):
        assert p.script(name).returncode == 0
    trained = p.script("train", WARM_WORKER="0")
    assert trained.returncode == state.EXIT_TRAINING_FAILED, trained.stderr
    inbox, port = smtp_server()
    result = p.script("notify", **smtp_env(port))
    assert result.returncode == 0, result.stderr
    commit = p.run_env()["COMMIT"][:12]
    message = inbox.message()
    assert message["Subject"] == f"[tweakops] main @ {commit}: train failed"
    text = parts(message)["text/plain"]
    assert text.startswith(f"The train stage failed on main @ {commit}:\n\n    training failed (exit 1): ValueError: "
                           "Found input variables with inconsistent numbers of samples: [10, 9]; log: ")
    assert "Last lines of attempt-1.log:\n\nfiles: ['rows.csv']\n" in text          # the log's tail
    assert "| 1 | baseline | — | — |" in text and "below target" not in text      # the report, saying failed
    assert inbox.envelopes[0].rcpt_tos == ["dev@example.org", "lead@example.org", "test@example.com"]  # + the author


def test_an_only_attempt_failed_without_a_stage_line_says_it_failed_and_what_to_do(project, smtp_server):
    """The state the watchdog leaves when it gives up on an attempt: no FAILED_STAGE, a failed record."""
    commit = failed_baseline(project, COMMIT_AUTHOR="Ann Lee <ann@example.com>")
    inbox, port = smtp_server()
    result = project.script("notify", **smtp_env(port))
    assert result.returncode == 0, result.stderr
    message = inbox.message()
    assert message["Subject"] == f"[tweakops] main @ {commit}: model.py failed (attempt 1, exit 1)"
    text = parts(message)["text/plain"]
    assert text.startswith(f"Attempt 1 of model.py on main @ {commit} failed (exit 1): "
                           "ValueError: shapes (32,10) and (32,) do not match\n")
    assert "What to do: fix the error in model.py" in text and "below target" not in text
    assert "Last lines of attempt-1.log:\n\n" in text and "line 60\n" not in text and "line 61\n" in text  # 40 lines
    assert "- **verdict**: failed (exit 1): ValueError: shapes" in text      # the report says the same
    assert inbox.envelopes[0].rcpt_tos == ["dev@example.org", "lead@example.org", "ann@example.com"]  # the author too


def test_a_refused_push_is_not_announced_as_a_success(tmp_path, smtp_server):
    p = loop_project(tmp_path)
    hook = p.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected: ask a maintainer' >&2\nexit 1\n")
    hook.chmod(0o755)
    published = p.script("publish")
    assert published.returncode == state.EXIT_PUBLISH_FAILED, published.stderr
    why = p.run_env()["PUBLISH_ERROR"]
    assert "main is protected" in why
    inbox, port = smtp_server()
    result = p.script("notify", **smtp_env(port))
    assert result.returncode == 0, result.stderr
    message = inbox.message()
    assert message["Subject"] == f"[tweakops] main @ {p.run_env()['COMMIT'][:12]}: model.py reached 0.9312 " \
                                 "(target 0.80, met), NOT published"
    text = parts(message)["text/plain"]
    assert f"The better source was NOT published: {why.rstrip('.')}. It is kept in {p.state / 'best' / 'model.py'}." in text
    assert "Published as" not in text and "- **commit**: " + p.run_env()["COMMIT"][:12] + " → not published" in text
    assert "- **verdict**: target met; NOT published: push to main refused" in text
    assert inbox.envelopes[0].rcpt_tos == ["dev@example.org", "lead@example.org"]   # a result, not a failure: MAIL_TO


def push_as(p: Project, author: str, source: Path) -> str:
    """A developer's commit of `source` as model.py, pushed to the remote; its id."""
    work = p.root / "dev"
    p.git("clone", "-q", str(p.remote), str(work))
    shutil.copy(source, work / "model.py")
    p.git("add", "-A", cwd=work)
    p.git("commit", "-q", "--author", author, "-m", "try this", cwd=work)
    p.git("push", "-q", "origin", "main", cwd=work)
    return p.git("rev-parse", "HEAD", cwd=work).stdout.strip()


DETECT = ROOT / "tests" / "fixtures" / "detect"


@pytest.mark.parametrize("source, stages, stage, fix", [
    ("syntax_error.py", ["fetch", "detect_type"], "detect", "fix the model script as the line says"),
    ("torch_net.py", ["fetch", "detect_type"], "detect", "fix the model script as the line says"),
    ("keras_mlp.py", ["fetch", "detect_type", "train"], "train", "fix what the line says"),   # DATA_DIR is missing
])
def test_a_broken_push_reaches_the_developer_and_its_author_once(tmp_path, smtp_server, source, stages, stage, fix):
    p = Project(tmp_path, tmp_path / "no-such-data", example="sklearn")
    commit = push_as(p, "Ann Lee <Ann@Example.com>", DETECT / source)
    for name in stages:
        ran = p.script(name)
    assert ran.returncode == state.EXIT_BAD_INPUT, ran.stderr
    line = ran.stderr.strip().splitlines()[-1].removeprefix("error: ")
    inbox, port = smtp_server()
    result = p.script("notify", **smtp_env(port, MAIL_TO="dev@example.org, ann@example.com"))
    assert result.returncode == 0, result.stderr
    assert inbox.envelopes[0].rcpt_tos == ["dev@example.org", "ann@example.com"]   # the author is in MAIL_TO: once
    message = inbox.message()
    assert message["Subject"] == f"[tweakops] main @ {commit[:12]}: {stage} failed"
    text = parts(message)["text/plain"]
    assert text.startswith(f"The {stage} stage failed on main @ {commit[:12]}:\n\n    {line}\n\nWhat to do: {fix}")
    assert "Nothing was published." in text and "below target" not in text
    assert "tweakops report" not in text and not [part for part in message.walk() if part.get_content_maintype() == "image"]


def test_a_broken_push_goes_to_its_author_when_mail_to_is_empty(tmp_path, smtp_server):
    p = Project(tmp_path, tmp_path / "data", example=None)
    p.seed_remote(DETECT / "keras_mlp.py")
    push_as(p, "Ann Lee <ann@example.com>", DETECT / "syntax_error.py")
    assert p.script("fetch").returncode == 0 and p.script("detect_type").returncode == state.EXIT_BAD_INPUT
    inbox, port = smtp_server()
    result = p.script("notify", **smtp_env(port, MAIL_TO=""))
    assert result.returncode == 0, result.stderr
    assert inbox.envelopes[0].rcpt_tos == ["ann@example.com"]


def test_a_failed_fetch_names_no_commit_and_nothing_of_the_previous_run(project, smtp_server):
    gone = project.root / "moved.git"
    failed = project.script("fetch", MODEL_REPO=str(gone))
    assert failed.returncode == state.EXIT_BAD_INPUT, failed.stderr
    assert project.run_env()["FAILED_STAGE"] == "fetch"
    inbox, port = smtp_server()
    result = project.script("notify", **smtp_env(port, MAIL_TO="dev@example.org"))
    assert result.returncode == 0, result.stderr
    assert inbox.envelopes[0].rcpt_tos == ["dev@example.org"]   # COMMIT_AUTHOR is the previous run's: not told
    message = inbox.message()
    assert message["Subject"] == "[tweakops] main: fetch failed"
    text = parts(message)["text/plain"]
    assert f"    MODEL_REPO {gone} does not exist" in text and "What to do: check MODEL_REPO, MODEL_BRANCH" in text
    assert "epochs 1→3" not in text and "0.9312" not in text


def test_no_credential_reaches_a_message_a_file_or_an_error_line(project, smtp_server, webhook):
    hook, base = webhook
    hook.statuses = [404]
    secrets = {"SMTP_PASSWORD": PASSWORD, "JENKINS_TOKEN": "11jenkins-api-token-ff",
               "NOTIFY_WEBHOOK_URL": f"{base}/services/T0/B0/hooksecretpath"}
    failure = (f"cannot fetch https://bob:gh-url-token@git.example.com/m.git (token {secrets['JENKINS_TOKEN']}, "
               f"password {PASSWORD}, hook {secrets['NOTIFY_WEBHOOK_URL']}, path /services/T0/B0/hooksecretpath)")
    state.update_run({"STATE_DIR": str(project.state)}, FAILED_STAGE="train", FAILURE=failure)
    log = project.state / "logs" / "attempt-9.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(f"Traceback\nRuntimeError: {failure}\n")
    state.update_run({"STATE_DIR": str(project.state)}, LOG=str(log))
    inbox, port = smtp_server(auth=True, auth_require_tls=False)
    result = project.script("notify", **smtp_env(port, SMTP_USER="alice"), **secrets)
    assert result.returncode == state.EXIT_NOTIFY_FAILED          # the webhook answered 404; the mail went
    assert len(inbox.envelopes) == 1
    sent = inbox.envelopes[0].content.decode(errors="replace") + json.dumps([r["json"] for r in hook.received])
    assert "cannot fetch https://***@git.example.com/m.git (token ***, password ***" in parts(inbox.message())["text/plain"]
    written = [f for d in ("notifications", "report") for f in (project.state / d).rglob("*") if f.is_file()]
    assert {f.suffix for f in written} >= {".eml", ".md", ".html"}   # run.env and the log hold them: planted here
    everything = [sent, result.stdout, result.stderr, *(f.read_bytes().decode(errors="replace") for f in written)]
    for secret in (PASSWORD, "gh-url-token", secrets["JENKINS_TOKEN"], "hooksecretpath"):
        assert not [where for where in everything if secret in where], secret


def test_notify_sends_a_watchdog_notice_with_its_own_subject_and_log(project, tmp_path):
    log = tmp_path / "watchdog.log"
    log.write_text("no heartbeat for 600s\nkilled pid 4242\n")
    result = project.script("notify", "--subject", "run failed: attempt 3 hung", "--message",
                            "restarted 3 times, giving up", "--log-tail", str(log))
    assert result.returncode == 0, result.stderr
    md = read_md(result)
    assert md.startswith("# [tweakops] run failed: attempt 3 hung\n")
    assert "restarted 3 times, giving up" in md and "killed pid 4242" in md


@pytest.mark.parametrize("given", ["[tweakops] failure: attempt 3 keeps crashing", "failure: attempt 3 keeps crashing",
                                   "[tweakops] [tweakops] failure: attempt 3 keeps crashing",
                                   " [TWEAKOPS]failure: attempt 3\n keeps crashing"])
def test_the_subject_prefix_appears_exactly_once_whatever_the_caller_passes(tmp_path, given):
    cfg = {**state.DEFAULTS, "STATE_DIR": str(tmp_path / "state")}
    [eml] = notify.send(cfg, given, "the text")
    message = email.message_from_bytes(open(eml, "rb").read(), policy=email.policy.default)
    assert message["Subject"] == "[tweakops] failure: attempt 3 keeps crashing"
    assert eml.rsplit("/", 1)[1].split("-", 1)[1] == "failure-attempt-3-keeps-crashing.eml"


def test_send_can_be_imported_by_other_scripts(tmp_path):
    cfg = {**state.DEFAULTS, "STATE_DIR": str(tmp_path / "state")}
    where = notify.send(cfg, "run failed: test", "the text", attachments=[__file__])
    assert len(where) == 1 and where[0].endswith(".eml")
    message = email.message_from_bytes(open(where[0], "rb").read(), policy=email.policy.default)
    assert message["Subject"] == "[tweakops] run failed: test"
    assert next(message.iter_attachments()).get_filename() == "test_notify.py"
