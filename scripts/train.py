"""Jobs 2-3: train the checked-out model, unmodified, with the configured runner.

The runner starts the harness (scripts/harness.py) on MODEL_FILE with DATA_DIR
mounted; the harness adds the callbacks that write the metrics file, the heartbeat
and the BackupAndRestore checkpoint. The output goes to STATE_DIR/logs/attempt-N.log
and is followed live on the console. At the end one line per attempt is appended to
history.jsonl (so a killed attempt is never counted twice).

A tweaked attempt that fails (a crash of the new code) is recorded as failed, the
checkout is put back to the best source, and the exit is 3 ("still below target") so
the loop tries another tweak. One that fails before its first training step ended (a
shape error; a scikit-learn estimator refusing a parameter: the harness's result says
build-failed) is not even an attempt: booked
`build-failed` (attempt null, no MAX_TWEAKS tweak spent), its log kept as
logs/build-<hash>.log, exit 3 as well. The baseline failing is exit 4.

Reads:  run.env (MODEL_FILE, MODEL_TYPE, IMAGE, STATUS, TWEAK…), DATA_DIR, RUNNER, SEED
Writes: run.env (ATTEMPT, STATUS, PID/CONTAINER, EXIT_CODE, DURATION, LOG, METRICS),
        logs/attempt-N.log, metrics/attempt-N.json, history.jsonl
Exit:   0 trained; 2 bad input (data, state); 3 a tweak failed and was reverted;
        4 the script failed; 5 the runner failed; 1 killed (the watchdog restarts it)

    $ make train
    $ python scripts/train.py --resume      # re-run the current attempt (the watchdog)
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import os
import shutil
import sys
import time
from pathlib import Path

import attempts
import diagnose
import jobs
import runners
import state

LOG_TAIL = 20


def unified_diff(old: str, new: str, name: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{name}", f"b/{name}"))


class Stopped(Exception):
    """follow() stopped the attempt: `status` (attempts.HUNG, attempts.TIMEOUT) and why."""

    def __init__(self, status: str, why: str):
        super().__init__(why)
        self.status = status


def follow(log: Path, offset: int, runner: runners.Runner, fields: dict, cfg: dict, until: float | None) -> int:
    """Copy the log to stdout as it grows until the run ends; return the exit code.

    The attempt is stopped when it makes no progress for HEARTBEAT_TIMEOUT seconds
    (Stopped(HUNG)) or runs past `until`, the end of its TRAIN_TIMEOUT (Stopped(TIMEOUT))."""
    out = sys.stdout.buffer
    with open(log, "rb") as f:
        f.seek(offset)
        checked = 0.0
        while True:
            chunk = f.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not runner.alive(fields):
                break
            if time.time() - checked > 1:
                checked = time.time()
                stop = overdue(cfg, until)
                if stop is not None:
                    runner.stop(fields)
                    out.write(f.read())
                    out.flush()
                    raise stop
            runner.pause(fields, 0.2)
        code = runner.wait(fields)
        out.write(f.read())
        out.flush()
    return code


def overdue(cfg: dict, until: float | None) -> Stopped | None:
    run = state.read_run(cfg)
    if until is not None and time.time() > until:
        return Stopped(attempts.TIMEOUT, f"ran past TRAIN_TIMEOUT={cfg['TRAIN_TIMEOUT']}s and was stopped; "
                                        "raise TRAIN_TIMEOUT or make the script train faster")
    age = attempts.heartbeat_age(cfg, run)
    if cfg["HEARTBEAT_TIMEOUT"] and age > cfg["HEARTBEAT_TIMEOUT"]:
        return Stopped(attempts.HUNG, f"is hung: no progress for {age:.0f}s (HEARTBEAT_TIMEOUT="
                                     f"{cfg['HEARTBEAT_TIMEOUT']}); stopped it")
    return None


def show_tail(log: Path, shown_as: Path | None = None) -> str:
    """Print the log's last lines to stderr (under the name `shown_as`, where the log is
    about to move) and return them ("" for no log)."""
    tail = log_tail(log)
    if tail:
        print(f"--- last lines of {shown_as or log} ---\n{tail}\n---", file=sys.stderr)
    return tail


def log_tail(log: Path, lines: int = LOG_TAIL) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def trained_before(cfg: dict, source_hash: str) -> dict | None:
    """The last attempt that trained exactly this source (comments and formatting aside)."""
    for record in reversed(state.read_history(cfg)):
        if record.get("source_hash") == source_hash and record.get("accuracy") is not None:
            return record
    return None


def reuse(cfg: dict, run: dict, attempt: int, tweak: str, source: str, cached: dict) -> int:
    """Never train the same source twice: book the earlier result as this attempt."""
    state.banner("train", f"attempt {attempt}: this source was trained in attempt {cached['attempt']} "
                 f"(accuracy {cached['accuracy']:.4f}); not training it again (--force does)")
    sd = state.state_dir(cfg)
    record = attempts.new_record(run, attempt, source_hash=cached["source_hash"], tweak=tweak or "baseline",
                                 rule="", parent=None, runner="cache", cached_from=cached["attempt"], restarts=0,
                                 log=cached.get("log", ""), metrics=cached.get("metrics", ""),
                                 started_at=state.now_iso())
    state.append_history(cfg, record)
    state.update_run(cfg, ATTEMPT=attempt, STATUS=attempts.TRAINED, RUNNER="cache", EXIT_CODE=0, DURATION=0,
                     LOG=str(sd / record["log"]) if record["log"] else None,
                     METRICS=str(sd / record["metrics"]) if record["metrics"] else None,
                     ACCURACY=None, ACCURACY_SOURCE=None, TWEAK=tweak or None, RESTARTS=0)
    return state.EXIT_OK


def parent_of(run: dict) -> int | None:
    """The attempt a tweak starts from: TWEAK_PARENT (a round's candidates share one),
    else the best so far."""
    for key in ("TWEAK_PARENT", "BEST_ATTEMPT"):
        if str(run.get(key) or "").isdigit():
            return int(run[key])
    return None


def warm_start(cfg: dict, run: dict, tweaked: bool) -> tuple[Path | None, int | None]:
    """The parent's trained weights a tweak starts from, and the epoch to continue at.

    WARM_START: an epochs-only tweak continues from the parent's weights at the epoch the
    parent reached (the same model trained longer: only the new epochs are trained).
    WARM_LAYERS: an architecture change starts from the parent's matching layers too;
    faster, but its accuracy then owes something to the parent's training, so the
    winner is retrained from scratch before publishing (confirm.py). Off by default:
    measured on the benchmark's mlp_digits, a source found that way gave 0.91
    warm-started and 0.55 from scratch. (None, None): a fresh start."""
    parent = parent_of(run)
    if not cfg["WARM_START"] or not tweaked or parent is None:
        return None, None
    sd = state.state_dir(cfg)
    weights = sd / runners.weights_path(parent)
    if not weights.is_file():
        return None, None
    if (run.get("TWEAK_MOVE") or run.get("TWEAK_RULE")) not in ("epochs", "epochs:bold"):
        return (weights if cfg["WARM_LAYERS"] else None), None
    trained = diagnose.epochs_trained(diagnose.load(sd / f"metrics/attempt-{parent}.json"))
    return weights, trained or None


def deadline(cfg: dict, run: dict) -> float | None:
    """When MAX_MINUTES ends (unix time): the harness stops a fit there, best epoch kept."""
    try:
        started = dt.datetime.fromisoformat(run["RUN_STARTED_AT"])
    except (KeyError, ValueError):
        return None
    return started.timestamp() + cfg["MAX_MINUTES"] * 60


def discard_unbuilt(cfg: dict, run: dict, job: jobs.Job, source: str, code: int, duration: float) -> int:
    """A tweak that failed before its first training step ended (the harness's result
    says build-failed: the model does not build, or its first step does not run) is not
    an attempt: booked `build-failed` with attempt null, so neither its source nor its
    move on this parent comes back and no MAX_TWEAKS tweak is spent. Its log is kept as
    logs/build-<source hash>.log, the attempt's other files go (its number is used again),
    ATTEMPT is what it was and the checkout holds the best source again. Exit 3: the
    loop tweaks again."""
    sd = state.state_dir(cfg)
    digest = state.source_hash(source)
    log = f"logs/build-{digest[:12]}.log"
    tail = show_tail(job.log, sd / log)
    if job.log.exists():
        os.replace(job.log, sd / log)
    for kind in ("metrics", "result", "weights"):
        (sd / job.state_path(kind)).unlink(missing_ok=True)
    shutil.rmtree(sd / job.state_path("checkpoints"), ignore_errors=True)
    best_path = attempts.best_source(cfg, run["MODEL_FILE"])
    best = state.read_source(best_path) if best_path.exists() else ""
    reason = f"does not build (exit {code}): {state.last_real_line(tail)}"
    state.append_history(cfg, attempts.new_record(
        run, None, outcome=attempts.BUILD_FAILED, tweak=run.get("TWEAK", ""), rule=run.get("TWEAK_RULE", ""),
        move=run.get("TWEAK_MOVE") or run.get("TWEAK_RULE", ""), why=run.get("TWEAK_WHY", ""),
        diagnosis=run.get("TWEAK_DIAGNOSIS", ""), parent=parent_of(run), source_hash=digest,
        diff=unified_diff(best, source, run["MODEL_FILE"]), reason=reason, duration=duration, exit_code=code,
        log=log, started_at=state.read_run(cfg).get("STARTED_AT") or state.now_iso(), restarts=0))
    attempts.revert_to_best(cfg, run)
    state.update_run(cfg, ATTEMPT=run.get("ATTEMPT"), STATUS=attempts.REVERTED, EXIT_CODE=code, DURATION=duration,
                     LOG=str(sd / log), METRICS=None, RESULT=None, PID=None, PID_START=None, CONTAINER=None,
                     FAILURE_REASON=attempts.BUILD_FAILED)
    state.warn(f"tweak {run.get('TWEAK', '')!r} {reason}; discarded without spending an attempt, "
               "reverted to the best source")
    return state.EXIT_BELOW_TARGET


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true", help="re-run the current attempt, resuming from its checkpoint")
    parser.add_argument("--force", action="store_true", help="train even when this source was trained before")
    parser.add_argument("--confirm", type=int, metavar="N",
                        help="retrain attempt N's source (the checkout holds it) from scratch: no warm start, "
                             "no time cap; booked as its confirmation (scripts/confirm.py)")
    args = parser.parse_args(argv)
    cfg = state.config()
    state.hold_run(cfg, "train", wait=60 if args.resume else None)
    run = state.read_run(cfg)
    if not run.get("MODEL_FILE") or not run.get("MODEL_TYPE"):
        raise state.TweakopsError("no model detected yet; run make fetch detect first")
    model_file = run["MODEL_FILE"]
    source_path = attempts.model_path(cfg, model_file)
    if not source_path.is_file():
        raise state.TweakopsError(f"{source_path} not found; run make fetch detect first")
    sd = state.state_dir(cfg)

    if args.resume:
        if not run.get("ATTEMPT"):
            raise state.TweakopsError("no attempt to resume; run make train")
        attempt = int(run["ATTEMPT"])
        restarts = int(run.get("RESTARTS") or 0)
    else:
        attempt = attempts.next_number(cfg)   # never an earlier attempt's number: nothing is overwritten
        restarts = 0
    tweaked = run.get("STATUS") == attempts.TWEAKED or (args.resume and bool(run.get("TWEAK")))
    tweak = run.get("TWEAK", "") if tweaked else ""
    confirms = args.confirm if args.confirm is not None else (
        int(run["CONFIRMS"]) if args.resume and str(run.get("CONFIRMS") or "").isdigit() else None)
    if confirms is not None:
        tweaked, tweak = False, f"confirmation of attempt {confirms} (from scratch)"

    runner = runners.get(cfg["RUNNER"], cfg)
    best_path = attempts.best_source(cfg, model_file)
    best_attempt = run.get("BEST_ATTEMPT")
    # the hopeless-attempt stop compares with the best's curve; never for a confirmation
    # (the best's curve may owe its height to a warm start)
    reference = sd / attempts.files(int(best_attempt))["metrics"] if str(best_attempt or "").isdigit() \
        and confirms is None else None
    job = jobs.job_for(cfg, run, attempt, reference if reference is not None and reference.exists() else None)
    job.warm_from, job.warm_epochs = warm_start(cfg, run, tweaked)
    job.deadline = deadline(cfg, run) if confirms is None else None

    source = state.read_source(source_path)
    if not args.resume and not args.force and confirms is None:
        cached = trained_before(cfg, state.source_hash(source))
        if cached is not None:
            return reuse(cfg, run, attempt, tweak, source, cached)
    what = f"attempt {attempt}" + (f" ({tweak})" if tweak else "") + (f", restart {restarts}" if args.resume else "")
    state.banner("train", f"{what} of {model_file} [{run['MODEL_TYPE']}] with the {runner.name} runner")
    job.log.parent.mkdir(parents=True, exist_ok=True)
    offset = job.log.stat().st_size if job.log.exists() else 0
    started = time.time()
    before = float(run.get("DURATION") or 0) if args.resume else 0.0   # time before the crash counts
    until = started + cfg["TRAIN_TIMEOUT"] - before if cfg["TRAIN_TIMEOUT"] else None
    result_path = sd / job.state_path("result")
    stopped = None   # why tweakops ended the attempt: hung, timeout, oom
    if args.resume and (runners.read_record(result_path) or {}).get("reason") == "oom":
        # stopped for memory while nobody followed it: booked, never restarted into the same wall
        fields, code = {"RESULT": str(result_path)}, runners.EXIT_KILLED
        stopped = Stopped(attempts.OOM, f"attempt {attempt} ran out of memory (TRAIN_MEMORY={cfg['TRAIN_MEMORY']}) "
                                        "and was killed; raise TRAIN_MEMORY or make the model smaller")
    elif args.resume and runners.read_result(result_path) == 0:
        # it finished while nobody followed it: book it, never train it again
        state.info(f"attempt {attempt} had finished cleanly; booking it")
        fields = {"RESULT": str(result_path)}
        code = 0
    else:
        result_path.unlink(missing_ok=True)
        try:
            fields = runner.start(job)
        except runners.RunnerFailed as exc:   # the runner reports, train.py records
            state.update_run(cfg, ATTEMPT=attempt, STATUS=exc.status, RUNNER=runner.name)
            raise
        fields.update(RESULT=str(result_path))
        code = None
    state.update_run(
        cfg, ATTEMPT=attempt, STATUS=attempts.RUNNING, RUNNER=runner.name, STARTED_AT=state.now_iso(),
        LOG=str(job.log), METRICS=str(sd / job.state_path("metrics")), EXIT_CODE=None,
        DURATION=None, ACCURACY=None, ACCURACY_SOURCE=None, RESTARTS=restarts, TWEAK=tweak or None,
        PID=fields.get("PID"), PID_START=fields.get("PID_START"), CONTAINER=fields.get("CONTAINER"),
        RESULT=fields["RESULT"], FOLLOWER_PID=os.getpid(), FOLLOWER_PID_START=state.process_start_time(os.getpid()),
        CONFIRMS=confirms, FAILURE_REASON=None)
    if code is None:
        try:
            code = follow(job.log, offset, runner, fields, cfg, until)
        except Stopped as exc:
            stopped = exc
            code = runners.EXIT_KILLED
        except runners.RunnerFailed as exc:   # the runner reports, train.py records
            if exc.status != attempts.OOM:
                state.update_run(cfg, STATUS=exc.status, EXIT_CODE=exc.exit_code)
                raise
            stopped = Stopped(attempts.OOM, str(exc))
            code = exc.exit_code or runners.EXIT_KILLED
    duration = round(time.time() - started + before, 1)

    if stopped is not None and stopped.status == attempts.HUNG:
        # like a kill: left open for the watchdog, which restarts it from its checkpoint
        state.update_run(cfg, STATUS=attempts.HUNG, EXIT_CODE=code, DURATION=duration)
        raise state.TweakopsError(f"attempt {attempt} {stopped}: make watchdog restarts it from its checkpoint "
                                  f"({job.log})", state.EXIT_FAILURE)
    failed = code != 0
    if failed and tweak and confirms is None and stopped is None \
            and (runners.read_record(result_path) or {}).get("reason") == attempts.BUILD_FAILED:
        return discard_unbuilt(cfg, run, job, source, code, duration)
    status = attempts.TRAINED if not failed else (
        stopped.status if stopped is not None else attempts.CRASHED if code == runners.EXIT_KILLED else attempts.FAILED)
    best_source = state.read_source(best_path) if best_path.exists() else None
    record = attempts.new_record(
        run, attempt, source_hash=state.source_hash(source), tweak=tweak or "baseline",
        rule=run.get("TWEAK_RULE", "") if tweak else "", parent=parent_of(run) if tweak else None,
        diff=unified_diff(best_source, source, model_file) if best_source is not None else "",
        duration=duration, exit_code=code, runner=runner.name,
        outcome=attempts.FAILED_OUTCOME if failed else attempts.TRAINED_OUTCOME, restarts=restarts,
        metrics=job.state_path("metrics"), started_at=run.get("STARTED_AT") if args.resume else state.now_iso())
    if stopped is not None:
        record["reason"] = stopped.status
    if confirms is not None:
        record.update(rule="confirm", parent=confirms, confirms=confirms, diff="")
    elif tweak:   # why this change was made: the parent's diagnosis and the move (tweak.py)
        record.update(move=run.get("TWEAK_MOVE") or record["rule"], why=run.get("TWEAK_WHY", ""),
                      diagnosis=run.get("TWEAK_DIAGNOSIS", ""))
    metrics = diagnose.load(sd / job.state_path("metrics"))
    if metrics is not None and metrics.get("epochs"):
        record["epochs"] = diagnose.epochs_trained(metrics)        # the epoch the model reached
        record["epochs_run"] = len(metrics["epochs"])               # epochs this attempt trained
    if job.warm_from is not None:
        record["warm_from"] = parent_of(run)
    if status == attempts.CRASHED:
        # killed from outside: leave the attempt open for the watchdog to restart
        state.update_run(cfg, STATUS=attempts.CRASHED, EXIT_CODE=code, DURATION=duration)
        raise state.TweakopsError(f"attempt {attempt} was killed; make watchdog restarts it from its checkpoint ({job.log})", state.EXIT_FAILURE)
    state.append_history(cfg, record)
    state.update_run(cfg, STATUS=status, EXIT_CODE=code, DURATION=duration, PID=None, PID_START=None,
                     CONTAINER=None, FAILURE_REASON=stopped.status if stopped is not None else None)
    # booked: its checkpoint (kept by the harness past the end of fit, against a kill in
    # the script's evaluate) has nothing left to resume
    shutil.rmtree(sd / job.state_path("checkpoints"), ignore_errors=True)
    if not failed:
        state.info(f"attempt {attempt} trained in {duration:.1f}s; log: {job.log}")
        return state.EXIT_OK

    tail = show_tail(job.log)
    if stopped is not None:
        why = f"training failed: attempt {attempt} {stopped}" if stopped.status == attempts.TIMEOUT else str(stopped)
        code_for = {attempts.OOM: state.EXIT_RUNNER_FAILED}.get(stopped.status, state.EXIT_TRAINING_FAILED)
    else:
        why = f"training failed (exit {code}): {state.last_real_line(tail)}"
        code_for = state.EXIT_TRAINING_FAILED
    if confirms is not None:
        raise state.TweakopsError(f"the confirmation of attempt {confirms} failed: {why}; log: {job.log}",
                                  state.EXIT_TRAINING_FAILED)
    if tweak and attempts.revert_to_best(cfg, run):
        state.update_run(cfg, STATUS=attempts.REVERTED, TWEAK=tweak)
        state.warn(f"tweak {tweak!r} failed ({why}); reverted to the best source")
        return state.EXIT_BELOW_TARGET
    raise state.TweakopsError(f"{why}; log: {job.log}", code_for)


if __name__ == "__main__":
    state.main(main)
