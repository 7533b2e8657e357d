"""The run report: every attempt, its change and its accuracy, on one page — and the
one composer of what the developer is told (notify.py only transports it).

Writes STATE_DIR/report/:
  index.html    self-contained (inline CSS, the plot embedded as a PNG, no network)
  summary.md    the same story in Markdown, for a mail body, a commit or a PR comment
  accuracy.png  accuracy per attempt against the target (outcomes marked), and the
                per-epoch validation curves of the attempts

With --check (make report-check) it renders index.html in headless Chromium (Debian's
`chromium`) to STATE_DIR/report/screenshot.png and fails if the page came out blank.

`message(cfg)` composes the run's notification from the same pieces: the verdict (what
happened and what to do: target met, below target, not published and why, the only
attempt failed, a stage failed), the summary table with the why of each attempt, the
change kept, and the plot (inlined in the HTML as cid:accuracy.png). It writes the
report first when it is missing or older than history.jsonl or run.env.

Reads:  run.env (also FAILED_STAGE, FAILURE, PUBLISH_ERROR), history.jsonl (the current
        run: RUN_ID), metrics/attempt-N.json, logs/, best/, CHECKOUT_DIR (the pushed source)
Writes: STATE_DIR/report/; prints the path of index.html (--check: of the screenshot) on stdout
Exit:   0 written; 2 nothing to report yet, or --check without chromium / with a blank page

    $ make report
    $ make report-check
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import attempts
import state

MARKERS = {  # outcome -> (matplotlib marker, colour)
    "baseline": ("s", "#555555"), "kept": ("o", "#1a7f37"), "reverted": ("x", "#cf222e"),
    "failed": ("X", "#8250df"), "stopped-early": ("v", "#bf8700"), "cached": ("D", "#0969da"),
}
PLOT_SIZE = (9.0, 4.0)  # inches at 100 dpi: a 900x400 PNG


def run_records(cfg: dict, run: dict) -> list[dict]:
    return attempts.this_run(run, state.read_history(cfg))


def trained(records: list[dict]) -> list[dict]:
    """The attempts: a build-failed tweak (attempt null) trained nothing."""
    return [r for r in records if r.get("attempt") is not None]


def rows(records: list[dict]) -> list[dict]:
    """Attempts with the change against the best accuracy so far."""
    best = None
    out = []
    for r in records:
        acc = r.get("accuracy")
        delta = None if acc is None or best is None else acc - best
        out.append({**r, "delta": delta})
        if acc is not None and r.get("outcome") in ("baseline", "kept", "cached"):
            best = acc if best is None else max(best, acc)
    return out


def fmt(value, spec=".4f", empty="—") -> str:
    return empty if value is None else format(value, spec)


OUTCOME_COLOURS = {"baseline": "1", "kept": "1;32", "reverted": "31", "failed": "35", "stopped-early": "33", "cached": "34"}


def attempt_line(record: dict, best: float | None, target: float, index: int, total: int, stream=None) -> str:
    """`attempt 3/10  +conv block  acc 0.874 (best 0.874, target 0.90)  41s  kept`.

    The outcome is coloured only for a terminal `stream` (never with NO_COLOR, never
    for a pipe or the Jenkins console); without a stream the line is plain text."""
    outcome = record.get("outcome", "")
    if stream is not None:
        outcome = state.color(OUTCOME_COLOURS.get(outcome, "0"), outcome, stream)
    return (f"attempt {index}/{total}  {record.get('tweak', '')}  acc {fmt(record.get('accuracy'), '.3f')} "
            f"(best {fmt(best, '.3f')}, target {target:.2f})  {record.get('duration') or 0:.0f}s  {outcome}")


def wall_time(records: list[dict]) -> float:
    """Seconds from the first attempt's start to the last one's end (history's started_at),
    else the sum of the attempts' durations."""
    try:
        first = dt.datetime.fromisoformat(records[0]["started_at"])
        last = dt.datetime.fromisoformat(records[-1]["started_at"])
        return max(0.0, (last - first).total_seconds()) + (records[-1].get("duration") or 0)
    except (KeyError, TypeError, ValueError, IndexError):
        return sum(r.get("duration") or 0 for r in records)


def plot(cfg: dict, records: list[dict], target: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=PLOT_SIZE, dpi=100)
    records = trained(records)
    for outcome, (marker, colour) in MARKERS.items():
        points = [(r["attempt"], r["accuracy"] if r.get("accuracy") is not None else 0.0)
                  for r in records if r.get("outcome") == outcome]
        if points:
            left.scatter(*zip(*points), marker=marker, color=colour, label=outcome, s=50, zorder=3)
    left.plot([r["attempt"] for r in records], [r.get("accuracy") or 0.0 for r in records], color="#bbbbbb", zorder=1)
    left.axhline(target, color="#cf222e", linestyle="--", linewidth=1, label=f"target {target:.2f}")
    left.set(title="accuracy per attempt", xlabel="attempt", ylabel="accuracy", ylim=(0, 1.02))
    left.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.legend(fontsize=7, loc="lower right")
    sd = state.state_dir(cfg)
    for r in records:
        try:
            epochs = json.loads((sd / r.get("metrics", "")).read_text()).get("epochs", [])
        except (OSError, ValueError):
            continue
        curve = [(e["epoch"], e["val_accuracy"]) for e in epochs if "val_accuracy" in e]
        if curve:
            right.plot(*zip(*curve), marker=".", label=f"#{r['attempt']} {r.get('tweak', '')}"[:28])
    right.axhline(target, color="#cf222e", linestyle="--", linewidth=1)
    right.set(title="validation accuracy per epoch", xlabel="epoch", ylim=(0, 1.02))
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


SECRET_KEYS = ("SMTP_PASSWORD", "JENKINS_TOKEN", "JENKINS_BUILD_TOKEN", "NOTIFY_WEBHOOK_URL")


def redact(cfg: dict, text: str) -> str:
    """No credential in anything we write or send: the secret settings' values (and a
    webhook's path, its secret for Slack-style hooks) become ***, URL credentials too."""
    for key in SECRET_KEYS:
        value = str(cfg.get(key) or "")
        if value:
            text = text.replace(value, "***")
    path = urlsplit(str(cfg.get("NOTIFY_WEBHOOK_URL") or "")).path.rstrip("/")
    if len(path.strip("/")) >= 4:
        text = text.replace(path, "/***")
    return state.scrub(text)


FIXES = {  # what to do when a stage failed (its own line says what is wrong)
    "fetch": "check MODEL_REPO, MODEL_BRANCH and the repository's credentials, then run the pipeline again.",
    "detect": "fix the model script as the line says (a syntax error, or a framework tweakops cannot train: "
              "it trains Keras/TensorFlow and scikit-learn scripts), commit and push again.",
}
FIX_ANY = "fix what the line says, then push again (or run make pipeline)."


@dataclass
class Verdict:
    """How the run went, as every output says it."""
    kind: str                  # in progress, stage failed, failed, no result, target met, below target
    short: str                 # the report's verdict row
    subject: str               # the message's subject (notify.send adds the [tweakops] prefix)
    lines: list[str] = field(default_factory=list)   # what happened and what to do
    log: str = ""              # a failure's log: its last lines go with the message


def last_line(path: str | Path) -> str:
    try:
        return state.last_real_line(Path(path).read_text(errors="replace"))
    except OSError:
        return ""


def verdict(cfg: dict, run: dict, records: list[dict]) -> Verdict:
    target = cfg["TARGET_ACCURACY"]
    stage = run.get("FAILED_STAGE", "")
    branch = run.get("MODEL_BRANCH") or cfg.get("MODEL_BRANCH") or "?"
    commit = "" if stage == "fetch" else run.get("COMMIT", "")[:12]   # a failed fetch has no commit of its own
    where = f"{branch} @ {commit}" if commit else branch
    model = run.get("MODEL_FILE") or "the model"
    unpublished = [] if run.get("PUBLISHED_COMMIT") else ["Nothing was published."]
    status = run.get("STATUS", "")
    if status in attempts.IN_PROGRESS and stage in ("", "train"):   # killed, hung or running: no result yet
        attempt = run.get("ATTEMPT", "?")
        killed = f": {run['FAILURE']}" if stage == "train" and run.get("FAILURE") else "."
        return Verdict("in progress", f"attempt {attempt} {status}, not finished",
                       f"{where}: attempt {attempt} of {model} {status}, not finished",
                       [f"Attempt {attempt} of {model} on {where} is {status} and has not finished{killed}",
                        "The watchdog (make watchdog; Jenkins job 6) restarts it from its checkpoint; "
                        "the result is sent when the run ends. make status shows where it is."])
    if stage and stage != "publish":   # a failed publish is told with the run's result: not published, why
        line = run.get("FAILURE") or "(the stage wrote no error line; see its console output)"
        return Verdict("stage failed", f"{stage} failed: {line}", f"{where}: {stage} failed",
                       [f"The {stage} stage failed on {where}:", "", f"    {line}", "",
                        "What to do: " + FIXES.get(stage, FIX_ANY), *unpublished],
                       run.get("LOG", "") if stage == "train" else "")
    done = trained(records)
    scored = [r for r in done if r.get("accuracy") is not None]
    if not run.get("BEST_ACCURACY") and not scored:
        failed = next((r for r in reversed(done) if r.get("outcome") == "failed"), None)
        if failed is None and status not in ("failed", "oom"):
            return Verdict("no result", f"no result yet (status {status or 'none'})",
                           f"{where}: no result yet (status {status or 'none'})",
                           [f"No attempt of {model} on {where} has an accuracy yet (status {status or 'none'}).",
                            "What to do: make status shows where the run is; make pipeline runs it to the end."])
        attempt = failed["attempt"] if failed else run.get("ATTEMPT", "?")
        code = failed.get("exit_code") if failed else run.get("EXIT_CODE")
        log = str(state.state_dir(cfg) / failed["log"]) if failed and failed.get("log") else run.get("LOG", "")
        why = last_line(log) if log else ""
        code_text = f"exit {code}" if code not in (None, "") else status or "failed"
        if status == "oom" or str(code) == "137":
            fix = f"it ran out of memory: raise TRAIN_MEMORY (now {cfg.get('TRAIN_MEMORY', '?')}) or make the model smaller, then push again."
        else:
            fix = f"fix the error in {model}" + (f" (the last lines of its log follow; full log: {log})" if log else "") \
                + ", commit and push again."
        return Verdict("failed", f"failed ({code_text})" + (f": {why}" if why else ""),
                       f"{where}: {model} failed (attempt {attempt}, {code_text})",
                       [f"Attempt {attempt} of {model} on {where} failed ({code_text})" + (f": {why}" if why else "."),
                        "It has no accuracy, so nothing was tweaked and nothing was published.", "What to do: " + fix],
                       log)
    best = float(run["BEST_ACCURACY"]) if run.get("BEST_ACCURACY") else max(r["accuracy"] for r in scored)
    best_attempt = run.get("BEST_ATTEMPT") or next((r["attempt"] for r in scored if r["accuracy"] == best), "?")
    met = state.meets(best, target)
    error = (run.get("PUBLISH_ERROR") or (run.get("FAILURE", "") if stage == "publish" else "")).rstrip(".")
    lines = [f"{model} on {where} reached {'' if met else 'at best '}{best:.4f} (attempt {best_attempt}), "
             f"{'meeting' if met else 'below'} the target {target:.2f}, in {len(done)} attempt{'s' * (len(done) != 1)}."]
    confirmed = next((r for r in done if r.get("confirms") is not None and str(r["confirms"]) == str(best_attempt)
                      and isinstance(r.get("accuracy"), (int, float))), None)
    if confirmed is not None:   # the warm-started best, trained from scratch as the user will run it
        lines.append(f"Trained from scratch, as you will run it (attempt {confirmed['attempt']}): "
                     f"{confirmed['accuracy']:.4f}; that is the figure the published commit carries.")
    best_is_pushed = next((r.get("outcome") for r in done if str(r["attempt"]) == str(best_attempt)), "") == "baseline"
    if error:
        lines.append(f"The better source was NOT published: {error}. It is kept in "
                     f"{state.state_dir(cfg) / 'best' / Path(model).name}.")
    elif run.get("PUBLISHED_COMMIT"):
        lines.append(f"Published as {run['PUBLISHED_COMMIT'][:12]} on {run.get('PUBLISHED_BRANCH', '?')}.")
    elif best_is_pushed:
        lines.append("Nothing to publish: the pushed source is the best one.")
    else:
        lines.append(f"The better source (attempt {best_attempt}) is not published yet: run make publish.")
    if not met:
        lines.append(f"What to do: raise MAX_TWEAKS (now {cfg.get('MAX_TWEAKS', '?')}) or MAX_MINUTES, "
                     "lower TARGET_ACCURACY, or improve the model yourself and push again.")
    kind = "target met" if met else "below target"
    if error:
        subject = f"{where}: {model} reached {best:.4f} (target {target:.2f}{', met' if met else ''}), NOT published"
    elif met:
        subject = f"{where}: success, {model} reached {best:.4f} (target {target:.2f})"
    else:
        subject = f"{where}: {model} best {best:.4f}, below target {target:.2f}"
    return Verdict(kind, kind + (f"; NOT published: {error}" if error else ""), subject, lines)


def headline(cfg: dict, run: dict, records: list[dict], v: Verdict | None = None) -> list[tuple[str, str]]:
    v = v or verdict(cfg, run, records)
    best = run.get("BEST_ACCURACY")
    target = cfg["TARGET_ACCURACY"]
    training = sum(r.get("duration") or 0 for r in records)
    return [
        ("model", f"{run.get('MODEL_FILE', '?')} ({run.get('MODEL_TYPE', '?')})"),
        ("commit", f"{run.get('COMMIT', '')[:12]} → {run.get('PUBLISHED_COMMIT', '')[:12] or 'not published'}"),
        ("best accuracy", f"{float(best):.4f} (attempt {run.get('BEST_ATTEMPT')})" if best else "none"),
        ("target", f"{target:.2f}"),
        ("attempts", str(len(trained(records)))),
        ("wall time", f"{wall_time(trained(records)):.0f}s (training {training:.0f}s)"),
        ("verdict", v.short),
    ]


TABLE_HEADERS = ["attempt", "tweak", "accuracy", "Δ vs best", "time", "outcome", "restarts", "why"]


def table_cells(r: dict) -> list[str]:
    """One attempt as the report's table shows it (the terminal summary too)."""
    return ["—" if r.get("attempt") is None else str(r["attempt"]), r.get("tweak", ""), fmt(r.get("accuracy")), fmt(r["delta"], "+.4f"),
            f"{r.get('duration') or 0:.0f}s", r.get("outcome", ""), str(r.get("restarts", 0)),
            why(r)]


def why(r: dict) -> str:
    """Why the attempt was made: the parent's diagnosis and the move (search.py), and
    whether it started from the parent's weights."""
    text = str(r.get("why") or "")
    if r.get("warm_from") is not None:
        text += f"{'; ' if text else ''}warm-started from attempt {r['warm_from']}"
    if r.get("confirms") is not None:
        text = f"from-scratch retraining of attempt {r['confirms']}"
    return text


def markdown(head, table_rows, best_diff: str) -> str:
    out = ["## tweakops report", ""]
    out += [f"- **{k}**: {v}" for k, v in head]
    out += ["", "| " + " | ".join(TABLE_HEADERS) + " |", "|---" * len(TABLE_HEADERS) + "|"]
    out += ["| " + " | ".join(table_cells(r)) + " |" for r in table_rows]
    if best_diff:
        out += ["", "### The change kept", "", "```diff", best_diff.rstrip(), "```"]
    return "\n".join(out) + "\n"


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#1f2328}
h1{font-size:1.6em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;padding:4px 10px;text-align:left}
th{background:#f6f8fa}.kept{color:#1a7f37;font-weight:600}.reverted{color:#cf222e}.failed{color:#8250df}
.stopped-early{color:#bf8700}pre.diff{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px}
.add{color:#1a7f37;background:#e6ffec;display:block}.del{color:#cf222e;background:#ffebe9;display:block}
.hunk{color:#0969da;display:block}img{max-width:100%;border:1px solid #d0d7de}"""


def diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = ("add" if line.startswith("+") and not line.startswith("+++") else
               "del" if line.startswith("-") and not line.startswith("---") else
               "hunk" if line.startswith("@@") else "")
        text = html.escape(line)
        lines.append(f'<span class="{cls}">{text}</span>' if cls else text + "\n")
    return '<pre class="diff">' + "".join(lines) + "</pre>"


def page(head, table_rows, image: str, intro: list[str] = (), tail: str = "", links: bool = True) -> str:
    """The report page; `image` is the plot's src (a data: URI on disk, cid:accuracy.png in a mail)."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tweakops report</title><style>{CSS}</style></head><body>",
             "<h1>tweakops report</h1>"]
    parts += [f"<p>{e(line.strip())}</p>" for line in intro if line.strip()]
    if tail:
        parts.append(f"<h2>Last lines of the log</h2><pre class='diff'>{e(tail)}</pre>")
    if head:
        parts.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in head) + "</table>")
    if image:
        parts.append(f'<img alt="accuracy per attempt" src="{e(image)}">')
    if table_rows:
        parts.append("<h2>Attempts</h2><table><tr><th>attempt</th><th>tweak</th><th>accuracy</th><th>Δ vs best</th>"
                     "<th>time</th><th>outcome</th><th>restarts</th><th>why</th><th>log</th></tr>")
        for r in table_rows:
            cells = [f"<td>{e(cell)}</td>" for cell in table_cells(r)]
            cells[5] = f"<td class='{e(r.get('outcome', ''))}'>{e(r.get('outcome', ''))}</td>"
            log = f"<a href='../{e(r['log'])}'>log</a>" if r.get("log") and links else e(r.get("reason", ""))
            parts.append(f"<tr>{''.join(cells)}<td>{log}</td></tr>")
        parts.append("</table><h2>Changes</h2>")
        for r in table_rows:
            if r.get("diff"):
                parts.append(f"<h3>attempt {table_cells(r)[0]}: {e(r.get('tweak', ''))} — {e(r.get('outcome', ''))}</h3>")
                parts.append(diff_html(r["diff"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def best_change(cfg: dict, run: dict, records: list[dict]) -> str:
    """The change the best source makes to the pushed one (what publish.py commits); without
    the checkout, the diff of the last kept tweak."""
    model_file, commit = run.get("MODEL_FILE"), run.get("COMMIT")
    best = attempts.best_source(cfg, model_file or "-")
    checkout = Path(cfg.get("CHECKOUT_DIR") or "-")
    if model_file and commit and best.is_file() and (checkout / ".git").exists():
        proc = state.git(cfg, "show", f"{commit}:{model_file}", cwd=checkout, check=False)
        if proc.returncode == 0:
            import difflib

            return "".join(difflib.unified_diff(proc.stdout.splitlines(True), state.read_source(best).splitlines(True),
                                                f"a/{model_file}", f"b/{model_file}"))
    kept = [r for r in records if r.get("outcome") == "kept" and r.get("diff")]
    return kept[-1]["diff"] if kept else ""


def write(cfg: dict, run: dict, records: list[dict]) -> Path:
    """Write report/ (accuracy.png, summary.md, index.html); returns index.html."""
    v = verdict(cfg, run, records)
    head = headline(cfg, run, records, v)
    table_rows = rows(records)
    png = plot(cfg, records, cfg["TARGET_ACCURACY"])
    out = state.state_dir(cfg) / "report"
    state.atomic_write(out / "accuracy.png", png)
    state.atomic_write(out / "summary.md", redact(cfg, markdown(head, table_rows, best_change(cfg, run, records))))
    image = f"data:image/png;base64,{base64.b64encode(png).decode()}"
    state.atomic_write(out / "index.html", redact(cfg, page(head, table_rows, image)))
    return out / "index.html"


def fresh(cfg: dict) -> bool:
    """Is report/ there and newer than history.jsonl and run.env (written for this state)?"""
    out = state.state_dir(cfg) / "report"
    try:
        written = min((out / name).stat().st_mtime for name in ("summary.md", "accuracy.png", "index.html"))
    except OSError:
        return False
    sources = [p.stat().st_mtime for p in (state.history_path(cfg), state.run_env_path(cfg)) if p.exists()]
    return written >= max(sources, default=0)


LOG_TAIL = 40  # lines of a failure's log in the message


def log_tail(path: str | Path, lines: int = LOG_TAIL) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Message:
    subject: str               # without the [tweakops] prefix
    text: str
    html: str
    attachments: list[Path]    # accuracy.png: the HTML shows it as cid:accuracy.png
    kind: str                  # Verdict.kind
    to: list[str]              # besides MAIL_TO: a failure's commit author


def author(run: dict) -> list[str]:
    """The address in COMMIT_AUTHOR (`Name <addr>`, written by fetch), if it has one."""
    from email.utils import getaddresses

    return [addr for _, addr in getaddresses([run.get("COMMIT_AUTHOR", "")]) if "@" in addr]


def message(cfg: dict, note: str = "", log: str | Path | None = None) -> Message:
    """The run's notification: the verdict and what to do, a failure's log tail, then the
    report (written first when stale): text = summary.md, html = the page with the plot inlined.
    `note` goes first (e.g. what the watchdog saw); `log` replaces the failure's log. A failure
    goes to the pushed commit's author too (not a failed fetch's: its COMMIT_AUTHOR is the old run's)."""
    run = state.read_run(cfg)
    records = [] if run.get("FAILED_STAGE") == "fetch" else run_records(cfg, run)  # a failed fetch: the old run's
    v = verdict(cfg, run, records)
    log = str(log or v.log)
    tail = log_tail(log) if log else ""
    text = [note] if note else []
    text.append("\n".join(v.lines))
    if tail:
        text.append(f"Last lines of {Path(log).name}:\n\n{tail}")
    head, table_rows, attachments, image = [], [], [], ""
    if records:
        head, table_rows = headline(cfg, run, records, v), rows(records)
        text.append(markdown(head, table_rows, best_change(cfg, run, records)))   # what summary.md holds
        try:
            if not fresh(cfg):
                write(cfg, run, records)
            attachments, image = [state.state_dir(cfg) / "report" / "accuracy.png"], "cid:accuracy.png"
        except Exception as exc:  # a report that cannot be drawn never costs the message
            state.warn(f"could not write the report ({redact(cfg, str(exc))}); the message goes without the plot")
    intro = ([note] if note else []) + v.lines
    return Message(redact(cfg, v.subject), redact(cfg, "\n\n".join(t.rstrip() for t in text) + "\n"),
                   redact(cfg, page(head, table_rows, image, intro, tail, links=False)), attachments, v.kind,
                   author(run) if v.kind in ("stage failed", "failed") and run.get("FAILED_STAGE") != "fetch" else [])


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1200,1600"]


def screenshot(index: Path, shot: Path, timeout: int = 120) -> Path:
    """Render `index` in headless Chromium to `shot`; raise if chromium is absent or the page is blank."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise state.TweakopsError("chromium is not installed: apt-get install chromium (make system-deps), then make report-check")
    if not index.exists():
        raise state.TweakopsError(f"no report at {index}: run make report first")
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="tweakops-chromium-") as profile:
        try:
            result = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                                     index.resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise state.TweakopsError(f"chromium did not render {index} in {timeout}s; try again or run it by hand")
    if not shot.exists():
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise state.TweakopsError(f"chromium wrote no screenshot (exit {result.returncode}: {tail})")
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    if colours is None or len(colours) < 2:
        raise state.TweakopsError(f"the report renders blank in chromium ({shot}); open {index} and look")
    state.info(f"report renders: {len(colours)} colours in {shot.name}")
    return shot


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the run report (index.html, summary.md, accuracy.png).")
    parser.add_argument("--check", action="store_true",
                        help="render index.html in headless chromium to report/screenshot.png and check it is not blank")
    args = parser.parse_args(argv)
    cfg = state.config()
    if args.check:
        out = state.state_dir(cfg) / "report"
        print(screenshot(out / "index.html", out / "screenshot.png"))
        return state.EXIT_OK
    run = state.read_run(cfg)
    records = run_records(cfg, run)
    if not records:
        raise state.TweakopsError("nothing to report yet: no attempt in this run; run make train accuracy first")
    state.banner("report", f"{len(trained(records))} attempts")
    print(write(cfg, run, records))
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
