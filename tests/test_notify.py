"""notify.py: a real SMTP server (aiosmtpd on 127.0.0.1) and a real HTTP server read back what they got."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import notify
import state
from conftest import Project
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


def test_notify_with_nothing_configured_writes_the_message_and_says_where(project):
    result = project.script("notify")
    assert result.returncode == 0, result.stderr
    eml = project.state / "notifications" / result.stdout.strip().rsplit("/", 1)[-1]
    assert result.stdout.strip() == str(eml) and eml.exists()
    assert f"no SMTP_HOST or NOTIFY_WEBHOOK_URL configured: the message is in {eml}" in result.stderr
    md = eml.with_suffix(".md").read_text()
    assert md.startswith("# [tweakops] success: model.py reached 0.9312 (target 0.80)\n")
    assert "Accuracy:   0.7100 → 0.9312 (best: attempt 3)" in md
    assert "Published:  " + project.run_env()["PUBLISHED_COMMIT"][:12] + " on main" in md
    assert "3        epochs 1→3" in md           # the attempts table
    assert "-FILTERS = 32  # conv filters\n-EPOCHS = 1\n+FILTERS = 64  # conv filters\n+EPOCHS = 3\n" in md  # the diff
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert set(parts(message)) == {"text/plain", "text/html"}


def test_notify_mails_text_and_html_to_every_recipient(project, smtp_server):
    inbox, port = smtp_server()
    result = project.script("notify", **smtp_env(port))
    assert result.returncode == 0, result.stderr
    assert f"sent: e-mail to dev@example.org, lead@example.org via 127.0.0.1:{port}" in result.stderr
    assert len(inbox.envelopes) == 1
    assert inbox.envelopes[0].rcpt_tos == ["dev@example.org", "lead@example.org"]
    assert inbox.envelopes[0].mail_from == "tweakops@example.org"
    message = inbox.message()
    assert message["Subject"] == "[tweakops] success: model.py reached 0.9312 (target 0.80)"
    body = parts(message)
    assert "+EPOCHS = 3" in body["text/plain"]
    assert "<td>epochs 1→3</td>" in body["text/html"] and "<td>0.9312</td>" in body["text/html"]
    assert (project.state / "notifications").glob("*.eml")  # the copy is kept too


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


def test_notify_uses_the_report_summary_and_attaches_the_plot(project, smtp_server):
    report = project.state / "report"
    report.mkdir()
    (report / "summary.md").write_text("# Run summary\n\n| attempt | accuracy |\n|---|---|\n| 3 | 0.9312 |\n")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64   # report.py's plot stands in as bytes: only the attaching is tested
    (report / "accuracy.png").write_bytes(png)
    inbox, port = smtp_server()
    result = project.script("notify", **smtp_env(port))
    assert result.returncode == 0, result.stderr
    message = inbox.message()
    assert message.get_content_type() == "multipart/mixed"
    body = parts(message)
    assert body["text/plain"].startswith("# Run summary\n\n| attempt | accuracy |")
    assert "+FILTERS = 64" in body["text/plain"]   # the diff still comes with it
    attachment = next(message.iter_attachments())
    assert attachment.get_filename() == "accuracy.png" and attachment.get_content() == png


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
    assert text.startswith("*[tweakops] success: model.py reached 0.9312 (target 0.80)*")
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
    assert "success: model.py reached 0.9312" in open(kept.replace(".eml", ".md")).read()


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


def test_notify_of_a_failed_run_carries_the_log_tail(project):
    log = project.state / "logs" / "attempt-1.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "ValueError: shapes do not match\n")
    state.reset_run({"STATE_DIR": str(project.state)}, MODEL_FILE="model.py", ATTEMPT=1, STATUS="failed", LOG=str(log))
    result = project.script("notify")
    assert result.returncode == 0, result.stderr
    md = open(result.stdout.strip().replace(".eml", ".md")).read()
    assert md.startswith("# [tweakops] failure: model.py failed (attempt 1)\n")
    assert "Last lines of attempt-1.log\n\n" in md and "ValueError: shapes do not match" in md
    assert "line 60\n" not in md and "line 61\n" in md     # the last 40 lines only


def test_notify_sends_a_watchdog_notice_with_its_own_subject_and_log(project, tmp_path):
    log = tmp_path / "watchdog.log"
    log.write_text("no heartbeat for 600s\nkilled pid 4242\n")
    result = project.script("notify", "--subject", "run failed: attempt 3 hung", "--message",
                            "restarted 3 times, giving up", "--log-tail", str(log))
    assert result.returncode == 0, result.stderr
    md = open(result.stdout.strip().replace(".eml", ".md")).read()
    assert md.startswith("# [tweakops] run failed: attempt 3 hung\n")
    assert "restarted 3 times, giving up" in md and "killed pid 4242" in md


@pytest.mark.parametrize("run, expected", [
    ({"BEST_ACCURACY": "0.85", "STATUS": "trained", "MODEL_FILE": "m.py"}, "success: m.py reached 0.8500 (target 0.80)"),
    ({"BEST_ACCURACY": "0.80", "STATUS": "trained", "MODEL_FILE": "m.py"}, "success: m.py reached 0.8000 (target 0.80)"),
    ({"BEST_ACCURACY": "0.61", "STATUS": "reverted", "MODEL_FILE": "m.py"},
     "target not reached: m.py best 0.6100 (target 0.80)"),
    ({"STATUS": "failed", "ATTEMPT": "1", "MODEL_FILE": "m.py"}, "failure: m.py failed (attempt 1)"),
    ({"BEST_ACCURACY": "0.9", "STATUS": "crashed", "ATTEMPT": "4", "MODEL_FILE": "m.py"},
     "failure: m.py crashed (attempt 4)"),
])
def test_notify_subject_says_success_target_not_reached_or_failure(run, expected):
    assert notify.verdict({"TARGET_ACCURACY": 0.80}, run)[1] == expected


def test_send_can_be_imported_by_other_scripts(tmp_path):
    cfg = {**state.DEFAULTS, "STATE_DIR": str(tmp_path / "state")}
    where = notify.send(cfg, "run failed: test", "the text", attachments=[__file__])
    assert len(where) == 1 and where[0].endswith(".eml")
    message = email.message_from_bytes(open(where[0], "rb").read(), policy=email.policy.default)
    assert message["Subject"] == "[tweakops] run failed: test"
    assert next(message.iter_attachments()).get_filename() == "test_notify.py"
