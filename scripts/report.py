"""The run report: every attempt, its change and its accuracy, on one page.

Writes STATE_DIR/report/:
  index.html    self-contained (inline CSS, the plot embedded as a PNG, no network)
  summary.md    the same story in Markdown, for a mail body, a commit or a PR comment
  accuracy.png  accuracy per attempt against the target (outcomes marked), and the
                per-epoch validation curves of the attempts

With --check (make report-check) it renders index.html in headless Chromium (Debian's
`chromium`) to STATE_DIR/report/screenshot.png and fails if the page came out blank.

Reads:  run.env, history.jsonl (the current run: RUN_ID), metrics/attempt-N.json
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
import sys
import tempfile
from pathlib import Path

import state

MARKERS = {  # outcome -> (matplotlib marker, colour)
    "baseline": ("s", "#555555"), "kept": ("o", "#1a7f37"), "reverted": ("x", "#cf222e"),
    "failed": ("X", "#8250df"), "stopped-early": ("v", "#bf8700"), "cached": ("D", "#0969da"),
}
PLOT_SIZE = (9.0, 4.0)  # inches at 100 dpi: a 900x400 PNG


def run_records(cfg: dict, run: dict) -> list[dict]:
    return [r for r in state.read_history(cfg) if r.get("run") == run.get("RUN_ID")]


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


def headline(cfg: dict, run: dict, records: list[dict]) -> list[tuple[str, str]]:
    best = run.get("BEST_ACCURACY")
    target = cfg["TARGET_ACCURACY"]
    met = best is not None and float(best) >= target
    training = sum(r.get("duration") or 0 for r in records)
    return [
        ("model", f"{run.get('MODEL_FILE', '?')} ({run.get('MODEL_TYPE', '?')})"),
        ("commit", f"{run.get('COMMIT', '')[:12]} → {run.get('PUBLISHED_COMMIT', '')[:12] or 'not published'}"),
        ("best accuracy", f"{float(best):.4f} (attempt {run.get('BEST_ATTEMPT')})" if best else "none"),
        ("target", f"{target:.2f}"),
        ("attempts", str(len(trained(records)))),
        ("wall time", f"{wall_time(trained(records)):.0f}s (training {training:.0f}s)"),
        ("verdict", "target met" if met else "below target"),
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


def page(head, table_rows, png: bytes) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tweakops report</title><style>{CSS}</style></head><body>",
             "<h1>tweakops report</h1><table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in head]
    parts.append("</table>")
    parts.append(f'<img alt="accuracy per attempt" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    parts.append("<h2>Attempts</h2><table><tr><th>attempt</th><th>tweak</th><th>accuracy</th><th>Δ vs best</th>"
                 "<th>time</th><th>outcome</th><th>restarts</th><th>why</th><th>log</th></tr>")
    for r in table_rows:
        cells = [f"<td>{e(cell)}</td>" for cell in table_cells(r)]
        cells[5] = f"<td class='{e(r.get('outcome', ''))}'>{e(r.get('outcome', ''))}</td>"
        log = f"<a href='../{e(r['log'])}'>log</a>" if r.get("log") else e(r.get("reason", ""))
        parts.append(f"<tr>{''.join(cells)}<td>{log}</td></tr>")
    parts.append("</table><h2>Changes</h2>")
    for r in table_rows:
        if r.get("diff"):
            parts.append(f"<h3>attempt {table_cells(r)[0]}: {e(r.get('tweak', ''))} — {e(r.get('outcome', ''))}</h3>")
            parts.append(diff_html(r["diff"]))
    parts.append("</body></html>")
    return "\n".join(parts)


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
    table_rows = rows(records)
    head = headline(cfg, run, records)
    png = plot(cfg, records, cfg["TARGET_ACCURACY"])
    kept = [r for r in records if r.get("outcome") == "kept" and r.get("diff")]
    out = state.state_dir(cfg) / "report"
    state.atomic_write(out / "accuracy.png", png)
    state.atomic_write(out / "summary.md", markdown(head, table_rows, kept[-1]["diff"] if kept else ""))
    state.atomic_write(out / "index.html", page(head, table_rows, png))
    print(out / "index.html")
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
