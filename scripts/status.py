"""Show the current run in a terminal: attempt, status, heartbeat, epoch, accuracy, watchdog.

Reads:  run.env, heartbeat, metrics/attempt-N.json, logs/watchdog.log
Writes: nothing
Exit:   0; 2 no run yet

    $ make status
"""

from __future__ import annotations

import json
from pathlib import Path

import attempts
import runners
import state


def main(argv=None) -> int:
    cfg = state.config()
    run = state.read_run(cfg)
    if not run:
        raise state.TweakopsError(f"no run yet in {cfg['STATE_DIR']}; run make pipeline")
    epochs, so_far = [], None
    if run.get("METRICS"):
        try:
            data = json.loads(Path(run["METRICS"]).read_text())
            epochs, so_far = data.get("epochs", []), data.get("accuracy")
        except (OSError, ValueError):
            pass
    alive = "—"
    if run.get("STATUS") in attempts.IN_PROGRESS and run.get("RUNNER") in runners.RUNNERS:
        alive = "alive" if runners.get(run["RUNNER"], cfg).alive(run) else "gone"
    age = attempts.heartbeat_age(cfg, run) if run.get("STATUS") in attempts.IN_PROGRESS else None
    rows = [
        ["model", f"{run.get('MODEL_FILE', '?')} ({run.get('MODEL_TYPE', '?')}) @ {run.get('COMMIT', '')[:12]}"],
        ["attempt", f"{run.get('ATTEMPT', '—')}" + (f" ({run['TWEAK']})" if run.get("TWEAK") else "")],
        ["status", run.get("STATUS", "—")],
        ["runner", f"{run.get('RUNNER', '—')} " + (f"pid {run['PID']}" if run.get("PID") else run.get("CONTAINER", "")) + f" [{alive}]"],
        ["heartbeat", "—" if age is None else f"{age:.0f}s ago (timeout {cfg['HEARTBEAT_TIMEOUT']}s)"],
        ["epoch reached", str(epochs[-1]["epoch"]) if epochs else "—"],
        ["accuracy so far", "—" if so_far is None else f"{so_far:.4f}"],
        ["best", f"{float(run['BEST_ACCURACY']):.4f} (attempt {run.get('BEST_ATTEMPT')})" if run.get("BEST_ACCURACY") else "—"],
        ["target", f"{cfg['TARGET_ACCURACY']:.2f}"],
        ["restarts", f"{run.get('RESTARTS', 0)} of {cfg['MAX_RESTARTS']}"],
    ]
    print(state.table(rows, ["", ""]).split("\n", 2)[2])
    wlog = state.state_dir(cfg) / "logs" / "watchdog.log"
    if wlog.exists():
        print("\nwatchdog:")
        print("\n".join("  " + line for line in wlog.read_text().splitlines()[-5:]))
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
