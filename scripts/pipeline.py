"""The whole loop: fetch, detect, train, accuracy — then tweak, train, accuracy until the target.

Each stage is its own script run in its own process, as the make targets and the
Jenkins jobs run them (a fork of this one, so no stage pays Python's start-up or its
imports again: state.run_stage), and the loop only reads exit codes and STATE_DIR:

    fetch -> detect -> train -> accuracy --(3: below target)--> tweak -> train -> accuracy -> …
                                    `--(0: target met, or cap reached)--> publish -> notify -> report

The loop stops at TARGET_ACCURACY or when tweak.py says no tweak may start (MAX_TWEAKS
tweaks, MAX_MINUTES, no rule left, or the head is tweakops' own published commit).
Then the best source is published, the report written and the developer notified;
it ends with a summary table.

Reads:  .env / environment (see .env.example)
Writes: everything the stages write
Exit:   0 target met; 3 below target at the end; otherwise the failing stage's code

    $ make pipeline
    $ make pipeline EXAMPLE=rnn TARGET_ACCURACY=0.9
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import attempts
import state

SCRIPTS = Path(__file__).resolve().parent


stage = state.run_stage
NEXT = ("parse_accuracy", "tweak", "report")  # imported here while an attempt trains


def run_attempt() -> int:
    """train + accuracy; a failed tweak (train exit 3) skips accuracy. An attempt killed or
    hung under this live pipeline is restarted here, from its checkpoint, as the watchdog
    would (MAX_RESTARTS, RESTART_BACKOFF): no cron needed for that."""
    code = stage("train", preload=NEXT)
    while code == state.EXIT_FAILURE and restart_in_place():
        code = stage("train", "--resume")
    if code == state.EXIT_OK:
        code = stage("parse_accuracy")
    announce()
    return code


def restart_in_place() -> bool:
    cfg = state.config()
    run = state.read_run(cfg)
    restarts = int(run.get("RESTARTS") or 0)
    if run.get("STATUS") not in attempts.RESTARTABLE or restarts >= cfg["MAX_RESTARTS"]:
        return False
    wait = cfg["RESTART_BACKOFF"] * 2 ** restarts
    state.info(f"attempt {run.get('ATTEMPT')} was {run['STATUS']}: restarting it from its checkpoint "
               f"in {wait}s (restart {restarts + 1} of MAX_RESTARTS={cfg['MAX_RESTARTS']})")
    time.sleep(wait)
    state.update_run(cfg, RESTARTS=restarts + 1, STATUS=attempts.CRASHED)
    return True


def announce() -> None:
    """One line per attempt: `attempt 2/11  epochs 1→3  acc 0.866 (best 0.866, target 0.80)  8s  kept`."""
    import report

    cfg = state.config()
    run = state.read_run(cfg)
    records = report.run_records(cfg, run)
    if records and records[-1].get("attempt") is None:
        return   # a tweak that did not build: no attempt, train.py said why
    records = report.trained(records)
    if records:
        best = float(run["BEST_ACCURACY"]) if run.get("BEST_ACCURACY") else None
        line = report.attempt_line(records[-1], best, cfg["TARGET_ACCURACY"], len(records), cfg["MAX_TWEAKS"] + 1,
                                   sys.stderr)  # the outcome coloured on a terminal only
        print(line, file=sys.stderr, flush=True)


def summary(cfg: dict, code: int, started: float) -> str:
    run = state.read_run(cfg)
    history = attempts.this_run(run, state.read_history(cfg))
    best = run.get("BEST_ACCURACY")
    verdict = {state.EXIT_OK: "target met", state.EXIT_BELOW_TARGET: "below target"}.get(code, f"failed (exit {code})")
    rows = [
        ["commit", run.get("COMMIT", "")[:12]],
        ["model", f"{run.get('MODEL_FILE', '?')} ({run.get('MODEL_TYPE', '?')})"],
        ["runner", run.get("RUNNER", cfg["RUNNER"])],
        ["attempts", sum(r.get("attempt") is not None for r in history)],
        ["accuracy", f"{float(best):.4f} (attempt {run.get('BEST_ATTEMPT')})" if best else "none"],
        ["target", f"{cfg['TARGET_ACCURACY']:.2f}"],
        ["verdict", verdict],
        ["wall time", f"{time.time() - started:.0f}s"],
        ["log", run.get("LOG", "")],
    ]
    if run.get("PUBLISHED_COMMIT"):
        rows.insert(7, ["published", f"{run['PUBLISHED_COMMIT'][:12]} on {run.get('PUBLISHED_BRANCH', '')}"])
    import report  # the same table as the report page

    return (state.table(rows, ["", ""]).split("\n", 2)[2] + "\n\n"
            + state.table([report.table_cells(r) for r in report.rows(history)], report.TABLE_HEADERS))


def resume(run: dict) -> int:
    """Carry on from where a killed pipeline was (the watchdog starts this)."""
    status = run.get("STATUS", "")
    state.banner("pipeline", f"resuming at attempt {run.get('ATTEMPT', '?')} (status {status})")
    if status in attempts.IN_PROGRESS:
        code = stage("train", "--resume")
        return stage("parse_accuracy") if code == state.EXIT_OK else code
    if status == "fetched":
        code = stage("detect_type")
        return run_attempt() if code == state.EXIT_OK else code
    if status in ("detected", "tweaked"):
        return run_attempt()
    return stage("parse_accuracy")  # trained or booked: booking twice changes nothing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true", help="carry on from the current state (the watchdog)")
    parser.add_argument("--wait", nargs="?", type=float, const=float("inf"), metavar="SECONDS",
                        help="queue behind a run that holds STATE_DIR (at most SECONDS) instead of exiting 10")
    args = parser.parse_args(argv)
    cfg = state.config()
    # one run per STATE_DIR; the stages it starts run under its lock
    state.hold_run(cfg, "pipeline", args.wait if args.wait is not None else (60 if args.resume else None))
    started = time.time()
    me = os.getpid()
    state.update_run(cfg, PIPELINE_PID=me, PIPELINE_PID_START=state.process_start_time(me))
    code = None
    try:
        code = loop(cfg, args.resume, started)
        return code
    finally:
        # a killed attempt keeps PIPELINE_PID: the watchdog then resumes the whole loop, not train alone
        if code != state.EXIT_FAILURE and state.read_run(cfg).get("PIPELINE_PID") == str(me):
            state.update_run(cfg, PIPELINE_PID=None, PIPELINE_PID_START=None)


def loop(cfg: dict, resuming: bool, started: float) -> int:
    if resuming:
        code = resume(state.read_run(cfg))
    else:
        for name in ("fetch", "detect_type"):
            code = stage(name)
            if code != state.EXIT_OK:
                # a push that cannot be trained: the developer who pushed it is told
                if stage("notify") != state.EXIT_OK:
                    state.warn(f"make notify failed; the failure is kept in {cfg['STATE_DIR']}")
                return code
            if name == "fetch":  # fetch starts a new run.env: say again who runs it
                me = os.getpid()
                state.update_run(cfg, PIPELINE_PID=me, PIPELINE_PID_START=state.process_start_time(me))
        code = run_attempt()
    # the caps (MAX_TWEAKS, MAX_MINUTES, our own published commit) live in tweak.py: exit 8
    while code == state.EXIT_BELOW_TARGET:
        tweak_code = stage("tweak")
        if tweak_code == state.EXIT_NO_TWEAK_LEFT:
            break
        if tweak_code != state.EXIT_OK:
            return tweak_code
        code = run_attempt()
    if code == state.EXIT_FAILURE:
        state.info("the attempt was killed: make watchdog restarts it from its checkpoint and carries on")
        return code
    if code in (state.EXIT_OK, state.EXIT_BELOW_TARGET):
        publish_code = stage("confirm")   # a warm-started best is retrained from scratch first
        if publish_code == state.EXIT_OK:
            publish_code = stage("publish")
        if publish_code != state.EXIT_OK:
            code = publish_code
    for name in ("report", "notify"):
        if (SCRIPTS / f"{name}.py").exists() and stage(name) != state.EXIT_OK:
            state.warn(f"make {name} failed; the run's result is kept in {cfg['STATE_DIR']}")
    print(summary(cfg, code, started))
    return code


if __name__ == "__main__":
    state.main(main)
