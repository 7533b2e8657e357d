"""Job 3: read the attempt's accuracy, keep it if it is the best, and say if the target is met.

The accuracy comes from the harness's metrics file (what the script's own
`evaluate`/`accuracy_score` computed, else the last validation accuracy). Without
one — a script run by other means, an old log — the log is parsed: Keras progress
lines with `\\r` and colour codes, `val_accuracy: 0.9123`, `Accuracy: 93.5%`,
`accuracy = 0.93`, `test acc 0.93`… A held-out figure (val/test/validation/eval) is
always preferred to a training one; percentages become fractions.

Then the attempt is booked: its history line gets the accuracy and an outcome —
`baseline` (the first of a run), `kept` (better than the best: the source is copied
to STATE_DIR/best/), `reverted` (not better: the checkout goes back to the best
source), `stopped-early` (the harness stopped a hopeless attempt) or `confirmation` (a
from-scratch retraining of a warm-started best, scripts/confirm.py: it changes no best).

Reads:  run.env (ATTEMPT, METRICS, LOG), TARGET_ACCURACY, history.jsonl
Writes: run.env ACCURACY, ACCURACY_SOURCE, BEST_ACCURACY, BEST_ATTEMPT; history; best/
Exit:   0 the best accuracy meets TARGET_ACCURACY; 3 below it;
        2 no accuracy found (the line says what was looked for)

    $ make accuracy
    $ python scripts/parse_accuracy.py --log path/to/train.log   # parse a log alone
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import attempts
import state

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)"
HELD_OUT = re.compile(
    r"\b(?:val|validation|test|testing|eval|evaluation|held[-_ ]?out)[-_ ]?(?:set[-_ ]?)?"
    r"(?:acc|accuracy)\b\s*(?:[:=]|is)?\s*" + NUMBER, re.IGNORECASE)
ANY = re.compile(r"\b(?:acc|accuracy)\b\s*(?:[:=]|is)?\s*" + NUMBER, re.IGNORECASE)


def _fraction(value: str, percent: str) -> float | None:
    number = float(value)
    if percent or 1 < number <= 100:
        number /= 100
    return number if 0 <= number <= 1 else None


def parse_log(text: str) -> tuple[float, str] | None:
    """The accuracy a log reports: the last held-out figure, else the last figure at all."""
    lines = [ANSI.sub("", part) for part in re.split(r"[\r\n]+", text)]
    for pattern, source in ((HELD_OUT, "log:held-out"), (ANY, "log")):
        found = None
        for line in lines:
            for match in pattern.finditer(line):
                if pattern is ANY and HELD_OUT.search(line[max(0, match.start() - 12):match.end()]):
                    continue  # "val_accuracy" seen by the generic pattern: already counted
                value = _fraction(*match.groups())
                if value is not None:
                    found = (value, source)
        if found:
            return found
    return None


def read_accuracy(metrics: Path | None, log: Path | None) -> tuple[float, str]:
    if metrics and metrics.exists():
        try:
            data = json.loads(metrics.read_text())
        except ValueError:
            data = {}
        if data.get("accuracy") is not None:
            return float(data["accuracy"]), data.get("accuracy_source") or "metrics"
    if log and log.exists():
        found = parse_log(log.read_text(errors="replace"))
        if found:
            return found
    where = " or ".join(str(p) for p in (metrics, log) if p) or "no metrics file or log"
    raise state.TweakopsError(
        f"no accuracy found in {where} (looked for the harness metrics, then 'val_accuracy', "
        "'test acc', 'Accuracy: 93.5%' … in the log); make the script print its accuracy")


def book(cfg: dict, run: dict, attempt: int, accuracy: float | None, stopped_early: bool) -> dict:
    """Set the attempt's outcome; keep its source as the best or put the best back."""
    records = [r for r in state.read_history(cfg) if r.get("attempt") == attempt]
    if not records:
        raise state.TweakopsError(f"history has no attempt {attempt}; run make train first")
    record = records[-1]
    if record.get("outcome") not in ("trained", "failed"):
        return record  # booked already (make accuracy run twice): nothing changes
    checkout = attempts.model_path(cfg, run["MODEL_FILE"])
    best_dir = attempts.best_dir(cfg)
    best = attempts.best_source(cfg, run["MODEL_FILE"])
    best_accuracy = float(run["BEST_ACCURACY"]) if run.get("BEST_ACCURACY") else None
    same_run_best = best.exists() and best_accuracy is not None
    if record.get("confirms") is not None:
        # a from-scratch retraining of a warm-started best: it says what the published
        # source gives as the user will run it; it never changes the best
        outcome = "failed" if record["outcome"] == "failed" else "confirmation"
        state.update_history(cfg, attempt, accuracy=accuracy, outcome=outcome)
        record.update(accuracy=accuracy, outcome=outcome)
        return record
    if record["outcome"] == "failed":
        outcome = "failed"
    elif not same_run_best:
        outcome = "baseline"
    elif accuracy is not None and accuracy > best_accuracy and not stopped_early:
        outcome = "kept"
    else:
        outcome = "stopped-early" if stopped_early else "reverted"
    if record.get("cached_from") and outcome in ("kept", "reverted"):
        outcome = "cached"
    with state.locked(cfg, "best.lock"):
        if outcome in ("baseline", "kept"):
            best_dir.mkdir(parents=True, exist_ok=True)
            state.atomic_write(best, checkout.read_bytes())
            state.write_env(best_dir / "best.env", {"ATTEMPT": attempt, "ACCURACY": accuracy,
                                                    "SOURCE_HASH": record.get("source_hash", "")})
            state.update_run(cfg, BEST_ACCURACY=accuracy, BEST_ATTEMPT=attempt)
        elif best.exists():
            state.atomic_write(checkout, best.read_bytes())
    state.update_history(cfg, attempt, accuracy=accuracy, outcome=outcome)
    record.update(accuracy=accuracy, outcome=outcome)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="parse this log alone: print the accuracy, write nothing")
    args = parser.parse_args(argv)
    if args.log:
        accuracy, source = read_accuracy(None, Path(args.log))
        print(f"{accuracy:.4f}")
        state.info(f"from {source}")
        return state.EXIT_OK

    cfg = state.config()
    state.hold_run(cfg, "accuracy")
    run = state.read_run(cfg)
    if not run.get("ATTEMPT"):
        raise state.TweakopsError("no attempt trained yet; run make train first")
    attempt = int(run["ATTEMPT"])
    state.banner("accuracy", f"attempt {attempt}")
    target = cfg["TARGET_ACCURACY"]
    metrics = attempts.within_state(cfg, run.get("METRICS"))
    log = attempts.within_state(cfg, run.get("LOG"))
    stopped_early = False
    if run.get("STATUS") in (attempts.FAILED, attempts.REVERTED, attempts.CRASHED, attempts.OOM, attempts.TIMEOUT):
        accuracy, source = None, "failed"
    else:
        accuracy, source = read_accuracy(metrics, log)
        if metrics and metrics.exists():
            try:
                data = json.loads(metrics.read_text())
            except ValueError:
                data = {}
            stopped_early = bool(data.get("stopped_early"))
            if data.get("diverged"):
                state.warn(f"attempt {attempt}: the loss became NaN at epoch {data['diverged']} (the training "
                           "diverged); a smaller learning rate usually fixes it, the next tweak tries one")
    record = book(cfg, run, attempt, accuracy, stopped_early)
    run = state.update_run(cfg, ACCURACY=accuracy, ACCURACY_SOURCE=source)
    best = float(run["BEST_ACCURACY"]) if run.get("BEST_ACCURACY") else None
    shown = "none (the attempt failed)" if accuracy is None else f"{accuracy:.4f} ({source})"
    state.info(f"attempt {attempt}: accuracy {shown}, {record['outcome']}; "
               f"best {best if best is None else f'{best:.4f}'}, target {target:.2f}")
    if accuracy is not None:
        print(f"{accuracy:.4f}")
    if state.meets(best, target):
        state.info(f"target met: {best:.4f} >= {target:.2f}")
        return state.EXIT_OK
    if best is None:
        raise state.TweakopsError(f"attempt {attempt} failed and there is no earlier result; see {log}", state.EXIT_TRAINING_FAILED)
    state.info(f"below target: {best:.4f} < {target:.2f}")
    return state.EXIT_BELOW_TARGET


if __name__ == "__main__":
    state.main(main)
