"""No credential ever lands in a file or an output: one whole `make pipeline` with a
known secret in every credential key, then a grep of everything the run wrote.

Real parts everywhere: the model repository is served over HTTP by `git http-backend`
behind a loopback server that demands the token (so MODEL_REPO carries a real one,
http://tweakops:<token>@127.0.0.1:port/model.git, and fetch and publish use it); the
SMTP server is aiosmtpd with AUTH, or a closed port; the webhook is a loopback HTTP
server whose secret is its path; the model prints its whole environment and writes it
into the checkout. Then every file under the test's folder (checkout with .git,
STATE_DIR, the `make logs` archive opened, e-mails decoded), the commits on both sides,
the mails the server received and every captured stdout/stderr are searched: zero hits.
The webhook server seeing its own path is fine.

Two cases: the secrets in the environment (how Jenkins hands credentials over) with
SMTP up, and in .env with SMTP down (the failure message must not carry them either).
"""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import io
import os
import subprocess
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import Project
from test_bad_inputs import BAD, free_port, make, seed

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")]   # loopback only

SECRETS = {
    "SMTP_USER": "smtp-user-S3CRETa1",
    "SMTP_PASSWORD": "smtp-pass-S3CRETb2",
    "JENKINS_USER": "jenkins-user-S3CRETc3",
    "JENKINS_TOKEN": "jenkins-token-S3CRETd4",
    "JENKINS_BUILD_TOKEN": "build-token-S3CRETe5",
}
REPO_TOKEN = "repo-token-S3CRETf6"
WEBHOOK_SECRET = "hook-path-S3CRETg7"


class GitOverHTTP:
    """`git http-backend` (smart HTTP: clone, fetch, push) behind Basic auth on 127.0.0.1."""

    def __init__(self, root: Path, user: str, token: str):
        expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.cgi()

            def do_POST(self):
                self.cgi()

            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def cgi(self):
                if self.headers.get("Authorization") != expected:
                    outer.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="models"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                data = self.body()
                env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
                       "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(data)),
                       "REMOTE_USER": user, "REMOTE_ADDR": "127.0.0.1", "GIT_CONFIG_NOSYSTEM": "1",
                       "GIT_CONFIG_GLOBAL": os.devnull}
                for header, var in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "HTTP_GIT_PROTOCOL")):
                    if self.headers.get(header):
                        env[var] = self.headers[header]
                out = subprocess.run(["git", "http-backend"], input=data, env=env, capture_output=True).stdout
                sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
                head, _, payload = out.partition(sep)
                status, headers = 200, []
                for line in head.decode().splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server, self.port = serve(Handler)

    def close(self):
        self.server.shutdown()


def serve(handler) -> tuple[ThreadingHTTPServer, int]:
    """A real HTTP server on 127.0.0.1 (a free port) serving `handler` in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class Recorder:
    """A webhook endpoint that answers 200 and keeps what it got."""

    def __init__(self):
        self.requests: list[tuple[str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append((self.path, self.rfile.read(int(self.headers.get("Content-Length") or 0))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server, self.port = serve(Handler)

    def close(self):
        self.server.shutdown()


class Inbox:
    """aiosmtpd handler: accepts the one known login, keeps the mails."""

    def __init__(self):
        self.mails: list[bytes] = []
        self.logins: list[bool] = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append(envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode())
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(auth_data, LoginPassword) and auth_data.login == SECRETS["SMTP_USER"].encode() \
            and auth_data.password == SECRETS["SMTP_PASSWORD"].encode()
        self.logins.append(ok)
        return AuthResult(success=ok, handled=False)


def texts(name: str, data: bytes):
    """(where, text) for a file: archives opened, compressed data inflated, e-mails decoded."""
    yield name, data.decode("utf-8", "replace")
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    yield from texts(f"{name}!{member.name}", tar.extractfile(member).read())
                elif member.issym() or member.islnk():
                    yield f"{name}!{member.name}", member.linkname
    elif name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for member in z.namelist():
                yield from texts(f"{name}!{member}", z.read(member))
    elif name.endswith(".gz"):
        yield from texts(name[:-3], gzip.decompress(data))
    if name.endswith(".eml") or data.startswith(b"From:") or b"\nMIME-Version:" in data[:4000]:
        message = email.message_from_bytes(data, policy=email.policy.default)
        yield f"{name} (headers)", "".join(f"{k}: {v}\n" for k, v in message.items())
        for part in message.walk():
            payload = part.get_payload(decode=True)
            if payload:
                yield f"{name} ({part.get_content_type()})", payload.decode("utf-8", "replace")


def git_text(repo: Path) -> str:
    """Every commit, its message and its patches, every ref and the config of a repository
    (objects are compressed on disk: a plain grep would not see them)."""
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True,
                                    env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}).stdout
    return run("log", "--all", "-p", "--format=%H%n%an <%ae>%n%cn <%ce>%n%B") + run("show-ref") + \
        run("config", "--list", "--show-origin")


def hits(secrets: list[str], where: str, text: str) -> list[str]:
    return [f"{where}: {s!r}" for s in secrets if s in text]


@pytest.fixture
def servers():
    started = []
    yield started
    for server in started:
        server.close()


@pytest.mark.parametrize("case", ["environment-smtp-up", "dotenv-smtp-down"])
def test_no_secret_in_any_file_or_output_of_a_whole_pipeline(tmp_path, digits, servers, case):
    p = Project(tmp_path, digits, example=None)
    seed(p, {"model.py": (BAD / "prints_environment.py").read_text(), "README.md": "A model.\n"})
    git_server = GitOverHTTP(tmp_path, "tweakops", REPO_TOKEN)
    hook = Recorder()
    servers += [git_server, hook]
    secrets = {
        **SECRETS,
        "MODEL_REPO": f"http://tweakops:{REPO_TOKEN}@127.0.0.1:{git_server.port}/remote.git",
        "NOTIFY_WEBHOOK_URL": f"http://127.0.0.1:{hook.port}/services/{WEBHOOK_SECRET}",
    }
    inbox = None
    if case == "environment-smtp-up":
        from aiosmtpd.controller import Controller

        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), authenticator=inbox.authenticate,
                                auth_required=True, auth_require_tls=False)
        controller.start()
        servers.append(type("Stop", (), {"close": staticmethod(controller.stop)}))
        smtp_port = controller.port
    else:
        smtp_port = free_port()
    settings = {**secrets, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "MAIL_FROM": "tweakops@example.org",
                "MAIL_TO": "dev@example.org", "JENKINS_URL": f"http://127.0.0.1:{free_port()}/",
                "TARGET_ACCURACY": "0.99", "MAX_TWEAKS": "1"}
    if case.startswith("environment"):
        env, drop = settings, ()
    else:
        env_file = tmp_path / "user.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        env, drop = {"TWEAKOPS_ENV_FILE": str(env_file)}, ("MODEL_REPO",)

    outputs = []
    result = make(p, "pipeline", drop=drop, **env)
    outputs.append(("make pipeline", result.output))
    assert result.code in (0, 3, 7), result.stderr[-4000:]
    run = p.run_env()
    assert run.get("PUBLISHED_COMMIT"), f"nothing was published over HTTP: {result.stderr[-3000:]}"
    if inbox is not None:
        assert result.code in (0, 3), result.stderr[-3000:]
        assert inbox.logins == [True] and inbox.mails, "the mail was not sent with the login"
    else:
        assert "SMTP" in result.stderr
    assert hook.requests and hook.requests[0][0] == f"/services/{WEBHOOK_SECRET}", "the webhook was not called"
    for target in ("logs", "status", "report"):
        extra = make(p, target, drop=drop, **env)
        assert extra.code == 0, extra.stderr[-3000:]
        outputs.append((f"make {target}", extra.output))
    seen = (p.checkout / "environment-seen-by-the-model.txt")
    assert seen.exists() and "PATH=" in seen.read_text(), "the model did not run"

    values = list(secrets.values()) + [REPO_TOKEN, WEBHOOK_SECRET]
    found, opened = [], []
    for where, text in outputs:
        found += hits(values, where, text)
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and not path.is_relative_to(p.remote):
            for where, text in texts(str(path.relative_to(tmp_path)), path.read_bytes()):
                opened.append(where)
                if path == tmp_path / "user.env":   # the user's own file: the search must see them there
                    assert len(hits(values, where, text)) == len(values)
                else:
                    found += hits(values, where, text)
    assert any("tweakops-logs-" in w and "!logs/attempt-" in w for w in opened), "the make logs archive was not opened"
    for repo in (p.checkout, p.remote):
        found += hits(values, f"git history of {repo.name}", git_text(repo))
    for n, mail in enumerate(inbox.mails if inbox else []):
        for where, text in texts(f"mail {n} received by the SMTP server.eml", mail):
            found += hits(values, where, text)
    for path, body in hook.requests:
        found += hits(values, "the webhook's request body", body.decode("utf-8", "replace"))
    assert not found, "secrets found:\n" + "\n".join(found)
