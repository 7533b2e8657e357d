"""Job 6: restart a dead or hung training; it resumes from its last checkpoint.

Run by cron every minute (`make cron-install`) and safe to run at any time: a lock
makes exactly one watchdog act, and it acts only on a run that no live process owns
(STATE_DIR/run.lock free: a live train.py or pipeline stops a hung attempt itself)
and that is marked in progress (STATUS running, crashed or hung) whose process or
container is gone, or whose heartbeat is older than HEARTBEAT_TIMEOUT (hung: it is
stopped first). An attempt stopped for memory (oom) or time (timeout) is never
restarted into the same wall. A run whose harness wrote exit code 0 finished cleanly
and is never restarted.

A restart re-runs the same attempt with the same source (`train.py --resume`); the
harness's BackupAndRestore resumes at the epoch reached, with the optimizer state.
When `make pipeline` itself died, the pipeline is restarted in its resume mode, so
the loop carries on from the attempt it was in. Restarts wait RESTART_BACKOFF × 2^n
seconds; after MAX_RESTARTS the attempt is marked failed, the developer is notified
with the log tail, and it is left alone.

Reads:  run.env (STATUS, RUNNER, PID/PID_START or CONTAINER, STARTED_AT, RESTARTS,
        PIPELINE_PID…), heartbeat, results/, HEARTBEAT_TIMEOUT, MAX_RESTARTS, RESTART_BACKOFF
Writes: run.env (RESTARTS, NEXT_RESTART_AT, STATUS), logs/watchdog.log, history (failed)
Exit:   0 always for "nothing to do" / "restarted" / "gave up"; 2 bad configuration
        or no `crontab` for --cron

`--cron install` / `--cron remove` add or remove the crontab line that runs it every
minute (one line per checkout, marked `# tweakops-watchdog <dir>`; idempotent), its
output appended to STATE_DIR/logs/cron.log.

    $ make watchdog
    $ make cron-install
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import attempts
import runners
import state

IN_PROGRESS = attempts.IN_PROGRESS   # an oom attempt is never restarted into the same wall
SCRIPTS = Path(__file__).resolve().parent


def log(cfg: dict, message: str) -> None:
    """One timestamped line in STATE_DIR/logs/watchdog.log (make status shows the last ones)."""
    path = state.state_dir(cfg) / "logs" / "watchdog.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{state.now_iso()} {message}\n")
    state.info(f"watchdog: {message}")


def spawn(cfg: dict, script: str, *args: str) -> int:
    """Start a stage detached from the watchdog (it outlives this cron run); its output goes
    to logs/watchdog-restart-N.log (N: the restart number, 0 for a hand-over without one)."""
    n = state.read_run(cfg).get("RESTARTS") or "0"
    out = state.state_dir(cfg) / "logs" / f"watchdog-restart-{n}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "ab") as f:
        env = {k: v for k, v in os.environ.items() if k != "TWEAKOPS_RUN_OWNER"}
        proc = subprocess.Popen([sys.executable, "-u", str(SCRIPTS / f"{script}.py"), *args],
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=state.ROOT, env=env)
    return proc.pid


def give_up(cfg: dict, run: dict, why: str) -> None:
    attempt = int(run.get("ATTEMPT") or 0)
    state.append_history(cfg, attempts.new_record(
        run, attempt, duration=float(run.get("DURATION") or 0), exit_code=int(run.get("EXIT_CODE") or 1),
        outcome=attempts.FAILED_OUTCOME, reason="gave up", started_at=run.get("STARTED_AT", "")))
    state.update_run(cfg, STATUS=attempts.FAILED, NEXT_RESTART_AT=None)
    log(cfg, f"attempt {attempt} gave up: {why}")
    tail = ""
    if run.get("LOG"):
        try:
            tail = "\n".join(Path(run["LOG"]).read_text(errors="replace").splitlines()[-40:])
        except OSError:
            pass
    import notify
    import report

    try:
        notify.send(cfg, f"failure: attempt {attempt} of {run.get('MODEL_FILE', '?')} keeps crashing",
                    f"The watchdog restarted attempt {attempt} {run.get('RESTARTS')} times and gave up: {why}.\n\n"
                    f"Last lines of {run.get('LOG', 'the log')}:\n\n{tail}\n", to=report.author(run))
    except state.TweakopsError as exc:
        log(cfg, f"could not notify: {exc}")


def alive_pid(run: dict, who: str) -> bool:
    """Is the process recorded as <who>_PID (+ its start time, against PID reuse) alive?"""
    pid = run.get(f"{who}_PID")
    return bool(pid) and state.process_start_time(int(pid)) == run.get(f"{who}_PID_START")


def check(cfg: dict) -> str:
    owner = state.run_owner(cfg)
    if owner is not None:
        # a live train.py or pipeline looks after its own attempt (it stops a hung one itself)
        return (f"nothing to do: a live run owns {cfg['STATE_DIR']} (pid {owner.get('pid') or '?'}, "
                f"{owner.get('what') or '?'}, since {owner.get('since') or '?'})")
    run = state.read_run(cfg)
    status = run.get("STATUS", "")
    if status not in IN_PROGRESS:
        if run.get("PIPELINE_PID") and not alive_pid(run, "PIPELINE"):
            # make pipeline was killed between two stages: carry on where it was
            pid = handover(cfg, "pipeline")
            log(cfg, f"make pipeline was killed (status {status}): resumed it (pid {pid})")
            return "resumed the pipeline"
        return f"nothing to do (status {status or 'none'})"
    attempt = run.get("ATTEMPT", "?")
    if run.get("RUNNER", "") in ("", "cache"):
        # train.py records RUNNER together with STATUS=running; without one there is no
        # process or container to look at (a hand-edited run.env): leave it alone
        return f"nothing to do (attempt {attempt} is {status} but no runner is recorded)"
    runner = runners.get(run["RUNNER"], cfg)
    if runner.alive(run):
        age = attempts.heartbeat_age(cfg, run)
        if age <= cfg["HEARTBEAT_TIMEOUT"]:
            return f"attempt {attempt} is alive (heartbeat {age:.0f}s ago)"
        log(cfg, f"attempt {attempt} is hung: no heartbeat for {age:.0f}s (HEARTBEAT_TIMEOUT={cfg['HEARTBEAT_TIMEOUT']}); stopped it")
        runner.stop(run)
    # one actor at a time: a live train.py books what its training did, a live pipeline
    # carries on by itself; the watchdog acts only on a run nobody looks after
    if alive_pid(run, "FOLLOWER"):
        return f"attempt {attempt} ended; train.py is booking it"
    if alive_pid(run, "PIPELINE"):
        return f"attempt {attempt} ended; make pipeline carries on with it"
    who = "pipeline" if run.get("PIPELINE_PID") else "train"
    result = attempts.within_state(cfg, run.get("RESULT"))
    if result is not None and runners.read_result(result) == 0:
        pid = handover(cfg, who)
        log(cfg, f"attempt {attempt} finished cleanly with nobody to book it: {who} --resume books it, no retraining (pid {pid})")
        return "booked"
    if result is not None and (runners.read_record(result) or {}).get("reason") == "oom":
        pid = handover(cfg, who)
        log(cfg, f"attempt {attempt} ran out of memory with nobody to book it: {who} --resume books it as oom, "
                 f"no restart into the same limit (pid {pid})")
        return "booked"
    restarts = int(run.get("RESTARTS") or 0)
    if restarts >= cfg["MAX_RESTARTS"]:
        give_up(cfg, run, f"MAX_RESTARTS={cfg['MAX_RESTARTS']} restarts used (last status {status}, exit {run.get('EXIT_CODE', '?')})")
        return "gave up"
    wait_until = float(run.get("NEXT_RESTART_AT") or 0)
    if time.time() < wait_until:
        return f"attempt {attempt} is down; next restart in {wait_until - time.time():.0f}s (back-off)"
    state.update_run(cfg, RESTARTS=restarts + 1, STATUS="crashed",
                     NEXT_RESTART_AT=f"{time.time() + cfg['RESTART_BACKOFF'] * 2 ** restarts:.0f}")
    pid = handover(cfg, who)
    what = "the pipeline, which resumes it" if who == "pipeline" else "it from its checkpoint"
    log(cfg, f"attempt {attempt} was down ({status}): restarted {what} (restart {restarts + 1}, pid {pid})")
    return "restarted"


def handover(cfg: dict, who: str) -> int:
    """Start `<who>.py --resume` and record it at once, so the next check sees it alive."""
    pid = spawn(cfg, who, "--resume")
    key = "PIPELINE" if who == "pipeline" else "FOLLOWER"
    state.update_run(cfg, **{f"{key}_PID": pid, f"{key}_PID_START": state.process_start_time(pid)})
    return pid


def cron_mark() -> str:
    return f"# tweakops-watchdog {state.ROOT}"


def cron_line(cfg: dict) -> str:
    cron_log = state.state_dir(cfg) / "logs" / "cron.log"
    return (f"* * * * * cd {shlex.quote(str(state.ROOT))} && make -s watchdog "
            f">> {shlex.quote(str(cron_log))} 2>&1 {cron_mark()}")


def cron(cfg: dict, action: str) -> int:
    """Add (install) or drop (remove) this checkout's crontab line; other lines are kept."""
    if not shutil.which("crontab"):
        raise state.TweakopsError("crontab not found: install cron (apt-get install cron) "
                                  "or use the systemd timer in docs/watchdog.md", state.EXIT_BAD_INPUT)
    # `crontab -l` exits 1 with "no crontab for <user>": an empty table
    listed = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    lines = [line for line in listed.stdout.splitlines() if not line.endswith(cron_mark())] \
        if listed.returncode == 0 else []
    if action == "install":
        (state.state_dir(cfg) / "logs").mkdir(parents=True, exist_ok=True)
        lines.append(cron_line(cfg))
    if lines:
        done = subprocess.run(["crontab", "-"], input="".join(f"{line}\n" for line in lines),
                              capture_output=True, text=True)
    elif listed.returncode == 0:  # ours was the only line: no table, as before install
        done = subprocess.run(["crontab", "-r"], capture_output=True, text=True)
    else:
        done = None  # no table and nothing to add
    if done is not None and done.returncode != 0:
        raise state.TweakopsError(f"crontab refused the table: {done.stderr.strip()}", state.EXIT_BAD_INPUT)
    if action == "install":
        state.info(f"cron: make watchdog every minute for {state.ROOT} "
                   f"(output: {state.state_dir(cfg) / 'logs' / 'cron.log'})")
    else:
        state.info(f"cron: the tweakops watchdog line for {state.ROOT} is removed")
    return state.EXIT_OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cron", choices=("install", "remove"), help="add or remove the crontab line")
    args = parser.parse_args(argv)
    cfg = state.config()
    if args.cron:
        return cron(cfg, args.cron)
    with state.locked(cfg, "watchdog.lock", blocking=False) as mine:
        if not mine:
            state.info("watchdog: another watchdog is acting; nothing to do")
            return state.EXIT_OK
        state.info(f"watchdog: {check(cfg)}")
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
