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
           `Sequential.predict_classes`/`predict_proba` are back.
  sklearn  scikit-learn

Build check (TWEAKOPS_BUILD_CHECK=1): the script runs up to its first `fit`, which
trains one step and stops the script: exit 0 and `tweakops: build check passed` when
the model builds, the script's own error otherwise. A few seconds, no training.

A script that fails on a missing module or on a download (no network here) ends with
one `tweakops: error: ...` line naming the module or the URL and what to do.

When the script returns or raises, TWEAKOPS_RESULT gets {"exit_code": n}; after a
SIGKILL it is absent, which is how the watchdog tells a crash from a clean exit.

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
import os
import random
import re
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
RUNTIME = ENV.get("TWEAKOPS_RUNTIME") or ("sklearn" if FRAMEWORK == "sklearn" else "keras3")
BUILD_CHECK = ENV.get("TWEAKOPS_BUILD_CHECK", "") not in ("", "0")
if BUILD_CHECK:  # a check of a candidate, not an attempt: it leaves no state behind
    METRICS = HEARTBEAT = RESULT = CHECKPOINT_DIR = None
HEARTBEAT_EVERY = 2.0  # seconds between heartbeat writes


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

        def __init__(self, fit_index: int):
            super().__init__()
            self.fit_index = fit_index
            self.last_beat = 0.0
            self.epoch = 0
            self.began = False

        def on_train_begin(self, logs=None):
            # Keras 3 knows here the epoch it restored (a fit killed after its last epoch
            # runs no epoch at all); Keras 2 tells it by the first epoch it runs
            initial = getattr(self.model, "_initial_epoch", 0) or 0
            if initial:
                self.begin(initial)
            beat(initial)

        def begin(self, epoch: int) -> None:
            """Once per fit: epochs a resumed run will not redo stay, later ones go."""
            self.began = True
            if epoch:
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

    SafeRecorder = guarded(Recorder, "metrics recording")
    SafeEvaluateRecorder = guarded(EvaluateRecorder, "evaluate recording")
    SafeBackup = guarded(keras.callbacks.BackupAndRestore, "the checkpoint (BackupAndRestore)")
    backup_options = {}
    if "double_checkpoint" in inspect.signature(keras.callbacks.BackupAndRestore).parameters:
        # Keras 3: a SIGKILL in the middle of a save leaves the previous backup to load
        backup_options["double_checkpoint"] = True

    original_fit = keras.Model.fit
    original_evaluate = keras.Model.evaluate

    def ensure_built(model, args, kwargs) -> str | None:
        """Build an unbuilt model from its first batch; None, or why it could not be."""
        if model.built or RUNTIME == "keras2":  # Keras 2 restores into an unbuilt model lazily
            return None
        x = args[0] if args else kwargs.get("x")
        y = args[1] if len(args) > 1 else kwargs.get("y")
        try:
            batch = first_batch(x, y, kwargs.get("batch_size"))
            if batch is None:
                return "its data is a Python generator, which cannot be peeked at before fit"
            model._symbolic_build(data_batch=tuple(batch) if isinstance(batch, list) else batch)
        except Exception as exc:  # noqa: BLE001
            return f"building it from the first batch failed ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        return None if model.built else "it is still unbuilt after a build from the first batch"

    def fit(self, *args, **kwargs):
        if BUILD_CHECK:
            kwargs.update(epochs=1, steps_per_epoch=1, verbose=0, validation_data=None, callbacks=[])
            kwargs.pop("validation_split", None)
            kwargs.pop("initial_epoch", None)
            original_fit(self, *args, **kwargs)
            raise BuildChecked()
        fit_index = fit_calls[0]
        fit_calls[0] += 1
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if CHECKPOINT_DIR:
            why = ensure_built(self, args, kwargs)
            if why:
                note(f"no checkpoint for this fit: the model is not built before fit and {why}; "
                     "a restart trains it from the first epoch")
            else:
                # first, so the epoch it restores is known when the Recorder starts
                # kept after the fit (train.py removes it once the attempt is booked): a kill
                # during the script's evaluate then resumes with nothing to retrain
                callbacks.append(SafeBackup(str(Path(CHECKPOINT_DIR) / f"fit-{fit_index}"), delete_checkpoint=False,
                                            **backup_options))
        callbacks.append(SafeRecorder(fit_index))
        return original_fit(self, *args, callbacks=callbacks, **kwargs)

    def evaluate(self, *args, **kwargs):
        if kwargs.get("_use_cached_eval_dataset"):  # fit's own validation pass
            return original_evaluate(self, *args, **kwargs)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(SafeEvaluateRecorder())
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

# pip's name of a module a script may import, where it is not the module's own
PIP_NAMES = {"cv2": "opencv-python-headless", "PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml",
             "skimage": "scikit-image", "bs4": "beautifulsoup4", "tf_keras": "tf_keras"}


def explain(exc: BaseException) -> str | None:
    """One line for the failures a user can fix without reading a traceback."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
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
        exc = exc.__cause__ or exc.__context__
    return None


def run(script: str) -> int:
    random.seed(SEED)
    os.environ.setdefault("PYTHONHASHSEED", str(SEED))
    beat()
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
        why = explain(exc)
        if why:
            print(f"tweakops: error: {why}", file=sys.stderr, flush=True)
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
