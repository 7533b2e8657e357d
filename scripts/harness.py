"""Run a user's training script unmodified and record what tweakops needs from it.

The script runs as `__main__` (runpy), in its own directory, printing what it always
printed. Before it starts, the harness:

  - fixes the seeds (TWEAKOPS_SEED) so two runs of one source give comparable accuracy;
  - Keras: wraps `Model.fit` to add callbacks — per-epoch metrics (TWEAKOPS_METRICS),
    a heartbeat file (TWEAKOPS_HEARTBEAT), `keras.callbacks.BackupAndRestore` under
    TWEAKOPS_CHECKPOINT_DIR (a restarted attempt resumes at the epoch it reached, with
    the optimizer state), and the hopeless-attempt stop (TWEAKOPS_REFERENCE); wraps
    `Model.evaluate` to record the held-out figure the script computes;
  - scikit-learn: wraps `accuracy_score` and `ClassifierMixin.score` to record the
    accuracy the script computes (the last call wins: scripts score held-out data last),
    and the fit's data validation to keep each classifier's training data (up to
    TRAIN_SAMPLE rows), so that the training accuracy of the model scored is recorded
    beside it (`train_score`: overfit or underfit, diagnose.py).
    None of the three below applies to it: a sklearn fit cannot be stopped or
    warm-started from outside.

The heartbeat means progress (one watch thread, any framework): every HEARTBEAT_EVERY
seconds (2; TWEAKOPS_HEARTBEAT_EVERY) it rewrites TWEAKOPS_HEARTBEAT (`attempt epoch batch
time`) when a Keras batch or epoch ended since the last beat, or when the attempt's
processes used CPU since then (5% of a core, the watch's own CPU left out). A script
blocked in sleep(), on a lock or on a dead pipe stops beating: the watchdog's
HEARTBEAT_TIMEOUT then sees it hung.

Memory (TWEAKOPS_MEMORY_LIMIT, bytes: the local runner's TRAIN_MEMORY): the same thread
sums the PSS (+ swapped PSS; RSS where smaps_rollup is unreadable) of the harness and
its descendants (and its process group when it leads one) 5 times a second: pages a warm
worker shares with its fork count half, not twice. Over the limit it writes
TWEAKOPS_RESULT = {"exit_code": 137, "reason": "oom", "limit": bytes, "used": bytes,
"attempt": n, "finished_at": t}, prints one `tweakops: error: out of memory ...` line and
SIGKILLs the attempt's processes, itself last. The metrics file gets "memory_peak" (bytes).

Keras, two more checks (not in build-check mode):
  - no training, no accuracy: a script that made a Keras model (compile, evaluate or
    predict) and ends (exit 0) without a training call (fit, fit_generator,
    train_on_batch, an optimizer's apply_gradients/apply) prints exactly one line
    `tweakops: error: the script never trains a model: no fit() call ran; call
    model.fit(...) in <script>` and exits 65 (EXIT_NEVER_TRAINED, sysexits' EX_DATAERR);
    its result file has "reason": "never-trained". The metrics of a script that made a
    Keras model get "trained": whether a training call ran.
  - divergence: a NaN or infinite training loss prints one line `tweakops: the loss became
    NaN at epoch N: the training diverged; a smaller learning rate usually fixes it`,
    stops that fit (as keras.callbacks.TerminateOnNaN would) and records "diverged": N
    (the first such epoch) in the metrics file; a diverged fit's weights are not saved
    for warm starts (TWEAKOPS_WEIGHTS_OUT).

Warm starts and the time cap (Keras; each optional, unset = none of it):

  TWEAKOPS_WEIGHTS_OUT=path   after each fit returns and when the script ends (exit 0), the
      weights of the latest fit's model go to `path` (HDF5, tweakops' own per-layer layout
      `layers/<index:04d>/<j>` = `layer.get_weights()[j]`: not `Model.load_weights`' format)
      and its layer list to `Path(path).with_suffix(".json")` (`attempt-3.weights.h5` ->
      `attempt-3.weights.json`): {"attempt", "runtime", "epochs_trained", "layers": [{"name",
      "class", "shapes": [[...], ...]}, ...]}. Both atomic. The metrics file gets "weights"
      (the path) and "epochs_trained" (the epoch the latest fit's weights are at; the kept
      epoch after a time-cap stop).
  TWEAKOPS_WARM_FROM=path     (a parent attempt's TWEAKOPS_WEIGHTS_OUT) on the script's first
      fit, before training, the model (built from its first batch where it is not) takes every
      parent layer that matches: same name and weight shapes; then, in model order, the next
      unused parent layer of the same class and shapes (an inserted layer shifts the auto-made
      names after it); then Net2Net-style widening: a Dense/Conv1-3D/BatchNormalization with
      more units than its parent layer gets the parent's weights as the leading slice, and so
      does the next layer's input axis (where it grew by exactly as much). Others start fresh.
      Weights only: the optimizer state starts fresh. A missing or unreadable file, or a
      failed load: one line and the model trains from scratch.
  TWEAKOPS_WARM_EPOCHS=k      with WARM_FROM, when the model is the parent's (every layer
      matched as it is, none of the parent's left over): fit gets initial_epoch=k and trains
      the epochs after k (the metrics' epochs start at k+1); a script asking for <= k epochs
      trains one more (its last).
      Metrics: "warm_start": {"from", "layers", "of", "widened", "initial_epoch"}.
      A BackupAndRestore checkpoint (a restarted attempt) still wins: it replaces the loaded
      weights and the epoch.
  TWEAKOPS_DEADLINE=unix time (read when each fit starts) no epoch starts that the median
      epoch so far says would end past it, and a batch ending past it stops the fit at once
      (that epoch's record gets "cut": true). A stopped fit gets back the weights of its best
      whole epoch (val accuracy, else training accuracy; the first of equals), so the script's
      evaluate sees them. Metrics: "stopped_at_deadline": true, "kept_epoch": n.

What the harness adds must never be the reason a script fails: an unbuilt model
(a `Sequential()` filled by `model.add` with no input shape, a subclassed
`keras.Model`) is built from the first batch of its own data so the checkpoint can
apply; where an addition cannot apply (a Python generator it cannot peek into, an
error inside one of its callbacks), that addition is dropped with one
`tweakops: ...` line in the log, never the attempt.

Runtimes (TWEAKOPS_RUNTIME, from detect_type.py's MODEL_RUNTIME):
  keras3   the installed Keras 3 (`import keras`, `tf.keras`)
  keras2   Keras 2 scripts run unmodified on tf_keras (TensorFlow's Keras 2 package)
           with TF_USE_LEGACY_KERAS=1: `import keras` and every `keras.*` module are
           pointed at tf_keras, the old module paths (`keras.utils.np_utils`,
           `keras.layers.convolutional|core|normalization|embeddings|recurrent|...`)
           at their Keras 2 homes; `Adam(lr=...)` means learning_rate (tf_keras
           would warn and silently keep 0.001), `decay=` is Keras 2's time-based decay;
           `Sequential.predict_classes`/`predict_proba` are back. `nb_epoch=` (Keras 1)
           is `epochs=` in fit and fit_generator, in any runtime (keras1_epochs: it wraps
           the harness's own fit, which must see `epochs`).
  sklearn  scikit-learn

Build check (TWEAKOPS_BUILD_CHECK=1): the script runs up to its first `fit`, which
trains one step and stops the script: exit 0 and `tweakops: build check passed` when
the model builds, the script's own error otherwise. A few seconds, no training, no warm
start, no weights written.

A script that fails on a missing module or on a download (no network here) ends with
one `tweakops: error: ...` line naming the module or the URL and what to do.

When the script returns or raises, TWEAKOPS_RESULT gets {"exit_code": n, "finished_at": t}
(+ "reason": "never-trained" for exit 65; + "reason": "build-failed" for a Keras script
that failed before its first training step ended — the model does not build, or its
first step does not run — and for a scikit-learn estimator that refused its parameters
(InvalidParameterError): train.py discards such a tweak without spending an attempt);
after a SIGKILL from outside it is absent,
which is how the watchdog tells a crash from a clean exit; the memory watch's own kill
leaves its "reason": "oom" record.

Exit codes: the script's own (0, its sys.exit code, 1 when it raises), 65 for a Keras
script that never trains, 137 (SIGKILL) when the memory watch stopped it.

It runs inside the Docker images too, so it needs only the standard library plus the
framework the script uses, and never imports tweakops' own modules.

    $ TWEAKOPS_METRICS=m.json TWEAKOPS_FRAMEWORK=keras python scripts/harness.py model.py
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import inspect
import json
import math
import os
import random
import re
import runpy
import shutil
import signal
import statistics
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

ENV = os.environ
FRAMEWORK = ENV.get("TWEAKOPS_FRAMEWORK", "keras")        # keras or sklearn
METRICS = ENV.get("TWEAKOPS_METRICS")                      # per-epoch metrics (JSON)
HEARTBEAT = ENV.get("TWEAKOPS_HEARTBEAT")                  # touched while training
RESULT = ENV.get("TWEAKOPS_RESULT")                        # {"exit_code": n} at exit
CHECKPOINT_DIR = ENV.get("TWEAKOPS_CHECKPOINT_DIR")        # BackupAndRestore backups
REFERENCE = ENV.get("TWEAKOPS_REFERENCE")                  # metrics of the best attempt
SEED = int(ENV.get("TWEAKOPS_SEED", "42"))
ATTEMPT = int(ENV.get("TWEAKOPS_ATTEMPT", "0"))
HOPELESS_MARGIN = float(ENV.get("TWEAKOPS_HOPELESS_MARGIN", "0.25"))  # val accuracy gap that stops an attempt
HOPELESS_FROM_EPOCH = int(ENV.get("TWEAKOPS_HOPELESS_FROM_EPOCH", "2"))  # never judge before this epoch
RUNTIME = ENV.get("TWEAKOPS_RUNTIME") or ("sklearn" if FRAMEWORK == "sklearn" else "keras3")
WEIGHTS_OUT = ENV.get("TWEAKOPS_WEIGHTS_OUT")              # the trained weights (+ their layer list)
WARM_FROM = ENV.get("TWEAKOPS_WARM_FROM")                  # a parent attempt's WEIGHTS_OUT
BUILD_CHECK = ENV.get("TWEAKOPS_BUILD_CHECK", "") not in ("", "0")
if BUILD_CHECK:  # a check of a candidate, not an attempt: it leaves no state behind
    METRICS = HEARTBEAT = RESULT = CHECKPOINT_DIR = WEIGHTS_OUT = WARM_FROM = None


def _positive(name: str, default: float) -> float:
    try:
        value = float(ENV.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


HEARTBEAT_EVERY = _positive("TWEAKOPS_HEARTBEAT_EVERY", 2.0)   # seconds between heartbeat checks
MEMORY_LIMIT = int(_positive("TWEAKOPS_MEMORY_LIMIT", 0) or 0)  # bytes the attempt may use; 0 = not watched
MEMORY_EVERY = 0.2       # seconds between two looks at the memory
SCAN_EVERY = 1.0         # seconds between two looks for the attempt's processes
CPU_PROGRESS = 0.05      # share of one core over a heartbeat interval that counts as progress
FINISHERS: list = []     # called once the script ended well, before the metrics' last save
TRAIN_SAMPLE = 500       # training rows a scikit-learn classifier's training accuracy is measured on (±0.02)
EXIT_NEVER_TRAINED = 65  # a Keras script that never trains (sysexits' EX_DATAERR)
EXIT_KILLED = 128 + 9    # SIGKILL


def note(message: str) -> None:
    """One line of the harness's own in the attempt's log."""
    print(f"tweakops: {message}", file=sys.stderr, flush=True)


def _write_json(path: str, data: dict) -> None:
    """Atomic: a reader (parse_accuracy, the watchdog) never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, target)


class Metrics:
    """The metrics file: loaded on start so a resumed attempt keeps its earlier epochs."""

    def __init__(self):
        self.data = {"framework": FRAMEWORK, "attempt": ATTEMPT, "epochs": [], "evaluate": None,
                     "scores": [], "accuracy": None, "accuracy_source": None,
                     "resumed_from_epoch": 0, "stopped_early": False, "finished": False}
        if METRICS and Path(METRICS).exists():
            try:
                old = json.loads(Path(METRICS).read_text())
                self.data["epochs"] = old.get("epochs", [])
                self.data["restarts"] = old.get("restarts", 0) + 1
            except (OSError, ValueError):
                pass

    def save(self) -> None:
        self.data["accuracy"], self.data["accuracy_source"] = self.best_figure()
        if METRICS:
            _write_json(METRICS, self.data)

    def best_figure(self):
        """Held-out first: evaluate > last val accuracy > sklearn score > training accuracy."""
        if self.data["evaluate"]:
            acc = _accuracy_of(self.data["evaluate"], prefix="")
            if acc is not None:
                return acc, "evaluate"
        if self.data["epochs"]:
            last = self.kept_record()
            acc = _accuracy_of(last, prefix="val_")
            if acc is not None:
                return acc, "val_accuracy"
        if self.data["scores"]:
            return self.data["scores"][-1], "score"
        if self.data["epochs"]:
            acc = _accuracy_of(self.kept_record(), prefix="")
            if acc is not None:
                return acc, "training_accuracy"
        return None, None

    def kept_record(self) -> dict:
        """The last epoch, or the one the time cap kept (its weights are the model's)."""
        epochs = self.data["epochs"]
        kept = self.data.get("kept_epoch")
        if kept:
            fit = epochs[-1].get("fit", 0)
            for record in reversed(epochs):
                if record.get("fit", 0) == fit and record.get("epoch") == kept:
                    return record
        return epochs[-1]


def _accuracy_of(logs: dict, prefix: str):
    for key in ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy"):
        value = logs.get(prefix + key)
        if isinstance(value, (int, float)):
            return float(value)
    return None


METRICS_FILE = Metrics()


def output_units(model) -> int | None:
    """The width of a Keras model's (first) output: its classes for a classifier."""
    try:
        outputs = getattr(model, "outputs", None)
        shape = outputs[0].shape if outputs else model.output_shape
        units = shape[-1]
        return int(units) if units else None
    except Exception:  # noqa: BLE001 - subclassed models may not say
        return None


BEAT_LOCK = threading.Lock()   # the watch thread and an epoch's end both beat


def beat(epoch: int = 0, batch: int = 0) -> None:
    if HEARTBEAT:
        path = Path(HEARTBEAT)
        with BEAT_LOCK:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(f"{ATTEMPT} {epoch} {batch} {time.time():.3f}\n")
            os.replace(tmp, path)


PROGRESS = {"epoch": 0, "batch": 0, "steps": 0}   # where training is; steps counts every advance


def advanced(epoch: int, batch: int = 0, now: bool = False) -> None:
    """A batch or an epoch ended: the next heartbeat check beats (`now`: this one does)."""
    PROGRESS.update(epoch=epoch, batch=batch, steps=PROGRESS["steps"] + 1)
    if now:
        beat(epoch, batch)


# ---------------------------------------------------------------------------
# The watch: heartbeat (progress) and memory, one daemon thread

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_table() -> dict[int, tuple[int, int, float]]:
    """{pid: (parent pid, process group, CPU seconds)} of the live processes /proc shows."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            if fields[0] != b"Z":
                table[int(name)] = (int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
        except (OSError, ValueError, IndexError):
            continue
    return table


def attempt_processes(table: dict, me: int) -> set[int]:
    """This process, its descendants, and its process group when it leads one (a cold
    run's or a warm child's session: never the group of whoever started it by hand)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {me}, [me]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    if os.getpgrp() == me:
        found |= {pid for pid, (_, group, _) in table.items() if group == me}
    return found


def memory_of(pid: int) -> int:
    """Bytes of `pid`: PSS + swapped PSS (shared pages split among their sharers), else RSS."""
    try:
        pss = swap = None
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith(b"SwapPss:"):
                    swap = int(line.split()[1]) * 1024
        if pss is not None:
            return pss + (swap or 0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


class Watch:
    """The heartbeat (beats only on progress) and the memory limit, in one daemon thread."""

    def __init__(self):
        self.me = os.getpid()
        self.members = {self.me}
        self.cpu: dict[int, float] = {}
        self.peak = 0
        self.steps = PROGRESS["steps"]
        self.own_cpu = 0.0
        self.failed = False

    def start(self) -> "Watch":
        if HEARTBEAT or MEMORY_LIMIT:
            threading.Thread(target=self.run, name="tweakops-watch", daemon=True).start()
        return self

    def run(self) -> None:
        self.own_cpu = time.thread_time()
        tick = min(MEMORY_EVERY, HEARTBEAT_EVERY) if MEMORY_LIMIT else min(SCAN_EVERY, HEARTBEAT_EVERY)
        now = time.monotonic()
        next_scan, next_beat = now, now + HEARTBEAT_EVERY
        table: dict = {}
        while True:
            time.sleep(tick)
            try:
                now = time.monotonic()
                beat_due = HEARTBEAT and now >= next_beat
                if now >= next_scan or beat_due:
                    table = process_table()
                    self.members = attempt_processes(table, self.me) if table else {self.me}
                    next_scan = now + SCAN_EVERY
                if MEMORY_LIMIT:
                    self.check_memory()
                if beat_due:
                    next_beat = now + HEARTBEAT_EVERY
                    if self.progressed(table):
                        beat(PROGRESS["epoch"], PROGRESS["batch"])
            except Exception as exc:  # noqa: BLE001 - the watch must never end the attempt
                if not self.failed:
                    self.failed = True
                    note(f"the heartbeat and memory watch hit an error (it goes on): {_one_line(exc)}")

    def progressed(self, table: dict) -> bool:
        """A batch or epoch ended, or the attempt's processes used CPU since the last check."""
        stepped = PROGRESS["steps"] != self.steps
        self.steps = PROGRESS["steps"]
        cpu = {pid: table[pid][2] for pid in self.members if pid in table}
        if not cpu:  # no /proc: this process's own time
            times = os.times()
            cpu = {self.me: times.user + times.system}
        used = sum(max(0.0, seconds - self.cpu.get(pid, 0.0)) for pid, seconds in cpu.items())
        self.cpu = cpu
        own = time.thread_time()
        used -= own - self.own_cpu
        self.own_cpu = own
        return stepped or used >= CPU_PROGRESS * HEARTBEAT_EVERY

    def check_memory(self) -> None:
        used = sum(memory_of(pid) for pid in self.members)
        self.peak = max(self.peak, used)
        if used > MEMORY_LIMIT:
            self.out_of_memory(used)

    def out_of_memory(self, used: int) -> None:
        """Record why, say it in one line, SIGKILL the attempt's processes (this one last)."""
        if RESULT:
            _write_json(RESULT, {"exit_code": EXIT_KILLED, "reason": "oom", "limit": MEMORY_LIMIT, "used": used,
                                 "attempt": ATTEMPT, "finished_at": time.time()})
        mib = 1 << 20
        note(f"error: out of memory: the attempt used {used / mib:.0f} MiB, over the {MEMORY_LIMIT / mib:.0f} MiB "
             "TRAIN_MEMORY allows; stopped it")
        with_group = os.getpgrp() == self.me
        self.members = attempt_processes(process_table(), self.me)   # fresh: no pid reused since the last look
        for pid in sorted(self.members - {self.me}):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if with_group:
            try:
                os.killpg(self.me, signal.SIGKILL)
            except OSError:
                pass
        os.kill(self.me, signal.SIGKILL)


def _reference_curve() -> list:
    """The best attempt's val accuracy by epoch number (index e-1 is epoch e) of its last
    fit: a best that continued from its parent at epoch k has None before k+1, so an
    attempt trained from scratch is never judged against epochs it has not had."""
    if not REFERENCE:
        return []
    try:
        epochs = [e for e in json.loads(Path(REFERENCE).read_text()).get("epochs", []) if isinstance(e, dict)]
    except (OSError, ValueError):
        return []
    last = max((e.get("fit", 0) for e in epochs), default=0)
    curve: list = []
    for e in epochs:
        n = e.get("epoch")
        if e.get("fit", 0) != last or not isinstance(n, int) or n < 1:
            continue
        curve.extend([None] * (n - len(curve)))
        curve[n - 1] = _accuracy_of(e, "val_")
    return curve


# ---------------------------------------------------------------------------
# Weights: what an attempt leaves for the next one to start from

TRAINED = {"model": None, "epoch": 0, "diverged": False}   # the latest fit's model, its epoch, its loss went NaN
TRAINING = {"calls": 0, "model": False,   # training calls that ran; whether the script made a Keras model
            "stepped": False,             # whether a training step (a batch of fit, a train_on_batch) ended
            "invalid": False}             # a scikit-learn estimator refused its parameters


def layers_file(weights: str | Path) -> Path:
    """The layer list beside a weights file: `attempt-3.weights.h5` -> `attempt-3.weights.json`."""
    return Path(weights).with_suffix(".json")


def layer_table(model) -> list:
    """Per layer of the model, in model order: name, class, the shapes of its weights."""
    return [{"name": layer.name, "class": type(layer).__name__,
             "shapes": [[int(d) for d in w.shape] for w in layer.weights]} for layer in model.layers]


def save_weights(model, path: str, epochs: int) -> None:
    """The weights of each layer (`layer.get_weights()`) in an HDF5 file of tweakops' own
    layout, `layers/<index:04d>/<j>`, and the layer list as JSON beside it. Per layer, not
    `Model.save_weights`: a warm start matches layers across two architectures, and Keras 3's
    and tf_keras' files key their weights differently. Atomic, both files."""
    import h5py

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.weights.h5")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["tweakops_layers"] = 1
            for i, layer in enumerate(model.layers):
                group = f.create_group(f"layers/{i:04d}")
                group.attrs["name"], group.attrs["class"] = layer.name, type(layer).__name__
                for j, array in enumerate(layer.get_weights()):
                    group.create_dataset(str(j), data=array)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_json(str(layers_file(target)), {"attempt": ATTEMPT, "runtime": RUNTIME, "epochs_trained": epochs,
                                           "layers": layer_table(model)})


def save_trained() -> None:
    """TWEAKOPS_WEIGHTS_OUT: the latest fit's model, after each fit and at the end of the
    script. Never the reason an attempt fails: one line and the attempt goes on."""
    model = TRAINED["model"]
    if not WEIGHTS_OUT or model is None or TRAINED["diverged"]:
        return  # a diverged model's weights (NaN) are nothing to start from
    try:
        save_weights(model, WEIGHTS_OUT, TRAINED["epoch"])
    except Exception as exc:  # noqa: BLE001
        note(f"the trained weights were not saved to {WEIGHTS_OUT}: {_one_line(exc)}")
        return
    METRICS_FILE.data["weights"] = WEIGHTS_OUT
    METRICS_FILE.data["epochs_trained"] = TRAINED["epoch"]
    METRICS_FILE.save()


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


# Classes whose weights index units independently along each axis, (..., inputs, units) for a
# kernel: a wider one takes its parent's weights as its leading slice (Net2Net-style).
WIDENABLE = {"Dense", "Conv1D", "Conv2D", "Conv3D", "BatchNormalization"}


def _widening(parent: dict, child: dict, grown_in):
    """How many units `child` has over `parent` when it is `parent` widened, else None.

    grown_in: the units the layer before it gained (0 when it matched as it is, None when
    it starts fresh). A kernel's input axis must have grown by exactly that much (a Dense
    after a Flatten of wider filters grows by more: its rows would not line up), its other
    axes but the units must be equal; a layer of 1-D weights only (BatchNormalization)
    grows with its input."""
    if grown_in is None or child["class"] not in WIDENABLE or parent["class"] != child["class"] \
            or len(parent["shapes"]) != len(child["shapes"]):
        return None
    pairs = list(zip(parent["shapes"], child["shapes"]))
    if any(len(p) != len(c) or any(a > b for a, b in zip(p, c)) for p, c in pairs):
        return None
    kernels = [(p, c) for p, c in pairs if len(c) >= 2]
    grown = kernels[0][1][-1] - kernels[0][0][-1] if kernels else grown_in
    for p, c in pairs:
        if len(c) >= 2 and (p[:-2] != c[:-2] or c[-2] - p[-2] != grown_in or c[-1] - p[-1] != grown):
            return None
        if len(c) == 1 and c[0] - p[0] != grown:
            return None
    return grown if (grown or grown_in) else None


def match_layers(child: list, parent: list) -> dict:
    """{child layer index: (parent layer index, "same" or "widened")} for the layers with
    weights: same name and shapes first; then, in model order, the next unused parent layer
    of the same class and shapes (an inserted layer shifts the auto-generated names of those
    after it); then a wider layer takes a narrower parent's weights (WIDENABLE)."""
    pairs, used, names = {}, set(), {}
    for i, layer in enumerate(parent):
        if layer["shapes"]:
            names.setdefault(layer["name"], i)

    def same(c, p):
        return c["class"] == p["class"] and c["shapes"] == p["shapes"]

    for ci, c in enumerate(child):
        pi = names.get(c["name"])
        if c["shapes"] and pi is not None and same(c, parent[pi]):
            pairs[ci] = (pi, "same")
            used.add(pi)
    for ci, c in enumerate(child):
        if c["shapes"] and ci not in pairs:
            pi = next((i for i, p in enumerate(parent) if i not in used and p["shapes"] and same(c, p)), None)
            if pi is not None:
                pairs[ci] = (pi, "same")
                used.add(pi)
    grown = 0
    for ci, c in enumerate(child):
        if not c["shapes"]:
            continue
        if ci in pairs:
            grown = 0
            continue
        candidates = [names.get(c["name"])] + [i for i, p in enumerate(parent) if p["class"] == c["class"]]
        pi = next((i for i in candidates if i is not None and i not in used
                   and _widening(parent[i], c, grown) is not None), None)
        grown = None if pi is None else _widening(parent[pi], c, grown)
        if pi is not None:
            pairs[ci] = (pi, "widened")
            used.add(pi)
    return pairs


def load_warm(model, path: str) -> dict:
    """Load into `model` (built) every layer of the weights file at `path` that matches
    (match_layers); the others keep their fresh initialisation. All or nothing: on an error
    the model gets its fresh weights back and the error is raised."""
    import h5py

    parent_info = json.loads(layers_file(path).read_text())
    parent = parent_info["layers"]
    child = layer_table(model)
    pairs = match_layers(child, parent)
    loaded = {}
    with h5py.File(path, "r") as f:
        for ci, (pi, how) in pairs.items():
            arrays = [f[f"layers/{pi:04d}/{j}"][()] for j in range(len(parent[pi]["shapes"]))]
            if [list(a.shape) for a in arrays] != parent[pi]["shapes"]:
                raise ValueError(f"the weights of layer {parent[pi]['name']} do not have the shapes its list gives")
            if how == "widened":
                fresh = model.layers[ci].get_weights()
                for w, a in zip(fresh, arrays):
                    w[tuple(slice(0, n) for n in a.shape)] = a
                arrays = fresh
            loaded[ci] = arrays
    before = model.get_weights()
    try:
        for ci, arrays in loaded.items():
            model.layers[ci].set_weights(arrays)
    except Exception:
        model.set_weights(before)
        raise
    weighted = [c for c in child if c["shapes"]]
    widened = sum(how == "widened" for _, how in pairs.values())
    return {"layers": len(pairs), "of": len(weighted), "widened": widened, "attempt": parent_info.get("attempt"),
            "whole": bool(weighted) and len(pairs) == len(weighted) and not widened
            and len(pairs) == sum(1 for p in parent if p["shapes"])}


def _env_number(name: str, kind):
    """An optional numeric variable; a malformed one is ignored with one line."""
    text = ENV.get(name, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        note(f"{name}={text!r} is not a number; ignored")
        return None


# ---------------------------------------------------------------------------
# Keras

# Keras 2 module paths that Keras 2.x itself had already folded into `keras.layers`
# (and older homes of a few utilities): where tf_keras keeps each of them now.
KERAS2_MODULES = {
    **{f"keras.layers.{old}": "tf_keras.layers" for old in (
        "convolutional", "core", "normalization", "embeddings", "recurrent", "pooling", "merge",
        "advanced_activations", "wrappers", "noise", "convolutional_recurrent", "local",
        "normalization_v2", "dense_attention", "cudnn_recurrent", "recurrent_v2")},
    "keras.utils.np_utils": "tf_keras.utils",
    "keras.utils.generic_utils": "tf_keras.utils",
    "keras.utils.vis_utils": "tf_keras.utils",
    "keras.utils.data_utils": "tf_keras.utils",
}


class KerasToTfKeras(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import keras` / `from keras.x import y` get tf_keras' own module objects.

    Aliasing in sys.modules (not a second copy of tf_keras under another name) keeps one
    class per layer, so isinstance checks inside tf_keras hold for the script's layers.
    """

    @staticmethod
    def target(name: str) -> str:
        return KERAS2_MODULES.get(name) or "tf_keras" + name[len("keras"):]

    def find_spec(self, name, path=None, target=None):
        if name != "keras" and not name.startswith("keras."):
            return None
        if importlib.util.find_spec(self.target(name)) is None:
            return None  # a module Keras 2 never had: the usual ModuleNotFoundError
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return importlib.import_module(self.target(spec.name))

    def exec_module(self, module):
        pass  # tf_keras ran it already


def _muted_fd2(fn):
    """Run fn with fd 2 on /dev/null: TensorFlow's import-time C++ chatter (absl,
    oneDNN notes) is written before its logging starts, so TF_CPP_MIN_LOG_LEVEL cannot
    reach it. The user's script has not run yet, and a Python error is still raised."""
    if ENV.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        return fn()
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        return fn()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_import_keras():
    """The Keras the script's runtime uses: Keras 3, or tf_keras behind `import keras`."""
    if RUNTIME != "keras2":
        def load():
            import keras
            return keras
        return _muted_fd2(load)
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras is tf_keras too

    def load_legacy():
        import tensorflow  # noqa: F401  (imports its Keras 2 under TF_USE_LEGACY_KERAS)
        import tf_keras
        return tf_keras
    try:
        tf_keras = _muted_fd2(load_legacy)
    except ImportError as exc:
        raise SystemExit(f"tweakops: error: this Keras 2 script needs tf_keras ({exc}); "
                         "install requirements-nodeps.txt (make setup does) or use an image that carries it")
    for name in [n for n in sys.modules if n == "keras" or n.startswith("keras.")]:
        del sys.modules[name]  # a Keras 3 that TensorFlow's import touched
    sys.meta_path.insert(0, KerasToTfKeras())
    for old, new in KERAS2_MODULES.items():
        # `from keras.layers.core import Dense` resolves through the finder; `from
        # keras.utils import np_utils` asks the package for an attribute first
        parent, _, leaf = ("tf_keras" + old[len("keras"):]).rpartition(".")
        module = importlib.import_module(parent)
        if not hasattr(module, leaf):
            setattr(module, leaf, importlib.import_module(new))
    legacy_api(tf_keras)
    return tf_keras


# numpy 2 dropped these aliases; keras-preprocessing 1.1.2 (pad_sequences) and Keras 2
# era scripts still use them
NUMPY_ALIASES = {"unicode_": "str_", "string_": "bytes_", "float_": "float64", "complex_": "complex128"}


def legacy_api(keras) -> None:
    """Keras 2 idioms that tf_keras dropped or silently ignores."""
    import numpy as np

    for old, new in NUMPY_ALIASES.items():
        if not hasattr(np, old):
            setattr(np, old, getattr(np, new))

    def predict_classes(self, x, batch_size=32, verbose=0):
        proba = np.asarray(self.predict(x, batch_size=batch_size, verbose=verbose))
        if proba.shape[-1] > 1:
            return proba.argmax(axis=-1)
        return (proba > 0.5).astype("int32")

    def predict_proba(self, x, batch_size=32, verbose=0):
        return self.predict(x, batch_size=batch_size, verbose=verbose)

    for cls in (keras.Sequential, keras.Model):
        if not hasattr(cls, "predict_classes"):
            cls.predict_classes = predict_classes
        if not hasattr(cls, "predict_proba"):
            cls.predict_proba = predict_proba

    base = keras.optimizers.Optimizer
    for name in dir(keras.optimizers):
        cls = getattr(keras.optimizers, name)
        if isinstance(cls, type) and issubclass(cls, base) and "__init__" in cls.__dict__:
            cls.__init__ = _keras2_optimizer_init(keras, cls.__init__)


def _keras2_optimizer_init(keras, init):
    def __init__(self, *args, **kwargs):
        if "lr" in kwargs:  # Keras 2's name of the learning rate
            kwargs.setdefault("learning_rate", kwargs.pop("lr"))
            kwargs.pop("lr", None)
        decay = kwargs.pop("decay", None)
        if decay:  # Keras 2's time-based decay: lr / (1 + decay * iterations)
            rate = kwargs.get("learning_rate", args[0] if args else 0.001)
            kwargs["learning_rate"] = keras.optimizers.schedules.InverseTimeDecay(rate, 1, decay)
            args = args[1:]
        init(self, *args, **kwargs)
    return __init__


class BuildChecked(BaseException):
    """Raised by fit in build-check mode: the model built and took one step.
    A BaseException, so a script's own `except Exception` does not swallow it."""


def first_batch(x, y, batch_size):
    """The first batch of fit's data without consuming it, or None where that is not
    possible (a Python generator)."""
    import numpy as np

    if hasattr(x, "take") and hasattr(x, "element_spec"):   # tf.data.Dataset
        return next(iter(x.take(1)))
    if hasattr(x, "__getitem__") and hasattr(x, "__len__") and not isinstance(x, (np.ndarray, list, tuple, dict)):
        return x[0]                                          # keras.utils.PyDataset / Sequence
    n = batch_size or 32
    if isinstance(x, dict):
        xs = {k: np.asarray(v)[:n] for k, v in x.items()}
    elif isinstance(x, (list, tuple)):
        xs = [np.asarray(v)[:n] for v in x]
    elif hasattr(x, "shape"):
        xs = x[:n]
    else:
        return None
    return (xs,) if y is None else (xs, y[:n])


def patch_keras() -> None:
    keras = quiet_import_keras()
    keras.utils.set_random_seed(SEED)
    reference = _reference_curve()
    fit_calls = [0]

    class Guarded:
        """Mixed into each callback the harness adds: an error inside it turns that
        callback off with one line; the script's training goes on."""

        what = "a tweakops callback"

        def _guard(self, hook, *args, **kwargs):
            if getattr(self, "_off", False):
                return None
            try:
                return hook(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - anything ours must not fail the script
                self._off = True
                note(f"{self.what} is off for this fit: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                return None

    def guarded(cls, what):
        hooks = [name for name in dir(cls) if name.startswith("on_")]
        members = {"what": what}
        for name in hooks:
            members[name] = (lambda name: lambda self, *a, **k: self._guard(getattr(super(new, self), name), *a, **k))(name)
        new = type(f"Guarded{cls.__name__}", (Guarded, cls), members)
        return new

    class Recorder(keras.callbacks.Callback):
        """Per-epoch metrics, heartbeat, and the hopeless-attempt stop."""

        def __init__(self, fit_index: int, warm_epoch: int = 0):
            super().__init__()
            self.fit_index = fit_index
            self.warm_epoch = warm_epoch  # where a warm start continues: not a resume
            self.epoch = 0
            self.began = False
            self.diverged = False

        def on_train_begin(self, logs=None):
            # the checkpoint restores after this (it comes after the Recorder): the epoch
            # a resumed fit starts at is told by its first epoch, or, for a fit killed
            # after its last epoch that runs none, at its end (on_train_end)
            outputs = output_units(self.model)
            if outputs:
                METRICS_FILE.data["outputs"] = outputs   # the classes: what chance is (diagnose.py)
            TRAINED["epoch"] = self.warm_epoch
            advanced(0, now=True)

        def on_train_end(self, logs=None):
            if not self.began:
                self.begin(getattr(self.model, "_initial_epoch", 0) or 0)

        def begin(self, epoch: int) -> None:
            """Once per fit: epochs a resumed run will not redo stay, later ones go."""
            self.began = True
            TRAINED["epoch"] = epoch
            if epoch and epoch != self.warm_epoch:
                METRICS_FILE.data["resumed_from_epoch"] = epoch
                print(f"tweakops: resuming from the checkpoint at epoch {epoch}", flush=True)
            METRICS_FILE.data["epochs"] = [e for e in METRICS_FILE.data["epochs"]
                                           if e.get("fit", 0) < self.fit_index or e["epoch"] <= epoch]

        def on_epoch_begin(self, epoch, logs=None):
            if not self.began:
                self.begin(epoch)
            self.epoch = epoch + 1
            self.started = time.time()

        def on_train_batch_end(self, batch, logs=None):
            TRAINING["stepped"] = True
            advanced(self.epoch, batch + 1)
            self._check_loss(logs, self.epoch)

        def on_epoch_end(self, epoch, logs=None):
            record = {"fit": self.fit_index, "epoch": epoch + 1, "time": round(time.time() - self.started, 3)}
            record.update({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))})
            METRICS_FILE.data["epochs"].append(record)
            METRICS_FILE.save()
            TRAINED["epoch"] = epoch + 1
            advanced(epoch + 1, now=True)
            self._check_loss(logs, epoch + 1)
            if not self.diverged:
                self._judge(epoch + 1, record)

        def _check_loss(self, logs, epoch: int) -> None:
            """A NaN or infinite loss stops the fit (TerminateOnNaN), with one line."""
            loss = (logs or {}).get("loss")
            if self.diverged or loss is None:
                return
            try:
                value = float(loss)
            except (TypeError, ValueError):
                return
            if math.isfinite(value):
                return
            self.diverged = TRAINED["diverged"] = True
            METRICS_FILE.data.setdefault("diverged", epoch)
            METRICS_FILE.save()
            what = "NaN" if math.isnan(value) else "infinite"
            note(f"the loss became {what} at epoch {epoch}: the training diverged; "
                 "a smaller learning rate usually fixes it")
            self.model.stop_training = True

        def _judge(self, epoch: int, record: dict) -> None:
            mine = _accuracy_of(record, "val_")
            if mine is None or epoch < HOPELESS_FROM_EPOCH or epoch > len(reference) or reference[epoch - 1] is None:
                return
            if epoch >= self.params.get("epochs", 0):
                return  # the last epoch: nothing left to save
            best = reference[epoch - 1]
            if best - mine > HOPELESS_MARGIN:
                print(f"tweakops: stopping early: val_accuracy {mine:.4f} at epoch {epoch} trails the best "
                      f"attempt ({best:.4f} at epoch {epoch}) by more than {HOPELESS_MARGIN}", flush=True)
                METRICS_FILE.data["stopped_early"] = True
                METRICS_FILE.save()
                self.model.stop_training = True

    class EvaluateRecorder(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            METRICS_FILE.data["evaluate"] = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            METRICS_FILE.save()

    class Deadline(keras.callbacks.Callback):
        """The time cap (TWEAKOPS_DEADLINE): no epoch starts that would end past it (the
        median epoch so far tells), a batch that ends past it stops the fit at once, and a fit
        stopped so gets back the weights of its best epoch (val accuracy, else training
        accuracy; the last whole epoch without either), so the script's evaluate sees them."""

        def __init__(self, at: float):
            super().__init__()
            self.at = at
            self.times = []
            self.best = None        # (epoch, accuracy or None, which, weights)
            self.last = 0           # the last whole epoch
            self.cut = False        # stopped inside an epoch
            self.stopped = False

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()
            self.last = epoch  # the whole epochs so far (a resumed or warm fit starts past 0)

        def on_train_batch_end(self, batch, logs=None):
            if not self.stopped and time.time() > self.at:
                self.stopped = self.cut = True
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            now = time.time()
            if self.cut:  # a part of an epoch: recorded, never kept
                if METRICS_FILE.data["epochs"] and METRICS_FILE.data["epochs"][-1].get("epoch") == epoch + 1:
                    METRICS_FILE.data["epochs"][-1]["cut"] = True
                return
            self.times.append(now - self.started)
            self.last = epoch + 1
            logs = logs or {}
            which = "val_accuracy" if _accuracy_of(logs, "val_") is not None else "accuracy"
            acc = _accuracy_of(logs, "val_") if which == "val_accuracy" else _accuracy_of(logs, "")
            if self.best is None or acc is None or (self.best[1] is not None and acc > self.best[1]):
                self.best = (epoch + 1, acc, which, self.model.get_weights())
            if epoch + 1 < self.params.get("epochs", 0) and now + statistics.median(self.times) > self.at:
                self.stopped = True
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if not self.stopped:
                return
            total = self.params.get("epochs", "?")
            where = f"in epoch {self.last + 1} of {total}" if self.cut else f"after epoch {self.last} of {total}"
            METRICS_FILE.data["stopped_at_deadline"] = True
            if self.best is None:
                note(f"stopped at the time cap (MAX_MINUTES) {where}, before an epoch finished")
                TRAINED["epoch"] = self.last
                METRICS_FILE.data.pop("kept_epoch", None)  # an earlier fit's: not this model's state
                METRICS_FILE.save()
                return
            kept, acc, which, weights = self.best
            if self.cut or kept != self.last:
                self.model.set_weights(weights)
            TRAINED["epoch"] = kept
            METRICS_FILE.data["kept_epoch"] = kept
            METRICS_FILE.save()
            figure = f" ({which} {acc:.4f})" if acc is not None else ""
            note(f"stopped at the time cap (MAX_MINUTES) {where}; kept epoch {kept}{figure}")

    SafeRecorder = guarded(Recorder, "metrics recording")
    SafeDeadline = guarded(Deadline, "the time cap (TWEAKOPS_DEADLINE)")
    SafeEvaluateRecorder = guarded(EvaluateRecorder, "evaluate recording")
    class TornProofBackup(keras.callbacks.BackupAndRestore):
        """BackupAndRestore that survives a kill in the middle of its own save. Keras
        writes training_metadata.json in place, so a SIGKILL there leaves it torn; it
        falls back to the previous weights itself only when the weights file is torn and
        a previous one exists. Here a torn metadata file also takes the previous backup
        pair (double_checkpoint: one epoch redone, not all of them), and a save with no
        good one before it (a kill in the first save) is removed, so the fit starts over
        with its checkpoint on: left in place, every restart would find it torn again and
        train without one, from the first epoch each time."""

        def on_train_begin(self, logs=None):
            try:
                super().on_train_begin(logs)
                return
            except (ValueError, OSError):   # torn metadata (JSONDecodeError), torn weights (h5)
                pass
            prev_weights = getattr(self, "_prev_weights_path", None)
            prev_meta = getattr(self, "_prev_training_metadata_path", None)
            if prev_weights and prev_meta and os.path.exists(prev_weights) and os.path.exists(prev_meta):
                shutil.copyfile(prev_weights, self._weights_path)
                shutil.copyfile(prev_meta, self._training_metadata_path)
                try:
                    self._load_model()
                    note("the checkpoint's last save was torn by a kill; resuming from the one before")
                    return
                except (ValueError, OSError):
                    pass
            for path in (self._weights_path, self._training_metadata_path, prev_weights, prev_meta):
                if path and os.path.exists(path):
                    os.remove(path)
            self.model._initial_epoch = 0
            note("the checkpoint's only save was torn by a kill; this fit starts over")

    SafeBackup = guarded(TornProofBackup if RUNTIME != "keras2" else keras.callbacks.BackupAndRestore,
                         "the checkpoint (BackupAndRestore)")
    backup_options = {}
    if "double_checkpoint" in inspect.signature(keras.callbacks.BackupAndRestore).parameters:
        # Keras 3: a SIGKILL in the middle of a save leaves the previous backup to load
        backup_options["double_checkpoint"] = True

    original_fit = keras.Model.fit
    original_evaluate = keras.Model.evaluate
    count_training(keras)

    def ensure_built(model, args, kwargs, keras2: bool = False) -> str | None:
        """Build an unbuilt model from its first batch; None, or why it could not be.
        Keras 2 only when asked (keras2): its checkpoint restores into an unbuilt model
        lazily, a warm start cannot."""
        if model.built or (RUNTIME == "keras2" and not keras2):
            return None
        x = args[0] if args else kwargs.get("x")
        y = args[1] if len(args) > 1 else kwargs.get("y")
        try:
            batch = first_batch(x, y, kwargs.get("batch_size"))
            if batch is None:
                return "its data is a Python generator, which cannot be peeked at before fit"
            if RUNTIME == "keras2":
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            else:
                model._symbolic_build(data_batch=tuple(batch) if isinstance(batch, list) else batch)
        except Exception as exc:  # noqa: BLE001
            return f"building it from the first batch failed ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        return None if model.built else "it is still unbuilt after a build from the first batch"

    def warm_start(model, args, kwargs) -> int:
        """TWEAKOPS_WARM_FROM on the script's first fit: the parent's matching layers, and
        with TWEAKOPS_WARM_EPOCHS (the parent is this very model) the epoch to continue at.
        Sets kwargs' initial_epoch; returns it (0: all epochs). Weights only: the optimizer
        starts fresh. Any failure: one line, and the model trains from scratch."""
        if not Path(WARM_FROM).is_file():
            note(f"no warm start: {WARM_FROM} is missing; training from scratch")
            return 0
        why = ensure_built(model, args, kwargs, keras2=True)
        if why:
            note(f"no warm start: the model is not built before fit and {why}; training from scratch")
            return 0
        try:
            got = load_warm(model, WARM_FROM)
        except Exception as exc:  # noqa: BLE001
            note(f"no warm start: loading {WARM_FROM} failed ({_one_line(exc)}); training from scratch")
            return 0
        warm_epochs = _env_number("TWEAKOPS_WARM_EPOCHS", int)
        try:
            epochs = int(kwargs.get("epochs", args[3] if len(args) > 3 else 1))
        except (TypeError, ValueError):
            epochs = None
        initial, more = 0, ""
        if got["whole"] and warm_epochs and warm_epochs > 0 and len(args) <= 11 and epochs:
            initial = warm_epochs
            if epochs <= initial:  # the parent trained as long already: one more epoch still measures this source
                initial = max(0, epochs - 1)
                more = f" (the script asks for {epochs} epochs and the parent trained {warm_epochs}: one more epoch)"
            initial = max(initial, kwargs.get("initial_epoch") or 0)
            kwargs["initial_epoch"] = initial
        source = f"attempt {got['attempt']}'s weights" if got.get("attempt") else f"the weights of {WARM_FROM}"
        widened = f" ({got['widened']} widened: their new units start fresh)" if got["widened"] else ""
        then = f"continuing at epoch {initial}{more}" if initial else "training from epoch 1"
        note(f"warm start from {source}: {got['layers']} of {got['of']} layers reused{widened}, {then}")
        METRICS_FILE.data["warm_start"] = {"from": WARM_FROM, "layers": got["layers"], "of": got["of"],
                                           "widened": got["widened"], "initial_epoch": initial}
        METRICS_FILE.save()
        return initial

    def fit(self, *args, **kwargs):
        if BUILD_CHECK:
            kwargs.update(epochs=1, steps_per_epoch=1, verbose=0, validation_data=None, callbacks=[])
            kwargs.pop("validation_split", None)
            kwargs.pop("initial_epoch", None)
            original_fit(self, *args, **kwargs)
            raise BuildChecked()
        TRAINING["calls"] += 1
        TRAINING["model"] = True
        TRAINED["diverged"] = False
        fit_index = fit_calls[0]
        fit_calls[0] += 1
        callbacks = list(kwargs.pop("callbacks", None) or [])
        warm_epoch = warm_start(self, args, kwargs) if WARM_FROM and fit_index == 0 else 0
        why = None
        if CHECKPOINT_DIR:
            why = ensure_built(self, args, kwargs)
            if why:
                note(f"no checkpoint for this fit: the model is not built before fit and {why}; "
                     "a restart trains it from the first epoch")
        # the Recorder before the checkpoint: an epoch is in the metrics file before a
        # checkpoint says it is done, so a kill between the two redoes that epoch (and the
        # Recorder drops its record on the resume) instead of losing its record
        callbacks.append(SafeRecorder(fit_index, warm_epoch))
        if CHECKPOINT_DIR and not why:
            # kept after the fit (train.py removes it once the attempt is booked): a kill
            # during the script's evaluate then resumes with nothing to retrain
            callbacks.append(SafeBackup(str(Path(CHECKPOINT_DIR) / f"fit-{fit_index}"), delete_checkpoint=False,
                                        **backup_options))
        deadline = _env_number("TWEAKOPS_DEADLINE", float)
        if deadline:
            callbacks.append(SafeDeadline(deadline))
        TRAINED["model"] = self
        history = original_fit(self, *args, callbacks=callbacks, **kwargs)
        save_trained()
        return history

    def evaluate(self, *args, **kwargs):
        if kwargs.get("_use_cached_eval_dataset"):  # fit's own validation pass
            return original_evaluate(self, *args, **kwargs)
        TRAINING["model"] = True
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(SafeEvaluateRecorder())
        return original_evaluate(self, *args, callbacks=callbacks, **kwargs)

    keras.Model.fit = fit
    keras.Model.evaluate = evaluate
    keras1_epochs(keras)


def keras1_epochs(keras) -> None:
    """`nb_epoch=` (Keras 1; Keras 2 took it, with a warning, until 2.2) read as `epochs=`
    in fit and fit_generator: a script of that era trains as it did."""
    def wrap(original):
        def wrapper(self, *args, **kwargs):
            if "nb_epoch" in kwargs:
                epochs = kwargs.pop("nb_epoch")
                if "epochs" not in kwargs:
                    kwargs["epochs"] = epochs
                note(f"nb_epoch={epochs} is read as epochs= (Keras 1's name, gone from Keras since 2.2)")
            return original(self, *args, **kwargs)
        wrapper.__wrapped__ = original
        return wrapper

    for name in ("fit", "fit_generator"):
        if getattr(keras.Model, name, None) is not None:
            setattr(keras.Model, name, wrap(getattr(keras.Model, name)))


def count_training(keras) -> None:
    """Note every training call besides fit (train_on_batch, an optimizer step of a custom
    loop) and every use of a model (compile, predict): what the never-trained check reads.
    fit_generator is fit underneath."""
    def counting(cls, name, key):
        original = cls.__dict__.get(name) or getattr(cls, name, None)
        if original is None or getattr(original, "_tweakops_counts", False):
            return

        def wrapper(self, *args, **kwargs):
            if key == "calls":
                TRAINING["calls"] += 1
            TRAINING["model"] = True
            result = original(self, *args, **kwargs)
            if key == "calls":
                TRAINING["stepped"] = True
            return result
        wrapper._tweakops_counts = True
        wrapper.__wrapped__ = original
        setattr(cls, name, wrapper)

    try:
        counting(keras.Model, "train_on_batch", "calls")
        counting(keras.Model, "compile", "model")
        counting(keras.Model, "predict", "model")
        optimizers = [keras.optimizers.Optimizer, getattr(getattr(keras.optimizers, "legacy", None), "Optimizer", None)]
        for cls in {c for c in optimizers if isinstance(c, type)}:
            for name in ("apply_gradients", "apply"):
                if hasattr(cls, name):
                    counting(cls, name, "calls")
    except Exception as exc:  # noqa: BLE001 - never the reason a script fails
        note(f"the check for a training call is off: {_one_line(exc)}")
        TRAINING["calls"] = -1


# ---------------------------------------------------------------------------
# scikit-learn

def patch_sklearn() -> None:
    import numpy as np
    import sklearn.base
    import sklearn.metrics

    np.random.seed(SEED)
    original_accuracy = sklearn.metrics.accuracy_score
    original_score = sklearn.base.ClassifierMixin.score
    inside = threading.local()

    # id(classifier) -> (weakref, X, y) of its fit; "last": the id of the last one fitted;
    # "scored": (the classifier, X, y) behind the last score recorded, kept alive until the end
    fits: dict = {}

    def record(value, estimator=None):
        if isinstance(value, (int, float)) and not getattr(inside, "busy", False):
            METRICS_FILE.data["scores"].append(float(value))
            METRICS_FILE.save()
            ref, X, y = fits.get(id(estimator)) or fits.get(fits.get("last")) or (lambda: None, None, None)
            if ref() is not None:
                fits["scored"] = (ref(), X, y)
        return value

    def training_accuracy() -> None:
        """At the end of the script: the accuracy of the classifier behind the last score
        on (a sample of) its own training data, one predict in all."""
        estimator, X, y = fits.pop("scored", (None, None, None))
        if estimator is None:
            return
        inside.busy = True
        try:
            METRICS_FILE.data["train_score"] = float(original_accuracy(y, estimator.predict(X)))
        except Exception:  # noqa: BLE001 - a classifier that cannot predict its training data: no figure
            pass
        finally:
            inside.busy = False

    def classes_seen(y_true, y_pred) -> None:
        """How many classes the labels hold and how many the predictions do: a model
        predicting one class is a regulariser far too strong (diagnose.py)."""
        try:
            METRICS_FILE.data["classes"] = int(len(np.unique(np.asarray(y_true))))
            METRICS_FILE.data["predicted_classes"] = int(len(np.unique(np.asarray(y_pred))))
        except Exception:  # noqa: BLE001 - multi-output or odd labels: say nothing
            pass

    def accuracy_score(*args, **kwargs):
        y_true = args[0] if args else kwargs.get("y_true")
        y_pred = args[1] if len(args) > 1 else kwargs.get("y_pred")
        classes_seen(y_true, y_pred)
        return record(original_accuracy(*args, **kwargs))

    def score(self, *args, **kwargs):
        inside.busy = True  # score() calls accuracy_score(): record once
        try:
            value = original_score(self, *args, **kwargs)
        finally:
            inside.busy = False
        return record(value, self)

    original_showwarning = warnings.showwarning

    def showwarning(message, category, *args, **kwargs):
        if getattr(category, "__name__", "") == "ConvergenceWarning":
            METRICS_FILE.data["not_converged"] = True
            METRICS_FILE.save()
        return original_showwarning(message, category, *args, **kwargs)

    warnings.showwarning = showwarning
    accuracy_score.__wrapped__ = original_accuracy
    sklearn.metrics.accuracy_score = accuracy_score
    sklearn.base.ClassifierMixin.score = score
    watch_fits(np, sklearn, fits, inside)
    FINISHERS.append(training_accuracy)


def watch_fits(np, sklearn, fits: dict, inside) -> None:
    """Keep the training data of every classifier's fit: the (X, y) its data validation
    returns when it resets the estimator (a fit, not a predict), at most TRAIN_SAMPLE
    rows of it. scikit-learn >= 1.6 validates through `utils.validation.validate_data`
    (bound by name in each estimator's module: the modules imported already are rebound
    too), older ones through `BaseEstimator._validate_data`."""
    import weakref

    import sklearn.utils.validation as validation
    from sklearn.base import is_classifier

    def remember(estimator, args, kwargs, out) -> None:
        reset = kwargs.get("reset", args[2] if len(args) > 2 else True)
        if getattr(inside, "busy", False) or not reset or not (isinstance(out, tuple) and len(out) == 2):
            return
        try:
            if not is_classifier(estimator):
                return
            X, y = out
            n = X.shape[0]
            if n > TRAIN_SAMPLE:
                # Generator.choice samples without a permutation of all n rows (RandomState's
                # takes 40 ms at a million rows, on every fit of a cross-validation)
                rows = np.random.default_rng(0).choice(n, TRAIN_SAMPLE, replace=False)
                X, y = X[rows], np.asarray(y)[rows]
            key = id(estimator)
            try:   # forgotten with the estimator (cross-validation fits clones by the hundred)
                ref = weakref.ref(estimator, lambda _, key=key: fits.pop(key, None))
            except TypeError:
                ref = lambda: estimator  # noqa: E731 - an estimator without weak references
            fits[key] = (ref, X, y)
            fits["last"] = key
        except Exception:  # noqa: BLE001 - odd data: no training score, the fit goes on
            pass

    def wrap(original):
        def validate(estimator, *args, **kwargs):
            out = original(estimator, *args, **kwargs)
            remember(estimator, args, kwargs, out)
            return out
        validate.__wrapped__ = original
        return validate

    original = getattr(validation, "validate_data", None)
    if original is not None:
        patched = wrap(original)
        validation.validate_data = patched
        for name, module in list(sys.modules.items()):
            if name.startswith("sklearn") and getattr(module, "validate_data", None) is original:
                module.validate_data = patched
    if hasattr(sklearn.base.BaseEstimator, "_validate_data"):
        sklearn.base.BaseEstimator._validate_data = wrap(sklearn.base.BaseEstimator._validate_data)


# ---------------------------------------------------------------------------

# pip's name of a module a script may import, where it is not the module's own
PIP_NAMES = {"cv2": "opencv-python-headless", "PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml",
             "skimage": "scikit-image", "bs4": "beautifulsoup4", "tf_keras": "tf_keras"}


def causes(exc: BaseException | None):
    """`exc`, then what caused it (__cause__, else __context__), each once."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        yield exc
        exc = exc.__cause__ or exc.__context__


def explain(exc: BaseException) -> str | None:
    """One line for the failures a user can fix without reading a traceback."""
    for exc in causes(exc):
        text = str(exc)
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            top = exc.name.split(".")[0]
            if top in ("keras", "tensorflow", "tf_keras"):
                return (f"the script imports {exc.name}, which the {RUNTIME} runtime does not have "
                        f"(Keras 3 and Keras 2 through tf_keras are installed); use the module's current name")
            return (f"the script imports {exc.name}, which the {RUNTIME} runtime does not have; "
                    f"add {PIP_NAMES.get(top, top)} to requirements.txt in the model repository")
        if "URL fetch failure" in text or exc.__class__.__name__ in ("URLError", "gaierror") \
                or isinstance(exc, ConnectionError):
            found = re.search(r"https?://[^\s'\"]+", text)
            url = found.group(0).rstrip(":;,.") if found else "data or weights"
            return (f"the script downloads {url} and this machine has no network; ship the data in the "
                    "model repository or DATA_DIR (pretrained weights: weights=None, or a file in the repository)")
    return None


def _invalid_parameter(exc: BaseException) -> bool:
    """Whether scikit-learn's parameter validation raised `exc` (or what caused it):
    an estimator given a value it does not take, refused before it fitted anything."""
    return any(type(e).__name__ == "InvalidParameterError" for e in causes(exc))


def run(script: str) -> int:
    random.seed(SEED)
    os.environ.setdefault("PYTHONHASHSEED", str(SEED))
    beat()
    watch = Watch().start()
    code = 0
    try:
        if FRAMEWORK == "keras":
            patch_keras()
        elif FRAMEWORK == "sklearn":
            patch_sklearn()
        script_path = Path(script).resolve()
        sys.argv = [str(script_path)]
        sys.path.insert(0, str(script_path.parent))
        runpy.run_path(str(script_path), run_name="__main__")
        if BUILD_CHECK:
            note("build check: the script finished without calling fit")
    except BuildChecked:
        note("build check passed: the model builds and takes a training step")
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        traceback.print_exc()
        if FRAMEWORK == "sklearn" and _invalid_parameter(exc):
            TRAINING["invalid"] = True   # the estimator refused its parameters: it never trained
        why = explain(exc)
        if why:
            print(f"tweakops: error: {why}", file=sys.stderr, flush=True)
        code = 1
    if FRAMEWORK == "keras" and not BUILD_CHECK and TRAINING["model"]:
        METRICS_FILE.data["trained"] = TRAINING["calls"] != 0
        if code == 0 and TRAINING["calls"] == 0:
            print("tweakops: error: the script never trains a model: no fit() call ran; "
                  f"call model.fit(...) in {script}", file=sys.stderr, flush=True)
            code = EXIT_NEVER_TRAINED
    if code == 0:
        for finish in FINISHERS:
            finish()
        save_trained()  # the weights as the script leaves them
    if MEMORY_LIMIT:
        METRICS_FILE.data["memory_peak"] = watch.peak
    METRICS_FILE.data["finished"] = code == 0
    METRICS_FILE.save()
    return code


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: harness.py SCRIPT", file=sys.stderr)
        return 2
    code = run(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    if RESULT:
        record = {"exit_code": code, "finished_at": time.time()}
        if code == EXIT_NEVER_TRAINED and METRICS_FILE.data.get("trained") is False:
            record["reason"] = "never-trained"
        elif code != 0 and not BUILD_CHECK and (TRAINING["invalid"] or (
                FRAMEWORK == "keras" and not TRAINING["stepped"] and TRAINING["calls"] != -1)):
            record["reason"] = "build-failed"   # before its first training step ended
        _write_json(RESULT, record)
    return code


if __name__ == "__main__":
    sys.exit(main())
