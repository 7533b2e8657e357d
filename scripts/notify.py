"""Job 5: tell the developer how the run went — e-mail over SMTP, a webhook, and always a copy on disk.

The message: a subject that says success / target not reached / failure, then the
accuracy against the target, the table of attempts and the diff of the published
change (plain text and HTML). When report.py has written STATE_DIR/report/summary.md
for this run, that is the body and report/accuracy.png is attached.

Every message is first written to STATE_DIR/notifications/<time>-<subject>.eml (the
whole e-mail) and .md (readable text), so an SMTP server that is down or refuses the
login never loses the run's result. Then it is sent where configured:

  SMTP_HOST (+ SMTP_PORT, SMTP_USER/SMTP_PASSWORD, SMTP_STARTTLS or SMTP_SSL,
  MAIL_FROM, MAIL_TO=a@x,b@y)       e-mail; TLS certificates are checked (a private
                                    CA: SSL_CERT_FILE=/path/ca.pem)
  NOTIFY_WEBHOOK_URL                Slack-compatible JSON {"text": …}, 3 tries, 15 s each

With neither set the copy is the notification and its path is printed. The password
and the webhook's path (its secret) never appear in any output or file.

Other scripts send their own notices through the same code:

    from notify import send
    send(cfg, "run failed: attempt 3 crashed 3 times", text, attachments=[log])

Reads:  run.env (STATUS, ACCURACY, BEST_ACCURACY, BEST_ATTEMPT, MODEL_FILE, COMMIT,
        PUBLISHED_COMMIT, PUBLISHED_BRANCH, LOG, RUN_ID), history.jsonl, STATE_DIR/best/,
        STATE_DIR/report/, CHECKOUT_DIR, TARGET_ACCURACY, SMTP_*, MAIL_*, NOTIFY_WEBHOOK_URL
Writes: STATE_DIR/notifications/*.eml and *.md; stdout: where the message went
Exit:   0 sent (or written, with nothing configured); 2 bad configuration;
        7 the e-mail or the webhook failed (one line; the copy is on disk)

    $ make notify
    $ python scripts/notify.py --subject "run failed: attempt 3 hung" --log-tail state/logs/attempt-3.log
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import html as htmllib
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

import state

SUBJECT_PREFIX = "[tweakops]"
SMTP_TIMEOUT = 30       # seconds for connect and each SMTP command
WEBHOOK_TRIES = 3       # a 5xx, a 429 or no answer is tried again …
WEBHOOK_TIMEOUT = 15    # … after 1 s, then 2 s; each try waits this long at most
WEBHOOK_BACKOFF = 1.0
LOG_TAIL = 40           # lines of the log in a failure notice
WEBHOOK_CHARS = 3000    # Slack shows about this much of a message


# ---------------------------------------------------------------------------
# sending: one function other scripts import

def send(cfg: dict, subject: str, text: str, html: str | None = None, attachments=()) -> list[str]:
    """Write the copy, then e-mail and post it where configured; return where it went.

    Raises TweakopsError(EXIT_NOTIFY_FAILED) naming every channel that failed (the
    copy is written first, so nothing is lost), EXIT_BAD_INPUT for a configuration
    that cannot work.
    """
    subject = f"{SUBJECT_PREFIX} {subject}"
    message = build_message(cfg, subject, text, html, attachments)
    copy = write_copy(cfg, message, subject, text, attachments)
    done, failed = [str(copy)], []
    if cfg["SMTP_HOST"]:
        problem = mail_config_problem(cfg)
        if problem:
            raise state.TweakopsError(f"{problem}; the message is kept in {copy}")
        try:
            done.append(send_mail(cfg, message))
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


class NotifyFailed(Exception):
    """A channel failed; the text is one line a user can act on."""


def safe(cfg: dict, text: str) -> str:
    """No password and no credentials in URLs in anything we print."""
    text = state.scrub(text)
    if cfg.get("SMTP_PASSWORD"):
        text = text.replace(str(cfg["SMTP_PASSWORD"]), "***")
    return text


def recipients(cfg: dict) -> list[str]:
    return [addr for _, addr in getaddresses([cfg["MAIL_TO"]]) if addr]


def mail_config_problem(cfg: dict) -> str | None:
    if not recipients(cfg):
        return "SMTP_HOST is set but MAIL_TO is empty; set MAIL_TO=you@example.com (several: comma-separated)"
    if cfg["SMTP_SSL"] and cfg["SMTP_STARTTLS"]:
        return "SMTP_SSL and SMTP_STARTTLS are both set; use SMTP_SSL=1 for port 465, SMTP_STARTTLS=1 for 587"
    if cfg["SMTP_PASSWORD"] and not cfg["SMTP_USER"]:
        return "SMTP_PASSWORD is set but SMTP_USER is empty; set SMTP_USER"
    return None


def build_message(cfg: dict, subject: str, text: str, html: str | None, attachments) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = cfg["MAIL_FROM"]
    if recipients(cfg):
        message["To"] = ", ".join(recipients(cfg))
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=(cfg["MAIL_FROM"].rpartition("@")[2] or "localhost").strip(">"))
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    for path in attachments:
        path = Path(path)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, subtype = kind.split("/", 1)
        if maintype == "text":
            message.add_attachment(path.read_text(errors="replace"), subtype=subtype, filename=path.name)
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


def send_mail(cfg: dict, message: EmailMessage) -> str:
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
            refused = smtp.send_message(message, to_addrs=recipients(cfg))
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
    sent_to = [r for r in recipients(cfg) if r not in refused]
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
            response = requests.post(url, json={"text": body}, timeout=WEBHOOK_TIMEOUT)
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
# the run's message

def verdict(cfg: dict, run: dict) -> tuple[str, str]:
    """('success' | 'target not reached' | 'failure', subject without the prefix)."""
    model = run.get("MODEL_FILE") or "the model"
    target = cfg["TARGET_ACCURACY"]
    best = run.get("BEST_ACCURACY") or run.get("ACCURACY")
    if run.get("STATUS") in ("failed", "crashed", "oom") or not best:
        what = {"crashed": "crashed", "oom": "ran out of memory"}.get(run.get("STATUS", ""), "failed")
        return "failure", f"failure: {model} {what} (attempt {run.get('ATTEMPT', '?')})"
    best = float(best)
    if best >= target:
        return "success", f"success: {model} reached {best:.4f} (target {target:.2f})"
    return "target not reached", f"target not reached: {model} best {best:.4f} (target {target:.2f})"


def published_diff(cfg: dict, run: dict) -> str:
    """The change the best source makes to the fetched one (what publish.py commits)."""
    model_file = run.get("MODEL_FILE")
    best = state.state_dir(cfg) / "best" / Path(model_file or "-").name
    if not model_file or not run.get("COMMIT") or not best.is_file():
        return ""
    proc = state.git(cfg, "show", f"{run['COMMIT']}:{model_file}", cwd=cfg["CHECKOUT_DIR"], check=False)
    if proc.returncode != 0:
        return ""
    return "".join(difflib.unified_diff(proc.stdout.splitlines(True), state.read_source(best).splitlines(True),
                                        f"a/{model_file}", f"b/{model_file}"))


def log_tail(path: str | Path, lines: int = LOG_TAIL) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def fresh_report(cfg: dict, run: dict) -> tuple[str | None, list[Path]]:
    """report/summary.md and accuracy.png, when written for this run (not a stale one)."""
    folder = state.state_dir(cfg) / "report"
    summary, plot = folder / "summary.md", folder / "accuracy.png"
    started = 0.0
    if run.get("RUN_STARTED_AT"):
        try:
            started = dt.datetime.fromisoformat(run["RUN_STARTED_AT"]).timestamp()
        except ValueError:
            pass
    text = summary.read_text(errors="replace") if summary.is_file() and summary.stat().st_mtime >= started - 1 else None
    return text, [plot] if text is not None and plot.is_file() else []


def html_table(rows: list[list[object]], headers: list[str]) -> str:
    def cells(row, tag):
        return "".join(f"<{tag}>{htmllib.escape('' if c is None else str(c))}</{tag}>" for c in row)
    return ("<table border='1' cellpadding='4' cellspacing='0'>\n<tr>" + cells(headers, "th") + "</tr>\n"
            + "".join(f"<tr>{cells(row, 'td')}</tr>\n" for row in rows) + "</table>")


def compose(cfg: dict, run: dict, history: list[dict], note: str = "", tail: str = "",
            tail_name: str = "") -> tuple[str, str, list[Path]]:
    """(text, html, attachments) of the run's message."""
    kind, subject = verdict(cfg, run)
    target = cfg["TARGET_ACCURACY"]
    summary, attachments = fresh_report(cfg, run)
    baseline = next((r.get("accuracy") for r in history if r.get("outcome") == "baseline"), None)
    best = run.get("BEST_ACCURACY")
    facts = [
        ["Repository", f"{state.scrub(run.get('MODEL_REPO', ''))} ({run.get('MODEL_BRANCH', '')} @ {run.get('COMMIT', '')[:12]})"],
        ["Model", f"{run.get('MODEL_FILE', '?')} ({run.get('MODEL_TYPE', '?')})"],
        ["Accuracy", (f"{baseline:.4f} → " if baseline is not None and best else "")
         + (f"{float(best):.4f} (best: attempt {run.get('BEST_ATTEMPT')})" if best else "none")],
        ["Target", f"{target:.2f} ({'met' if kind == 'success' else 'not met'})"],
        ["Attempts", str(sum(r.get("attempt") is not None for r in history))],
    ]
    if run.get("PUBLISHED_COMMIT"):
        facts.append(["Published", f"{run['PUBLISHED_COMMIT'][:12]} on {run.get('PUBLISHED_BRANCH', '')}"])
    headers = ["attempt", "tweak", "accuracy", "time", "outcome"]
    rows = [["—" if r.get("attempt") is None else r["attempt"], r.get("tweak", ""), "" if r.get("accuracy") is None else f"{r['accuracy']:.4f}",
             f"{r.get('duration') or 0:.0f}s", r.get("outcome", "")] for r in history]
    diff = published_diff(cfg, run)
    diff_title = "Published change" if run.get("PUBLISHED_COMMIT") else "Change of the best source (not published)"

    text_parts, html_parts = [], []
    if note:
        text_parts.append(note)
        html_parts.append(f"<p><strong>{htmllib.escape(note)}</strong></p>")
    if summary is not None:
        text_parts.append(summary.rstrip())
        html_parts.append(f"<pre>{htmllib.escape(summary.rstrip())}</pre>")
    else:
        text_parts.append(subject + "\n\n" + "\n".join(f"{k + ':':<12}{v}" for k, v in facts))
        html_parts.append(f"<h2>{htmllib.escape(subject)}</h2>\n<table>" + "".join(
            f"<tr><th align='left'>{htmllib.escape(k)}</th><td>{htmllib.escape(v)}</td></tr>" for k, v in facts)
            + "</table>")
        if rows:
            text_parts.append("Attempts\n\n" + state.table(rows, headers))
            html_parts.append("<h3>Attempts</h3>\n" + html_table(rows, headers))
    if diff:
        text_parts.append(f"{diff_title}\n\n{diff.rstrip()}")
        html_parts.append(f"<h3>{diff_title}</h3>\n<pre>{htmllib.escape(diff.rstrip())}</pre>")
    if tail:
        title = f"Last lines of {tail_name}" if tail_name else "Last lines of the log"
        text_parts.append(f"{title}\n\n{tail}")
        html_parts.append(f"<h3>{htmllib.escape(title)}</h3>\n<pre>{htmllib.escape(tail)}</pre>")
    text = "\n\n".join(text_parts) + "\n"
    html = "<html><body>\n" + "\n".join(html_parts) + "\n</body></html>\n"
    return text, html, attachments


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", help="the subject (after '[tweakops] ') instead of the run's verdict")
    parser.add_argument("--message", default="", help="a line put first in the body (e.g. what the watchdog saw)")
    parser.add_argument("--log-tail", metavar="FILE", help=f"add the last {LOG_TAIL} lines of FILE")
    args = parser.parse_args(argv)
    cfg = state.config()
    run = state.read_run(cfg)
    history = state.read_history(cfg)
    if run.get("RUN_ID"):
        history = [r for r in history if r.get("run", run["RUN_ID"]) == run["RUN_ID"]]
    kind, subject = verdict(cfg, run)
    subject = args.subject or subject
    log = args.log_tail or (run.get("LOG") if kind == "failure" else None)
    tail = log_tail(log) if log else ""
    if args.log_tail and not tail:
        state.warn(f"{args.log_tail} is missing or empty; sending without a log tail")
    state.banner("notify", subject)
    text, html, attachments = compose(cfg, run, history, args.message, tail, Path(log).name if log else "")
    where = send(cfg, subject, text, html, attachments)
    if len(where) == 1:
        state.info(f"no SMTP_HOST or NOTIFY_WEBHOOK_URL configured: the message is in {where[0]}")
    else:
        state.info("sent: " + "; ".join(where[1:]) + f" (copy: {where[0]})")
    print(where[0])
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
