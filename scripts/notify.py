"""Job 5: tell the developer how the run went — e-mail over SMTP, a webhook, and always a copy on disk.

This is the transport. What the message says is composed by report.message() (the
report's composer: the verdict and what to do, the summary table with the why of each
attempt, the change kept, the accuracy plot inlined); it writes the report first when
it is missing or older than the run's state, so the message carries it whichever runs
first (under Jenkins job 5 runs before the logs job).

A failed stage (run.env FAILED_STAGE and FAILURE, written by the pipeline) or a run whose
attempt failed is a failure message, sent to MAIL_TO and to COMMIT_AUTHOR's address
(`Name <addr>`, written by fetch) once each.

Every message is first written to STATE_DIR/notifications/<time>-<subject>.eml (the
whole e-mail) and .md (readable text), so an SMTP server that is down or refuses the
login never loses the run's result. Then it is sent where configured:

  SMTP_HOST (+ SMTP_PORT, SMTP_USER/SMTP_PASSWORD, SMTP_STARTTLS or SMTP_SSL,
  MAIL_FROM, MAIL_TO=a@x,b@y)       e-mail; TLS certificates are checked (a private
                                    CA: SSL_CERT_FILE=/path/ca.pem)
  NOTIFY_WEBHOOK_URL                Slack-compatible JSON {"text": …}, 3 tries, 15 s each

With neither set the copy is the notification and its path is printed. No credential
(SMTP_PASSWORD, JENKINS_TOKEN, JENKINS_BUILD_TOKEN, the webhook URL and its path, a
user:secret@ in a URL) appears in any message, file or error line (report.redact).

Other scripts send their own notices through the same code; the subject gets the
"[tweakops] " prefix once, whether the caller wrote it or not:

    from notify import send
    send(cfg, "run failed: attempt 3 crashed 3 times", text, attachments=[log])

Reads:  run.env, history.jsonl, STATE_DIR/report/ (through report.message), SMTP_*,
        MAIL_*, NOTIFY_WEBHOOK_URL
Writes: STATE_DIR/notifications/*.eml and *.md, STATE_DIR/report/ when stale;
        stdout: the .eml path
Exit:   0 sent (or written, with nothing configured); 2 bad configuration;
        7 the e-mail or the webhook failed (one line; the copy is on disk)

    $ make notify                     # the run's message, from run.env and the history
    $ python scripts/notify.py --subject "run failed: attempt 3 hung" --log-tail state/logs/attempt-3.log
"""

from __future__ import annotations

import argparse
import datetime as dt
import mimetypes
import re
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

import report
import state

SUBJECT_PREFIX = "[tweakops]"
SMTP_TIMEOUT = 30       # seconds for connect and each SMTP command
WEBHOOK_TRIES = 3       # a 5xx, a 429 or no answer is tried again after 1 s, then 2 s;
                        # each try waits NOTIFY_TIMEOUT seconds at most
WEBHOOK_BACKOFF = 1.0
WEBHOOK_CHARS = 3000    # Slack shows about this much of a message


# ---------------------------------------------------------------------------
# sending: one function other scripts import

def send(cfg: dict, subject: str, text: str, html: str | None = None, attachments=(), to=()) -> list[str]:
    """Write the copy, then e-mail and post it where configured; return where it went.

    `to`: addresses mailed besides MAIL_TO (each once). An attachment named in the HTML
    as cid:<its file name> is inlined there. Raises TweakopsError(EXIT_NOTIFY_FAILED)
    naming every channel that failed (the copy is written first, so nothing is lost),
    EXIT_BAD_INPUT for a configuration that cannot work.
    """
    subject = safe(cfg, with_prefix(subject))
    text, html = safe(cfg, text), safe(cfg, html) if html else html
    rcpts = recipients(cfg, to)
    message = build_message(cfg, subject, text, html, attachments, rcpts)
    copy = write_copy(cfg, message, subject, text, attachments)
    done, failed = [str(copy)], []
    if cfg["SMTP_HOST"]:
        problem = mail_config_problem(cfg, rcpts)
        if problem:
            raise state.TweakopsError(f"{problem}; the message is kept in {copy}")
        try:
            done.append(send_mail(cfg, message, rcpts))
        except NotifyFailed as exc:
            failed.append(safe(cfg, str(exc)))
    if cfg["NOTIFY_WEBHOOK_URL"]:
        try:
            done.append(post_webhook(cfg, subject, text))
        except NotifyFailed as exc:
            failed.append(safe(cfg, str(exc)))
    if failed:
        raise state.TweakopsError("; ".join(failed) + f"; the message is kept in {copy}", state.EXIT_NOTIFY_FAILED)
    return done


def with_prefix(subject: str) -> str:
    """`[tweakops] <subject>` on one line, the prefix exactly once whatever the caller passed."""
    rest = " ".join(subject.split())
    while rest.lower().startswith(SUBJECT_PREFIX.lower()):
        rest = rest[len(SUBJECT_PREFIX):].lstrip()
    return f"{SUBJECT_PREFIX} {rest}"


class NotifyFailed(Exception):
    """A channel failed; the text is one line a user can act on."""


safe = report.redact   # no credential in anything we write, send or print


def recipients(cfg: dict, extra=()) -> list[str]:
    """MAIL_TO, then `extra`: each address once (compared without case)."""
    seen, out = set(), []
    for _, addr in getaddresses([cfg["MAIL_TO"], *extra]):
        if "@" in addr and addr.lower() not in seen:
            seen.add(addr.lower())
            out.append(addr)
    return out


def mail_config_problem(cfg: dict, rcpts: list[str]) -> str | None:
    if not rcpts:
        return "SMTP_HOST is set but MAIL_TO is empty; set MAIL_TO=you@example.com (several: comma-separated)"
    if cfg["SMTP_SSL"] and cfg["SMTP_STARTTLS"]:
        return "SMTP_SSL and SMTP_STARTTLS are both set; use SMTP_SSL=1 for port 465, SMTP_STARTTLS=1 for 587"
    if cfg["SMTP_PASSWORD"] and not cfg["SMTP_USER"]:
        return "SMTP_PASSWORD is set but SMTP_USER is empty; set SMTP_USER"
    return None


def build_message(cfg: dict, subject: str, text: str, html: str | None, attachments, rcpts: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = cfg["MAIL_FROM"]
    if rcpts:
        message["To"] = ", ".join(rcpts)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=(cfg["MAIL_FROM"].rpartition("@")[2] or "localhost").strip(">"))
    message.set_content(text)
    html_part = None
    if html:
        message.add_alternative(html, subtype="html")
        html_part = message.get_payload()[-1]
    for path in attachments:
        path = Path(path)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, subtype = kind.split("/", 1)
        if html and f"cid:{path.name}" in html:
            html_part.add_related(path.read_bytes(), maintype=maintype, subtype=subtype,
                                                  cid=f"<{path.name}>", filename=path.name, disposition="inline")
        elif maintype == "text":
            message.add_attachment(safe(cfg, path.read_text(errors="replace")), subtype=subtype, filename=path.name)
        else:
            message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return message


def write_copy(cfg: dict, message: EmailMessage, subject: str, text: str, attachments) -> Path:
    """STATE_DIR/notifications/<time>-<subject>.eml (+ .md); returns the .eml path."""
    folder = state.state_dir(cfg) / "notifications"
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", subject.lower().removeprefix(SUBJECT_PREFIX.lower())).strip("-")[:48]
    stem = f"{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}-{slug or 'notice'}"
    n = 1
    while (folder / f"{stem}.eml").exists():
        n += 1
        stem = f"{stem.rsplit('~', 1)[0]}~{n}"
    state.atomic_write(folder / f"{stem}.eml", message.as_bytes())
    listed = "".join(f"\nAttached: {Path(p).name}" for p in attachments)
    state.atomic_write(folder / f"{stem}.md", f"# {subject}\n\nTo: {message['To'] or '(MAIL_TO is not set)'}\nDate: {message['Date']}"
                                               f"{listed}\n\n{text.rstrip()}\n")
    return folder / f"{stem}.eml"


def login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH with one mechanism (PLAIN, else LOGIN): smtplib's login() tries every mechanism
    in turn, so one wrong password would count as several failed logins (lock-outs)."""
    smtp.ehlo_or_helo_if_needed()
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("the server offers no AUTH")
    offered = smtp.esmtp_features["auth"].upper().split()
    for mechanism in ("PLAIN", "LOGIN"):
        if mechanism in offered:
            smtp.user, smtp.password = user, password
            smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"))
            return
    raise smtplib.SMTPNotSupportedError(f"the server offers AUTH {' '.join(offered)}, not PLAIN or LOGIN")


def send_mail(cfg: dict, message: EmailMessage, rcpts: list[str]) -> str:
    host, port, user = cfg["SMTP_HOST"], cfg["SMTP_PORT"], cfg["SMTP_USER"]
    where = f"{host}:{port}"
    context = ssl.create_default_context()
    try:
        if cfg["SMTP_SSL"]:
            smtp = smtplib.SMTP_SSL(host, port, timeout=SMTP_TIMEOUT, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT)
        with smtp:
            if cfg["SMTP_STARTTLS"]:
                smtp.starttls(context=context)
            if user:
                login(smtp, user, cfg["SMTP_PASSWORD"])
            refused = smtp.send_message(message, to_addrs=rcpts)
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyFailed(f"SMTP server {where} refused the login of {user} ({exc.smtp_code}); "
                           "check SMTP_USER and SMTP_PASSWORD") from None
    except smtplib.SMTPNotSupportedError as exc:
        hint = "unset SMTP_USER or use SMTP_STARTTLS=1" if "AUTH" in str(exc) else "unset SMTP_STARTTLS"
        raise NotifyFailed(f"SMTP server {where}: {exc}; {hint}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise NotifyFailed(f"SMTP server {where} refused every recipient ({', '.join(exc.recipients)}); "
                           "check MAIL_TO") from None
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise NotifyFailed(f"SMTP server {where} answered {exc.smtp_code} {reply.splitlines()[0] if reply else ''}".rstrip()
                           + "; check MAIL_FROM and MAIL_TO") from None
    except smtplib.SMTPException as exc:
        raise NotifyFailed(f"SMTP with {where} failed: {exc}; check SMTP_HOST, SMTP_PORT, SMTP_STARTTLS/SMTP_SSL") from None
    except ssl.SSLError as exc:
        raise NotifyFailed(f"TLS with SMTP server {where} failed ({exc.reason or exc}); check SMTP_SSL/SMTP_STARTTLS "
                           "and the server certificate (a private CA: SSL_CERT_FILE)") from None
    except (socket.timeout, TimeoutError):
        raise NotifyFailed(f"SMTP server {where} did not answer within {SMTP_TIMEOUT}s; check SMTP_HOST and SMTP_PORT") from None
    except OSError as exc:
        raise NotifyFailed(f"cannot reach SMTP server {where} ({exc.strerror or exc}); "
                           "check SMTP_HOST and SMTP_PORT") from None
    if refused:
        state.warn(f"the SMTP server refused {', '.join(refused)}")
    sent_to = [r for r in rcpts if r not in refused]
    return f"e-mail to {', '.join(sent_to)} via {where}"


def post_webhook(cfg: dict, subject: str, text: str) -> str:
    import requests

    url = cfg["NOTIFY_WEBHOOK_URL"]
    parts = urlsplit(url)
    where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")  # the path is the secret
    body = f"*{subject}*\n{text}"
    if len(body) > WEBHOOK_CHARS:
        body = body[:WEBHOOK_CHARS - 30].rstrip() + "\n… (full message by e-mail)"
    problem = "no answer"
    for attempt in range(WEBHOOK_TRIES):
        if attempt:
            time.sleep(WEBHOOK_BACKOFF * 2 ** (attempt - 1))
        try:
            response = requests.post(url, json={"text": body}, timeout=cfg["NOTIFY_TIMEOUT"])
        except requests.RequestException as exc:
            problem = exc.__class__.__name__
            continue
        if response.status_code < 300:
            return f"webhook {where}"
        problem = f"HTTP {response.status_code}"
        if response.status_code != 429 and response.status_code < 500:
            break  # the request itself is wrong: trying again will not help
    raise NotifyFailed(f"webhook {where} failed ({problem}, {attempt + 1} tries); check NOTIFY_WEBHOOK_URL")


# ---------------------------------------------------------------------------
# the run's message (composed by report.py)

def notify_run(cfg: dict, note: str = "", log: str | Path | None = None, subject: str | None = None) -> list[str]:
    """Compose the run's message (report.message) and send it; a failure goes to the commit's author too."""
    m = report.message(cfg, note, log)
    state.banner("notify", with_prefix(subject or m.subject))
    return send(cfg, subject or m.subject, m.text, m.html, m.attachments, to=m.to)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", help="the subject (after '[tweakops] ') instead of the run's verdict")
    parser.add_argument("--message", default="", help="a line put first in the body (e.g. what the watchdog saw)")
    parser.add_argument("--log-tail", metavar="FILE", help=f"add the last {report.LOG_TAIL} lines of FILE")
    args = parser.parse_args(argv)
    cfg = state.config()
    if args.log_tail and not report.log_tail(args.log_tail):
        state.warn(f"{args.log_tail} is missing or empty; sending without a log tail")
    where = notify_run(cfg, args.message, args.log_tail, args.subject)
    if len(where) == 1:
        state.info(f"no SMTP_HOST or NOTIFY_WEBHOOK_URL configured: the message is in {where[0]}")
    else:
        state.info("sent: " + "; ".join(where[1:]) + f" (copy: {where[0]})")
    print(where[0])
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
