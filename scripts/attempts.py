"""One home for the attempt record: its statuses, its files, its number, its history
record, the best source and reverting to it.

Every stage that numbers, books or reverts an attempt does it through here; none
builds these paths or filters the history by hand (docs/architecture.md: STATE_DIR,
run.env keys, history.jsonl).

  STATUS values     FETCHED … TIMEOUT; RESTARTABLE: what the watchdog restarts
  OUTCOME values    BASELINE, KEPT, REVERTED, …
  files(n)          the attempt's files, relative to STATE_DIR
  next_number(cfg)  one more than any attempt the history or STATE_DIR knows of
  this_run(…)       the current run's records (RUN_ID)
  new_record(…)     the fields every history record has
  best_source(…)    STATE_DIR/best/<name of MODEL_FILE>; revert_to_best(…)
  model_path(…)     MODEL_FILE inside the checkout, or one line and exit 2
"""

from __future__ import annotations

import re
from pathlib import Path

import state

# run.env STATUS
FETCHED = "fetched"
DETECTED = "detected"
TWEAKED = "tweaked"
RUNNING = "running"
TRAINED = "trained"
FAILED = "failed"
REVERTED = "reverted"
CRASHED = "crashed"      # killed from outside: the watchdog restarts it from its checkpoint
HUNG = "hung"            # no progress for HEARTBEAT_TIMEOUT: stopped, restarted like a crash
OOM = "oom"              # over TRAIN_MEMORY: never restarted into the same wall
TIMEOUT = "timeout"      # ran past TRAIN_TIMEOUT: stopped, booked as failed
IN_PROGRESS = (RUNNING, CRASHED, HUNG)
RESTARTABLE = (CRASHED, HUNG)

# history.jsonl outcome
TRAINED_OUTCOME = "trained"   # trained, not booked yet (parse_accuracy books it)
BASELINE = "baseline"
KEPT = "kept"
REVERTED_OUTCOME = "reverted"
FAILED_OUTCOME = "failed"
STOPPED_EARLY = "stopped-early"
CACHED = "cached"
BUILD_FAILED = "build-failed"
CONFIRMATION = "confirmation"

_KINDS = {
    "log": "logs/attempt-{n}.log",
    "metrics": "metrics/attempt-{n}.json",
    "result": "results/attempt-{n}.json",
    "checkpoints": "checkpoints/attempt-{n}",
    "weights": "weights/attempt-{n}.weights.h5",
}
_NUMBERED = re.compile(r"attempt-(\d+)(?:\.|$)")


def files(n: int) -> dict[str, str]:
    """The attempt's files, relative to STATE_DIR."""
    return {kind: pattern.format(n=n) for kind, pattern in _KINDS.items()}


def next_number(cfg: dict, history: list[dict] | None = None) -> int:
    """One more than any attempt the history, run.env or STATE_DIR's files know of: a
    number is never used twice, so nothing of an earlier attempt is ever overwritten
    (also after a torn history line lost a record)."""
    history = state.read_history(cfg) if history is None else history
    seen = [r.get("attempt") for r in history if isinstance(r.get("attempt"), int)]
    run = state.read_run(cfg)
    if str(run.get("ATTEMPT", "")).isdigit():
        seen.append(int(run["ATTEMPT"]))
    sd = state.state_dir(cfg)
    for folder in ("logs", "metrics", "results", "checkpoints", "weights"):
        if (sd / folder).is_dir():
            for path in (sd / folder).iterdir():
                match = _NUMBERED.match(path.name)
                if match:
                    seen.append(int(match.group(1)))
    return max([0, *seen]) + 1


def this_run(run: dict, history: list[dict]) -> list[dict]:
    """The records of the current run (run.env RUN_ID); all of them when there is none."""
    if not run.get("RUN_ID"):
        return list(history)
    return [r for r in history if r.get("run") == run["RUN_ID"]]


def new_record(run: dict, attempt: int | None, **fields: object) -> dict:
    """A history record with the fields every record has; `fields` add or override."""
    record = {
        "attempt": attempt, "run": run.get("RUN_ID", ""), "commit": run.get("COMMIT", ""),
        "tweak": run.get("TWEAK") or "baseline", "rule": run.get("TWEAK_RULE", ""),
        "source_hash": "", "diff": "", "accuracy": None, "duration": 0.0, "exit_code": 0,
        "outcome": TRAINED_OUTCOME, "restarts": int(run.get("RESTARTS") or 0),
        "started_at": run.get("STARTED_AT") or state.now_iso(),
    }
    if attempt is not None:
        record.update(log=files(attempt)["log"], metrics=files(attempt)["metrics"])
    record.update(fields)
    return record


def best_dir(cfg: dict) -> Path:
    return state.state_dir(cfg) / "best"


def best_source(cfg: dict, model_file: str) -> Path:
    """Where the best source so far is kept: STATE_DIR/best/<name of MODEL_FILE>."""
    return best_dir(cfg) / Path(model_file).name


def model_path(cfg: dict, model_file: str) -> Path:
    """MODEL_FILE in the checkout; a path that leaves the checkout (`..`, absolute, a
    symlink out) is refused: tweakops edits that file in place."""
    checkout = Path(cfg["CHECKOUT_DIR"]).resolve()
    if not model_file:
        raise state.TweakopsError("no MODEL_FILE recorded; run make fetch detect first")
    path = (checkout / model_file).resolve()
    if path != checkout and checkout in path.parents:
        return Path(cfg["CHECKOUT_DIR"]) / model_file
    raise state.TweakopsError(f"MODEL_FILE={model_file} is outside the checkout {checkout}; give the entry "
                              "script's path relative to the model repository's root")


def revert_to_best(cfg: dict, run: dict) -> bool:
    """Put the best source back into the checkout; False when there is none yet."""
    best = best_source(cfg, run["MODEL_FILE"])
    if not best.is_file():
        return False
    state.atomic_write(model_path(cfg, run["MODEL_FILE"]), best.read_bytes())
    return True


def within_state(cfg: dict, value: str | None) -> Path | None:
    """A path recorded in run.env (LOG, METRICS, RESULT), only when it lies in STATE_DIR:
    a hand-edited run.env never makes a stage read or archive a file elsewhere."""
    if not value:
        return None
    sd = state.state_dir(cfg).resolve()
    path = Path(value)
    path = path if path.is_absolute() else sd / path
    return path if sd in path.resolve().parents else None


def heartbeat_age(cfg: dict, run: dict) -> float:
    """Seconds since the attempt last made progress: its heartbeat (the harness beats
    only while batches advance or the script uses CPU), else the attempt's start."""
    import datetime as dt
    import time

    times = []
    try:
        parts = (state.state_dir(cfg) / "heartbeat").read_text().split()
        if parts and parts[0] == run.get("ATTEMPT"):
            times.append(float(parts[3]))
    except (OSError, ValueError, IndexError):
        pass
    if run.get("STARTED_AT"):
        try:
            times.append(dt.datetime.fromisoformat(run["STARTED_AT"]).timestamp())
        except ValueError:
            pass
    return time.time() - max(times) if times else float("inf")
