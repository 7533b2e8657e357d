"""The benchmark: tweakops against KerasTuner and Optuna on weak start models.

For every start model (bench/models/, listed in bench/suite.py) and seed, each contender
runs once, in turns (the contenders' order rotates per model and seed, so no contender's
runs come all in a row and a slow spell of the shared machine spreads over all of them):

  tweakops      scripts/pipeline.py on the start script in its own STATE_DIR, CHECKOUT_DIR
                and bare MODEL_REPO (RUNNER=local, MAX_TWEAKS = max trials - 1)
  kt_random     KerasTuner RandomSearch    } over the hypermodel of bench/suite.py:
  kt_hyperband  KerasTuner Hyperband       } the start script with the tweak space's knobs
  optuna        Optuna TPE + MedianPruner (a Keras callback); for scikit-learn TPE alone
  halving       scikit-learn HalvingRandomSearchCV (scikit-learn models)

Every run is its own process group, started on the same data and seed, with the same
maximum trials and wall-time cap (killed at the cap), and stops at its first trial at or
above the model's target. Then: the attempt overhead of tweakops (time outside the
user's fit) and the work redone after a crash (SIGKILL, then scripts/watchdog.py).

Reads:  bench/suite.py, bench/models/*.py; BENCH_DATASET (fashion_mnist: bench/data.py)
Writes: bench/results/<timestamp>.json and .png (never overwritten); without --quick also
        the table in bench/README.md (between its markers) and bench/latest.png
Exit:   0 done, 2 bad arguments

    $ make bench                  # the full run (3 seeds, 7 models; 25-38 min measured on 2 cores)
    $ make bench-quick            # 1 seed, 2 models, 2 trials, tiny budgets (~2 min)
    $ make bench BENCH_ARGS="--models cnn_digits,sk_tree --seeds 2"
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCRIPTS = ROOT / "scripts"
PYTHON = sys.executable
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(SCRIPTS))

import data  # noqa: E402
import state  # noqa: E402  (state.meets: the target test every contender shares)
import suite  # noqa: E402

KERAS_CONTENDERS = ["tweakops", "kt_random", "kt_hyperband", "optuna"]
SKLEARN_CONTENDERS = ["tweakops", "optuna", "halving"]
QUICK_MODELS = ["cnn_digits", "sk_tree"]
TABLE_START, TABLE_END = "<!-- bench:table:start -->", "<!-- bench:table:end -->"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@localhost", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_env() -> dict:
    """The environment every run gets: no developer .env, no tweakops setting of this machine,
    no shared warm worker (TWEAKOPS_WORKER_DIR: a run would skip the TensorFlow import that
    every contender pays)."""
    env = {k: v for k, v in os.environ.items() if k not in state.DEFAULTS and k != "TWEAKOPS_WORKER_DIR"}
    env.update(GIT_ENV, TWEAKOPS_ENV_FILE=os.devnull, NO_COLOR="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONHASHSEED="0")
    return env


def git(*args, cwd=None, env=None) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def run_group(cmd: list, env: dict, cap: float, log_path: Path, watch=None) -> tuple[float, bool]:
    """Run cmd in its own session, killed (the whole group) at cap seconds; watch() is polled."""
    started = time.time()
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, "BENCH_T0": repr(started)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        killed = False
        while proc.poll() is None:
            if watch:
                watch(started)
            if time.time() - started > cap:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                proc.wait()
                break
            time.sleep(0.2)
        if watch:
            watch(started)
    return time.time() - started, killed


# ---------------------------------------------------------------------------
# tweakops

def tweakops_project(work: Path, name: str, data_dir: Path, seed: int, max_trials: int, cap: float,
                     source: str | None = None) -> dict:
    """An isolated project (as tests/conftest.py's Project): its env."""
    seed_dir, remote = work / "seed", work / "remote.git"
    seed_dir.mkdir(parents=True)
    (seed_dir / "model.py").write_text(source or suite.script(name).read_text())
    env = base_env()
    git("init", "-q", "-b", "main", cwd=seed_dir, env=env)
    git("add", "-A", cwd=seed_dir, env=env)
    git("commit", "-q", "-m", "start model", cwd=seed_dir, env=env)
    git("clone", "-q", "--bare", str(seed_dir), str(remote), env=env)
    env.update(STATE_DIR=str(work / "state"), CHECKOUT_DIR=str(work / "checkout"), DATA_DIR=str(data_dir),
               MODEL_REPO=str(remote), MODEL_BRANCH="main", RUNNER="local", SEED=str(seed),
               TARGET_ACCURACY=str(suite.SUITE[name]["target"]), MAX_TWEAKS=str(max_trials - 1),
               MAX_MINUTES=str(int(cap // 60) + 2))  # the cap is the bench's kill, not MAX_MINUTES
    return env


def read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def run_tweakops(name, data_dir, seed, max_trials, cap, work: Path) -> dict:
    env = tweakops_project(work, name, data_dir, seed, max_trials, cap)
    state_dir = work / "state"
    seen: dict[int, float] = {}  # attempt -> seconds since start when its history line appeared

    def searched(records):
        """The search's trained attempts: not the build-failed candidates (attempt null, no
        training) nor the confirmation run publish makes after the search (confirm.py)."""
        return [r for r in records if isinstance(r.get("attempt"), int) and r.get("confirms") is None]

    def watch(started):
        # when the line was written, not when this poll saw it (the tuners stamp their own
        # trace lines): the file's mtime, if nothing was written since, else the poll's time
        try:
            written = min((state_dir / "history.jsonl").stat().st_mtime, time.time())
        except OSError:
            return
        for record in searched(read_jsonl(state_dir / "history.jsonl")):
            seen.setdefault(record["attempt"], round(written - started, 3))

    wall, killed = run_group([PYTHON, "-u", str(SCRIPTS / "pipeline.py")], env, cap, work / "run.log", watch)
    history = searched(read_jsonl(state_dir / "history.jsonl"))
    trace, attempts = [], []
    epochs_total = 0
    for record in history:
        try:
            epochs_total += len(json.loads((state_dir / "metrics" / f"attempt-{record['attempt']}.json")
                                           .read_text()).get("epochs", []))
        except (OSError, ValueError):
            pass
    previous_end = 0.0
    for record in history:
        n = record["attempt"]
        accuracy = record.get("accuracy")
        trace.append({"t": seen.get(n), "trial": n, "accuracy": accuracy, "tweak": record.get("tweak")})
        try:
            epochs = json.loads((state_dir / "metrics" / f"attempt-{n}.json").read_text()).get("epochs", [])
        except (OSError, ValueError):
            epochs = []
        fit = sum(e.get("time", 0.0) for e in epochs)
        duration = float(record.get("duration") or 0.0)
        booked = seen.get(n)
        attempts.append({"attempt": n, "tweak": record.get("tweak"), "epochs": len(epochs),
                         "inside_fit_s": round(fit, 3),
                         "train_outside_fit_s": round(max(duration - fit, 0.0), 3),  # start, imports, data, evaluate
                         "between_s": round(max(booked - previous_end - duration, 0.0), 3) if booked else None,
                         "duration_s": duration})  # between: fetch/detect or tweak, parse, processes
        previous_end = booked or previous_end
    sklearn = suite.SUITE[name]["kind"] == "sklearn"
    return {"trace": trace, "wall_s": round(wall, 3), "killed_at_cap": killed,
            "epochs": None if sklearn else epochs_total,
            "attempts": attempts, "exit": None if killed else "done"}


# ---------------------------------------------------------------------------
# the tuners

def run_tuner(name, contender, data_dir, seed, max_trials, cap, work: Path) -> dict:
    trace_path = work / "trace.jsonl"
    cmd = [PYTHON, "-u", str(BENCH / "contenders.py"), "--model", name, "--contender", contender,
           "--seed", str(seed), "--data", str(data_dir), "--work", str(work / "tuner"),
           "--trace", str(trace_path), "--max-trials", str(max_trials)]
    wall, killed = run_group(cmd, base_env(), cap, work / "run.log")
    trace = read_jsonl(trace_path)
    return {"trace": [{"t": r["t"], "trial": r["trial"], "accuracy": r["accuracy"]} for r in trace],
            "wall_s": round(wall, 3), "killed_at_cap": killed,
            "epochs": sum(r["epochs"] for r in trace) if all(r["epochs"] is not None for r in trace) and trace
            else (None if suite.SUITE[name]["kind"] == "sklearn" else 0)}


def summarise_run(run: dict, target: float) -> dict:
    best, hit = None, None
    for point in run["trace"]:
        acc = point["accuracy"]
        if acc is None:
            continue
        best = acc if best is None else max(best, acc)
        point["best"] = best
        if hit is None and state.meets(acc, target):   # float32 0.699999988 meets 0.70, for everyone
            hit = point
    run.update(best_accuracy=best, trials=max((p["trial"] for p in run["trace"]), default=0),
               reached=hit is not None,  # trials: the last trial's number (halving: every candidate fit)
               time_to_target_s=hit["t"] if hit else None, trials_to_target=hit["trial"] if hit else None)
    return run


# ---------------------------------------------------------------------------
# crash: SIGKILL of the training's process group, then the watchdog

def crash_runs(n_runs: int, data_root: Path, work_root: Path, epochs: int, rng: random.Random) -> dict:
    """Uninterrupted and killed trainings of cnn_digits with `epochs` epochs, in turns."""
    name = "cnn_digits"
    source = suite.script(name).read_text().replace("epochs=3", f"epochs={epochs}")
    data_dir = data.ensure(data_root, suite.SUITE[name]["dataset"])
    fast = {"RESTART_BACKOFF": "0", "HEARTBEAT_TIMEOUT": "120"}
    runs = []

    def script(env, *args, **kw):
        return subprocess.run([PYTHON, str(SCRIPTS / args[0]), *args[1:]], cwd=ROOT, env={**env, **fast},
                              capture_output=True, text=True, timeout=kw.get("timeout", 300))

    def run_env(env):
        try:
            return dict(line.split("=", 1) for line in (Path(env["STATE_DIR"]) / "run.env").read_text().splitlines()
                        if "=" in line)
        except OSError:
            return {}

    def epochs_done(env):
        try:
            return len(json.loads((Path(env["STATE_DIR"]) / "metrics" / "attempt-1.json").read_text())["epochs"])
        except (OSError, ValueError, KeyError):
            return 0

    def wait_for(predicate, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    for i in range(n_runs):
        record = {"run": i + 1, "epochs": epochs}
        for mode in ("uninterrupted", "killed") if i % 2 == 0 else ("killed", "uninterrupted"):
            work = work_root / f"crash-{i + 1}-{mode}"
            env = tweakops_project(work, name, data_dir, 0, 1, 600, source)
            for stage in ("fetch.py", "detect_type.py"):
                script(env, stage)
            started = time.time()
            if mode == "uninterrupted":
                script(env, "train.py")
                record["uninterrupted_s"] = round(time.time() - started, 3)
                continue
            train = subprocess.Popen([PYTHON, str(SCRIPTS / "train.py")], cwd=ROOT, env={**env, **fast},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            kill_after = rng.randint(1, max(1, epochs - 2))  # epochs done before the kill, then a random part of the next
            wait_for(lambda: epochs_done(env) >= kill_after
                     and (Path(env["STATE_DIR"]) / "checkpoints" / "attempt-1").exists())
            try:  # a random part of the next epoch
                epoch_s = json.loads((Path(env["STATE_DIR"]) / "metrics" / "attempt-1.json").read_text())["epochs"][-1]["time"]
            except (OSError, ValueError, KeyError, IndexError):
                epoch_s = 0.5
            time.sleep(rng.uniform(0.0, 0.9 * epoch_s))
            killed_at_epochs = epochs_done(env)
            killed_at_s = time.time() - started
            try:
                os.killpg(int(run_env(env)["PID"]), signal.SIGKILL)
            except (ProcessLookupError, KeyError, ValueError):
                pass  # it finished first: the record shows no restart
            train.wait(timeout=120)
            dog = script(env, "watchdog.py")
            restarted = "restarted it from its checkpoint" in dog.stderr
            wait_for(lambda: run_env(env).get("STATUS") in ("trained", "failed"))
            try:
                metrics = json.loads((Path(env["STATE_DIR"]) / "metrics" / "attempt-1.json").read_text())
            except (OSError, ValueError):
                metrics = {}
            resumed = int(metrics.get("resumed_from_epoch", 0))
            record.update(killed_s=round(time.time() - started, 3), killed_at_s=round(killed_at_s, 3),
                          killed_after_epochs=killed_at_epochs, resumed_from_epoch=resumed,
                          restarted=restarted, status=run_env(env).get("STATUS"),
                          epochs_recorded=len(metrics.get("epochs", [])),
                          epochs_redone=redone(killed_at_epochs, resumed, epochs))
        record["seconds_redone"] = round(record["killed_s"] - record["uninterrupted_s"], 3)
        runs.append(record)
        log(f"crash {i + 1}/{n_runs}: killed after {record['killed_after_epochs']} epochs, resumed from "
            f"{record['resumed_from_epoch']}, {record['seconds_redone']:+.1f}s vs uninterrupted")
    return {"model": name, "epochs": epochs, "runs": runs,
            "median_uninterrupted_s": med([r["uninterrupted_s"] for r in runs])}


def redone(killed_after: int, resumed: int, epochs: int) -> int:
    """Epochs trained twice: those past the checkpoint, and the one cut short (if any was)."""
    return killed_after - resumed + (1 if killed_after < epochs else 0)


def crash_summary(crash: dict) -> dict:
    ok = [r for r in crash["runs"] if r.get("status") == "trained"]
    for r in ok:
        r["epochs_redone"] = redone(r["killed_after_epochs"], r["resumed_from_epoch"], crash["epochs"])
    crash.update(median_epochs_redone=med([r["epochs_redone"] for r in ok]),
                 median_seconds_redone=med([r["seconds_redone"] for r in ok]),
                 after_fit=sum(r["killed_after_epochs"] >= crash["epochs"] for r in ok))
    return crash


def overhead(results: dict) -> dict:
    """Each tweakops attempt of the Keras models: inside the fit, outside it, between attempts."""
    attempts = [a for r in results["runs"] if r["contender"] == "tweakops"
                and suite.SUITE[r["model"]]["kind"] in suite.KERAS_KINDS for a in r["attempts"]]
    shares = [a["train_outside_fit_s"] / a["duration_s"] for a in attempts if a["duration_s"]]
    walls = [a["inside_fit_s"] + a["train_outside_fit_s"] + a["between_s"] for a in attempts
             if a["between_s"] is not None and a["attempt"] > 1]
    fits = [a["inside_fit_s"] / w for a, w in zip([a for a in attempts if a["between_s"] is not None
                                                   and a["attempt"] > 1], walls) if w]
    return {
        **results.get("overhead", {}), "attempts": len(attempts),
        "inside_fit_median_s": med([a["inside_fit_s"] for a in attempts]),
        "outside_fit_median_s": med([a["train_outside_fit_s"] for a in attempts]),
        "outside_share_median": med(shares) or 0.0,
        "between_median_s": med([a["between_s"] for a in attempts if a["between_s"] is not None and a["attempt"] > 1]),
        "first_between_median_s": med([a["between_s"] for a in attempts if a["attempt"] == 1
                                        and a["between_s"] is not None]),
        "attempt_wall_median_s": med(walls), "fit_share_of_wall_median": med(fits),
    }


def import_time(repeats: int = 3) -> float:
    """Seconds a fresh process needs to import Keras (TensorFlow): what every tweakops attempt pays."""
    times = []
    for _ in range(repeats):
        started = time.time()
        subprocess.run([PYTHON, "-c", "import keras, tensorflow"], env=base_env(), capture_output=True)
        times.append(time.time() - started)
    return round(statistics.median(times), 3)


# ---------------------------------------------------------------------------
# summary, table, plot

def med(values):
    return statistics.median(values) if values else None


def summary(results: dict) -> list[dict]:
    rows = []
    cap_of = results["config"]["cap_s"]
    for name in results["config"]["models"]:
        contenders = KERAS_CONTENDERS if suite.SUITE[name]["kind"] in suite.KERAS_KINDS else SKLEARN_CONTENDERS
        for contender in contenders:
            runs = [r for r in results["runs"] if r["model"] == name and r["contender"] == contender]
            if not runs:
                continue
            # an unreached target counts as "beyond the cap" for the median
            ttt = sorted(r["time_to_target_s"] if r["reached"] else float("inf") for r in runs)
            reached = [r for r in runs if r["reached"]]
            epochs = [r["epochs"] for r in runs if r["epochs"] is not None]
            rows.append({"model": name, "contender": contender, "runs": len(runs), "reached": len(reached),
                         "ttt_median_s": statistics.median(ttt), "ttt_min_s": ttt[0], "ttt_max_s": ttt[-1],
                         "trials_median": med([r["trials_to_target"] for r in reached]),
                         "best_median": med([r["best_accuracy"] for r in runs if r["best_accuracy"] is not None]),
                         "epochs_median": med(epochs), "cap_s": cap_of[suite.SUITE[name]["kind"] == "sklearn"]})
    for row in rows:
        mine = next(r for r in rows if r["model"] == row["model"] and r["contender"] == "tweakops")
        a, b = mine["ttt_median_s"], row["ttt_median_s"]
        if row["contender"] == "tweakops":
            row["ratio"] = None
        elif a != float("inf") and b != float("inf"):
            row["ratio"] = f"{a / b:.2f}"
        elif a == float("inf") and b != float("inf"):
            row["ratio"] = f">{row['cap_s'] / b:.1f}"
        elif b == float("inf") and a != float("inf"):
            row["ratio"] = f"<{a / row['cap_s']:.2f}"
        else:
            row["ratio"] = "n/a"
    return rows


def fmt_s(v, cap) -> str:
    return f">{cap:.0f}" if v == float("inf") else f"{v:.1f}"


def start_accuracy(results: dict, name: str):
    """The start script's accuracy: tweakops' baseline attempt (median over seeds)."""
    return med([r["trace"][0]["accuracy"] for r in results["runs"] if r["model"] == name
                and r["contender"] == "tweakops" and r["trace"] and r["trace"][0].get("tweak") == "baseline"])


def table(results: dict) -> str:
    head = ["model (start → target)", "contender", "reached", "time-to-target s median [min–max]", "trials to target",
            "best acc (median)", "epochs (median)", "tweakops / contender"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["summary"]:
        cap = r["cap_s"]
        target = suite.SUITE[r["model"]]["target"]
        start = start_accuracy(results, r["model"])
        lines.append("| " + " | ".join([
            f"{r['model']} ({'?' if start is None else f'{start:.2f}'} → {target:.2f})", r["contender"], f"{r['reached']}/{r['runs']}",
            f"{fmt_s(r['ttt_median_s'], cap)} [{fmt_s(r['ttt_min_s'], cap)}–{fmt_s(r['ttt_max_s'], cap)}]",
            "—" if r["trials_median"] is None else f"{r['trials_median']:g}",
            "—" if r["best_median"] is None else f"{r['best_median']:.3f}",
            "—" if r["epochs_median"] is None else f"{r['epochs_median']:g}",
            r["ratio"] or "—"]) + " |")
    o, c = results["overhead"], results.get("crash") or {}
    def s(v):
        return "—" if v is None else f"{v:.1f}s"

    lines += ["", f"**Attempt overhead** of tweakops ({o['attempts']} attempts of the Keras models, medians): "
              f"{s(o['inside_fit_median_s'])} inside the user's fit, {s(o['outside_fit_median_s'])} in the training "
              f"process outside it ({o['outside_share_median']:.0%} of the training process; a bare "
              f"`import keras, tensorflow` alone takes {s(o['import_keras_s'])} here), and "
              f"{s(o['between_median_s'])} between two attempts (parse, tweak, the stages' process starts)."]
    if o.get("attempt_wall_median_s"):
        lines[-1] += (f" A whole attempt after the first: {s(o['attempt_wall_median_s'])}, of which the fit is "
                      f"{o['fit_share_of_wall_median']:.0%}.")
    if c.get("runs"):
        per = "; ".join(f"killed after {r['killed_after_epochs']} epochs, resumed from {r['resumed_from_epoch']}: "
                        f"{r['epochs_redone']} epochs, {r['seconds_redone']:+.1f}s" for r in c["runs"]
                        if r.get("status") == "trained")
        lines += ["", f"**Crash** ({len(c['runs'])} runs of {c['model']}, {c['epochs']} epochs, SIGKILL of the "
                  f"training's process group at a random point, then scripts/watchdog.py): median "
                  f"{c['median_epochs_redone']} epochs and {s(c['median_seconds_redone'])} redone against an "
                  f"uninterrupted {s(c['median_uninterrupted_s'])} training ({per})."]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = results["config"]["models"]
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colours = {"tweakops": "tab:red", "kt_random": "tab:blue", "kt_hyperband": "tab:green", "optuna": "tab:purple",
               "halving": "tab:orange"}
    for ax, name in zip(axes.flat, names):
        for run in (r for r in results["runs"] if r["model"] == name):
            points = [(p["t"], p["best"]) for p in run["trace"] if p.get("t") is not None and "best" in p]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.step([0, *xs, run["wall_s"]], [0, *ys, ys[-1]], where="post", color=colours[run["contender"]],
                    alpha=0.8, lw=1.2, label=run["contender"] if run["seed"] == results["config"]["seeds"][0] else None)
        ax.axhline(suite.SUITE[name]["target"], color="black", ls="--", lw=0.8, label="target")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("best accuracy so far")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_readme(text: str) -> None:
    readme = BENCH / "README.md"
    body = readme.read_text()
    if TABLE_START in body and TABLE_END in body:
        head, rest = body.split(TABLE_START, 1)
        body = head + TABLE_START + "\n" + text + "\n" + TABLE_END + rest.split(TABLE_END, 1)[1]
        readme.write_text(body)


def unique(path: Path) -> Path:
    n = 1
    while path.exists():
        path = path.with_name(f"{path.stem.rsplit('.', 1)[0]}-{n}{path.suffix}")
        n += 1
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 models, tiny budgets (the smoke test)")
    parser.add_argument("--models", default="", help="comma-separated names from bench/suite.py")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3; --quick 1)")
    parser.add_argument("--max-trials", type=int, default=None, help="trials per run (default 11; --quick 2)")
    parser.add_argument("--cap", type=float, default=None, help="wall-time cap per Keras run, s (default 40)")
    parser.add_argument("--cap-sklearn", type=float, default=None, help="the same for scikit-learn (default 20)")
    parser.add_argument("--crash-runs", type=int, default=None, help="killed trainings (default 3; --quick 1)")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: a temp folder)")
    parser.add_argument("--no-readme", action="store_true", help="leave bench/README.md and latest.png alone")
    parser.add_argument("--table-from", type=Path, default=None, metavar="JSON",
                        help="only render the table (and the README, latest.png) from a results file")
    args = parser.parse_args(argv)
    if args.table_from:
        return render(args.table_from, readme=True)
    quick = args.quick
    models = [m for m in args.models.split(",") if m] or (QUICK_MODELS if quick else list(suite.SUITE))
    unknown = [m for m in models if m not in suite.SUITE]
    if unknown:
        print(f"error: unknown model {', '.join(unknown)}; choose from {', '.join(suite.SUITE)}", file=sys.stderr)
        return 2
    seeds = list(range(args.seeds if args.seeds is not None else (1 if quick else 3)))
    max_trials = args.max_trials or (2 if quick else 11)
    cap = args.cap or (20.0 if quick else 40.0)
    cap_sklearn = args.cap_sklearn or (15.0 if quick else 20.0)
    crash_n = args.crash_runs if args.crash_runs is not None else (1 if quick else 3)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if quick else "")
    args.results.mkdir(parents=True, exist_ok=True)
    json_path = unique(args.results / f"{stamp}.json")
    work_root = Path(tempfile.mkdtemp(prefix="tweakops-bench-"))
    data_root = args.data or work_root / "data"
    data_root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        import keras_tuner
        import optuna
        import sklearn
    except ImportError as e:
        print(f"error: {e.name} is missing: make bench installs requirements-bench.txt into .venv", file=sys.stderr)
        return 2
    results = {"started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "quick": quick,
               "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "platform": platform.platform(),
                           "python": platform.python_version(), "gpu": False},
               "versions": {"keras_tuner": keras_tuner.__version__, "optuna": optuna.__version__,
                            "sklearn": sklearn.__version__},
               "config": {"models": models, "seeds": seeds, "max_trials": max_trials, "cap_s": [cap, cap_sklearn],
                          "epochs_max_per_trial": suite.EPOCHS_MAX, "crash_runs": crash_n,
                          "dataset": os.environ.get("BENCH_DATASET", "") or "digits (generated)"},
               "models": {m: {k: suite.SUITE[m][k] for k in ("kind", "dataset", "target", "weak")} for m in models},
               "runs": []}
    log(f"{len(models)} models x {len(seeds)} seeds; max {max_trials} trials, cap {cap:.0f}s "
        f"(scikit-learn {cap_sklearn:.0f}s); work in {work_root}")
    order = 0
    for mi, name in enumerate(models):
        spec = suite.SUITE[name]
        data_dir = data.ensure(data_root, spec["dataset"])
        contenders = KERAS_CONTENDERS if spec["kind"] in suite.KERAS_KINDS else SKLEARN_CONTENDERS
        run_cap = cap if spec["kind"] in suite.KERAS_KINDS else cap_sklearn
        for seed in seeds:
            shift = (mi + seed) % len(contenders)  # rotate the turns: nobody always goes first
            for contender in contenders[shift:] + contenders[:shift]:
                order += 1
                work = work_root / f"{name}-{contender}-{seed}"
                work.mkdir(parents=True)
                if contender == "tweakops":
                    run = run_tweakops(name, data_dir, seed, max_trials, run_cap, work)
                else:
                    run = run_tuner(name, contender, data_dir, seed, max_trials, run_cap, work)
                run = summarise_run({"model": name, "contender": contender, "seed": seed, "order": order, **run},
                                    spec["target"])
                results["runs"].append(run)
                log(f"{name} seed {seed} {contender}: best {run['best_accuracy']} in {run['trials']} trials, "
                    f"target {'at %.1fs' % run['time_to_target_s'] if run['reached'] else 'not reached'} "
                    f"({run['wall_s']:.0f}s{', cap' if run['killed_at_cap'] else ''})")
                json_path.write_text(json.dumps(results, indent=1))  # a partial file survives a stop
    results["overhead"] = {"import_keras_s": import_time(1 if quick else 3), "sklearn_duration_median_s": med(
        [a["duration_s"] for r in results["runs"] if r["contender"] == "tweakops"
         and suite.SUITE[r["model"]]["kind"] == "sklearn" for a in r["attempts"]])}
    results["overhead"] = overhead(results)
    results["crash"] = crash_summary(crash_runs(crash_n, data_root, work_root, 6, random.Random(0))) if crash_n else None
    results["summary"] = summary(results)
    results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["wall_s"] = round(time.time() - started, 1)
    results["machine"]["load_after"] = os.getloadavg()
    json_path.write_text(json.dumps(results, indent=1, default=str))
    render(json_path, readme=not quick and not args.no_readme and args.results == BENCH / "results")
    log(f"results: {json_path} and {json_path.with_suffix('.png')} ({results['wall_s']:.0f}s)")
    shutil.rmtree(work_root, ignore_errors=True)
    return 0


def render(json_path: Path, readme: bool) -> int:
    """The plot next to the results file and the table on stdout; the README and latest.png too."""
    results = json.loads(json_path.read_text())
    results["overhead"] = overhead(results)  # recomputed from the attempts: the file's own are kept in it
    if results.get("crash"):
        results["crash"] = crash_summary(results["crash"])
    for row in results["summary"]:  # JSON has no infinity: an unreached median was written as Infinity
        for key in ("ttt_median_s", "ttt_min_s", "ttt_max_s"):
            row[key] = float(row[key])
    png = json_path.with_suffix(".png")
    plot(results, png)
    text = table(results)
    print(text)
    if readme:
        shutil.copy(png, BENCH / "latest.png")
        try:
            where = json_path.resolve().relative_to(ROOT)
        except ValueError:
            where = json_path
        write_readme(f"Measured {results['started_at']} ({results['wall_s'] / 60:.0f} min, `{where}`):\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
