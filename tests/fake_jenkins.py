"""A loopback HTTP server speaking the few Jenkins REST endpoints tweakops uses.

No Jenkins can be installed where the tests run, so this stands in for one, on
127.0.0.1 only. It implements what `jenkins-jobs update` (python-jenkins) and the git
hook call, with Jenkins' own rules where they matter:

  GET  /api/json                  jobs and views (header X-Jenkins: the version)
  GET  /crumbIssuer/api/json      a CSRF crumb; POSTs other than a token build must send it
  GET  /job/<name>/api/json       200 when the job exists, else 404
  POST /createItem?name=<name>    create a job from the XML body (400 if it exists)
  GET/POST /job/<name>/config.xml read / replace a job's XML
  GET  /view/<name>/api/json, POST /createView?name=, GET/POST /view/<name>/config.xml
  POST /job/<name>/build?token=T  queue a build (201) when T is the job's <authToken>
  GET  /pluginManager/api/json    the plugins of jenkins/plugins.txt

With a user and token set, every request must carry them (HTTP basic auth), else 401.
Everything received is kept in `requests` for the tests to inspect.
"""

from __future__ import annotations

import base64
import json
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

VERSION = "2.504.3"
CRUMB = "3a4f00dcafe"


class FakeJenkins:
    def __init__(self, user: str = "", token: str = "", plugins: dict[str, str] | None = None, on_build=None):
        self.user, self.token = user, token
        self.plugins = plugins or {}
        self.on_build = on_build            # called with (job name) when a build is queued
        self.jobs: dict[str, str] = {}      # name -> config.xml
        self.views: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict]] = []   # (method, path, headers)
        self.builds: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def load_jobs(self, xml_dir: Path) -> None:
        """Pre-load rendered config.xml files, as if deployed."""
        for cfg in sorted(Path(xml_dir).glob("*/config.xml")):
            text = cfg.read_text(encoding="utf-8")
            store = self.views if ET.fromstring(text.encode()).tag.endswith("View") else self.jobs
            store[cfg.parent.name] = text

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, code: int, body: bytes | str | dict = b"", ctype: str = "application/json", headers=None):
                if isinstance(body, dict):
                    body = json.dumps(body)
                if isinstance(body, str):
                    body = body.encode("utf-8")
                self.send_response(code)
                self.send_header("X-Jenkins", VERSION)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                if not fake.user:
                    return True
                want = "Basic " + base64.b64encode(f"{fake.user}:{fake.token}".encode()).decode()
                return self.headers.get("Authorization") == want

            def _route(self, method: str):
                parts = urlsplit(self.path)
                path, query = unquote(parts.path), parse_qs(parts.query)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
                with fake.lock:
                    fake.requests.append((method, self.path, dict(self.headers)))
                if not self._authorized():
                    return self._send(401, {"error": "unauthorized"})
                segs = [s for s in path.split("/") if s]
                is_token_build = method == "POST" and len(segs) == 3 and segs[0] == "job" and segs[2] == "build"
                if method == "POST" and not is_token_build and self.headers.get("Jenkins-Crumb") != CRUMB:
                    return self._send(403, "No valid crumb was included in the request", "text/plain")
                with fake.lock:
                    return self._dispatch(method, segs, query, body)

            def _dispatch(self, method, segs, query, body):
                if method == "GET" and segs in (["api", "json"], []):
                    return self._send(200, {
                        "_class": "hudson.model.Hudson",
                        "jobs": [{"name": n, "url": f"{fake.url}job/{n}/", "color": "notbuilt"} for n in fake.jobs],
                        "views": [{"name": n, "url": f"{fake.url}view/{n}/"} for n in fake.views],
                    })
                if method == "GET" and segs == ["crumbIssuer", "api", "json"]:
                    return self._send(200, {"crumb": CRUMB, "crumbRequestField": "Jenkins-Crumb"})
                if method == "GET" and segs == ["pluginManager", "api", "json"]:
                    return self._send(200, {"plugins": [
                        {"shortName": n, "longName": n, "version": v, "active": True, "enabled": True}
                        for n, v in fake.plugins.items()]})
                for kind, store, create in (("job", fake.jobs, "createItem"), ("view", fake.views, "createView")):
                    if method == "POST" and segs == [create]:
                        name = query.get("name", [""])[0]
                        if not name or name in store:
                            return self._send(400, f"A {kind} already exists with the name {name}", "text/plain")
                        ET.fromstring(body)  # Jenkins rejects XML it cannot parse
                        store[name] = body.decode("utf-8")
                        return self._send(200)
                    if len(segs) >= 2 and segs[0] == kind:
                        name, rest = segs[1], segs[2:]
                        if name not in store:
                            return self._send(404, "Not found", "text/plain")
                        if method == "GET" and rest == ["api", "json"]:
                            return self._send(200, {"name": name})
                        if rest == ["config.xml"]:
                            if method == "GET":
                                return self._send(200, store[name], "application/xml")
                            ET.fromstring(body)
                            store[name] = body.decode("utf-8")
                            return self._send(200)
                        if kind == "job" and method == "POST" and rest == ["build"]:
                            token = ET.fromstring(store[name].encode()).findtext("authToken")
                            if not token or query.get("token", [""])[0] != token:
                                return self._send(403, "Invalid token", "text/plain")
                            fake.builds.append(name)
                            if fake.on_build:
                                fake.on_build(name)
                            return self._send(201, headers={"Location": f"{fake.url}queue/item/{len(fake.builds)}/"})
                return self._send(404, "Not found", "text/plain")

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

        return Handler
