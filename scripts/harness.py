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
    accuracy the script computes (the last call wins: scripts score held-out data last);
    a heartbeat thread (a sklearn fit has no callbacks to beat from).

When the script returns or raises, TWEAKOPS_RESULT gets {"exit_code": n}; after a
SIGKILL it is absent, which is how the watchdog tells a crash from a clean exit.

It runs inside the Docker images too, so it needs only the standard library plus the
framework the script uses, and never imports tweakops' own modules.

    $ TWEAKOPS_METRICS=m.json TWEAKOPS_FRAMEWORK=keras python scripts/harness.py model.py
"""

from __future__ import annotations

import json
import os
import random
import runpy
import sys
import threading
import time
import traceback
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
HEARTBEAT_EVERY = 2.0  # seconds between heartbeat writes


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
            last = self.data["epochs"][-1]
            acc = _accuracy_of(last, prefix="val_")
            if acc is not None:
                return acc, "val_accuracy"
        if self.data["scores"]:
            return self.data["scores"][-1], "score"
        if self.data["epochs"]:
            acc = _accuracy_of(self.data["epochs"][-1], prefix="")
            if acc is not None:
                return acc, "training_accuracy"
        return None, None


def _accuracy_of(logs: dict, prefix: str):
    for key in ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy"):
        value = logs.get(prefix + key)
        if isinstance(value, (int, float)):
            return float(value)
    return None


METRICS_FILE = Metrics()


def beat(epoch: int = 0, batch: int = 0) -> None:
    if HEARTBEAT:
        path = Path(HEARTBEAT)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{ATTEMPT} {epoch} {batch} {time.time():.3f}\n")
        os.replace(tmp, path)


def _reference_curve() -> list:
    if not REFERENCE:
        return []
    try:
        return [_accuracy_of(e, "val_") for e in json.loads(Path(REFERENCE).read_text()).get("epochs", [])]
    except (OSError, ValueError):
        return []


# ---------------------------------------------------------------------------
# Keras

def quiet_import_keras():
    """Import Keras with TensorFlow's import-time C++ chatter (absl, oneDNN notes) muted.

    TF_CPP_MIN_LOG_LEVEL cannot reach the lines TensorFlow writes to fd 2 before its
    logging starts, so fd 2 points at /dev/null for the import only: the user's script
    has not run yet, and a Python error of the import itself is still raised and shown.
    """
    if ENV.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        import keras
        return keras
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return keras


def patch_keras() -> None:
    keras = quiet_import_keras()

    keras.utils.set_random_seed(SEED)
    reference = _reference_curve()
    fit_calls = [0]

    class Recorder(keras.callbacks.Callback):
        """Per-epoch metrics, heartbeat, and the hopeless-attempt stop."""

        def __init__(self, fit_index: int):
            super().__init__()
            self.fit_index = fit_index
            self.last_beat = 0.0
            self.epoch = 0

        def on_train_begin(self, logs=None):
            initial = getattr(self.model, "_initial_epoch", 0) or 0
            if initial:
                METRICS_FILE.data["resumed_from_epoch"] = initial
                print(f"tweakops: resuming from the checkpoint at epoch {initial}", flush=True)
            # epochs of this fit that a resumed run will not redo stay; later ones go
            METRICS_FILE.data["epochs"] = [e for e in METRICS_FILE.data["epochs"]
                                           if e.get("fit", 0) < self.fit_index or e["epoch"] <= initial]
            beat(initial)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1
            self.started = time.time()

        def on_train_batch_end(self, batch, logs=None):
            now = time.time()
            if now - self.last_beat >= HEARTBEAT_EVERY:
                self.last_beat = now
                beat(self.epoch, batch + 1)

        def on_epoch_end(self, epoch, logs=None):
            record = {"fit": self.fit_index, "epoch": epoch + 1, "time": round(time.time() - self.started, 3)}
            record.update({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))})
            METRICS_FILE.data["epochs"].append(record)
            METRICS_FILE.save()
            beat(epoch + 1)
            self._judge(epoch + 1, record)

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

    original_fit = keras.Model.fit
    original_evaluate = keras.Model.evaluate

    def fit(self, *args, **kwargs):
        fit_index = fit_calls[0]
        fit_calls[0] += 1
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if CHECKPOINT_DIR:
            # first, so the epoch it restores is known when the Recorder starts;
            # double_checkpoint: a SIGKILL in the middle of a save leaves the previous backup to load
            callbacks.append(keras.callbacks.BackupAndRestore(str(Path(CHECKPOINT_DIR) / f"fit-{fit_index}"),
                                                              double_checkpoint=True))
        callbacks.append(Recorder(fit_index))
        return original_fit(self, *args, callbacks=callbacks, **kwargs)

    def evaluate(self, *args, **kwargs):
        if kwargs.get("_use_cached_eval_dataset"):  # fit's own validation pass
            return original_evaluate(self, *args, **kwargs)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(EvaluateRecorder())
        return original_evaluate(self, *args, callbacks=callbacks, **kwargs)

    keras.Model.fit = fit
    keras.Model.evaluate = evaluate


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

    def record(value):
        if isinstance(value, (int, float)) and not getattr(inside, "busy", False):
            METRICS_FILE.data["scores"].append(float(value))
            METRICS_FILE.save()
        return value

    def accuracy_score(*args, **kwargs):
        return record(original_accuracy(*args, **kwargs))

    def score(self, *args, **kwargs):
        inside.busy = True  # score() calls accuracy_score(): record once
        try:
            value = original_score(self, *args, **kwargs)
        finally:
            inside.busy = False
        return record(value)

    accuracy_score.__wrapped__ = original_accuracy
    sklearn.metrics.accuracy_score = accuracy_score
    sklearn.base.ClassifierMixin.score = score

    def heartbeat_thread():
        while True:
            beat()
            time.sleep(HEARTBEAT_EVERY)

    threading.Thread(target=heartbeat_thread, daemon=True).start()


# ---------------------------------------------------------------------------

def run(script: str) -> int:
    random.seed(SEED)
    os.environ.setdefault("PYTHONHASHSEED", str(SEED))
    beat()
    if FRAMEWORK == "keras":
        patch_keras()
    elif FRAMEWORK == "sklearn":
        patch_sklearn()
    script_path = Path(script).resolve()
    sys.argv = [str(script_path)]
    sys.path.insert(0, str(script_path.parent))
    code = 0
    try:
        runpy.run_path(str(script_path), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
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
        _write_json(RESULT, {"exit_code": code, "finished_at": time.time()})
    return code


if __name__ == "__main__":
    sys.exit(main())
