"""One run of one tuner on one start model: KerasTuner (RandomSearch, Hyperband), Optuna,
or scikit-learn's HalvingRandomSearchCV. bench/run.py starts it as its own process and
kills its process group at the common wall-time cap, so the clock includes this process'
start, the imports and the data loading, as tweakops' clock does.

Each finished trial appends one JSON line to --trace at once (a killed run keeps its
trials): {"t": seconds since BENCH_T0, "trial": n, "accuracy": held-out accuracy of the
trial's final model, "epochs": epochs it trained}. The run stops at the first trial at
or above --target, or after --max-trials trials.

Reads:  BENCH_T0 (the wall-clock time bench/run.py started this process)
Writes: --trace (JSON lines), a tuner working folder under --work
Exit:   0 done (target, trials or search space used up), 2 bad arguments

    $ .venv/bin/python bench/contenders.py --model cnn_digits --contender optuna --seed 0 \
        --data /tmp/bench-data/digits --work /tmp/w --trace /tmp/w/trace.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

T0 = float(os.environ.get("BENCH_T0", time.time()))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import suite  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import state  # noqa: E402  (state.meets: the target test every contender shares)

CONTENDERS_KERAS = ("kt_random", "kt_hyperband", "optuna")
CONTENDERS_SKLEARN = ("optuna", "halving")


class Done(Exception):
    """The target is met or the trials are used up."""


class Trace:
    def __init__(self, path: Path, target: float, max_trials: int):
        self.path, self.target, self.max_trials = path, target, max_trials
        self.trials = 0

    def trial(self, accuracy: float, epochs) -> None:
        self.trials += 1
        with self.path.open("a") as f:
            f.write(json.dumps({"t": round(time.time() - T0, 3), "trial": self.trials,
                                "accuracy": float(accuracy), "epochs": epochs}) + "\n")
        if state.meets(accuracy, self.target) or self.trials >= self.max_trials:
            raise Done


def sample(space: dict, name: str, hp=None, trial=None):
    """One parameter from KerasTuner's hp or Optuna's trial."""
    kind, *args = space[name]
    if hp is not None:
        if kind == "choice":
            return hp.Choice(name, args[0])
        if kind in ("int", "logint"):
            return hp.Int(name, args[0], args[1], sampling="log" if kind == "logint" else "linear")
        return hp.Float(name, args[0], args[1], sampling="log")
    if kind == "choice":
        return trial.suggest_categorical(name, args[0])
    if kind in ("int", "logint"):
        return trial.suggest_int(name, args[0], args[1], log=kind == "logint")
    return trial.suggest_float(name, args[0], args[1], log=True)


def keras_run(args, trace: Trace) -> None:
    import keras

    keras.utils.set_random_seed(args.seed)
    x, y, xt, yt = suite.load(args.model, Path(args.data))
    classes = int(max(y.max(), yt.max())) + 1
    space = suite.SUITE[args.model]["space"]
    batch = suite.batch_size(args.model)

    class Epochs(keras.callbacks.Callback):
        """Counts the epochs a trial trains and keeps its last held-out accuracy."""

        def __init__(self, trial=None):
            super().__init__()
            self.count, self.last, self.trial, self.pruned = 0, 0.0, trial, False

        def on_epoch_end(self, epoch, logs=None):
            self.count += 1
            self.last = float((logs or {}).get("val_accuracy", 0.0))
            if self.trial is not None:  # Optuna's median pruner, through this Keras callback
                self.trial.report(self.last, epoch)
                if self.trial.should_prune():
                    self.pruned = True
                    self.model.stop_training = True

    if args.contender == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        def objective(trial):
            params = {name: sample(space, name, trial=trial) for name in space}
            keras.backend.clear_session()
            model = suite.build(args.model, params, x.shape[1:], classes)
            counter = Epochs(trial)
            model.fit(x, y, epochs=params["epochs"], batch_size=batch, validation_data=(xt, yt), verbose=0,
                      callbacks=[counter])
            try:
                trace.trial(counter.last, counter.count)
            except Done:
                trial.study.stop()
            if counter.pruned:
                raise optuna.TrialPruned()
            return counter.last

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
        study.optimize(objective, n_trials=args.max_trials)
        return

    import keras_tuner as kt

    hyperband = args.contender == "kt_hyperband"
    tuned = {k: v for k, v in space.items() if not (hyperband and k == "epochs")}  # Hyperband sets the epochs

    class HyperModel(kt.HyperModel):
        def build(self, hp):
            keras.backend.clear_session()
            return suite.build(args.model, {name: sample(tuned, name, hp=hp) for name in tuned}, x.shape[1:], classes)

        def fit(self, hp, model, *fit_args, **kwargs):
            counter = Epochs()
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), counter]
            if not hyperband:
                kwargs["epochs"] = hp.get("epochs")
            history = model.fit(*fit_args, **kwargs)
            try:
                trace.trial(counter.last, counter.count)
            except Done:
                raise Stop from None  # KerasTuner books any other exception as a failed trial and goes on
            return history

    class Stop(kt.errors.FatalError):
        """The target is met or the trials are used up: end the search."""

    common = dict(objective="val_accuracy", seed=args.seed, directory=str(args.work), project_name=args.contender,
                  overwrite=True)
    # KerasTuner imports tensorboard for every trial on the TensorFlow backend, only to patch a
    # TensorBoard callback; none is used here and tensorboard is not installed: skip that step.
    def no_tensorboard(cls):
        return type(cls.__name__, (cls,), {"_configure_tensorboard_dir": lambda self, *a, **k: None})

    if hyperband:
        tuner = no_tensorboard(kt.Hyperband)(HyperModel(), max_epochs=suite.EPOCHS_MAX, factor=3, **common)
    else:
        tuner = no_tensorboard(kt.RandomSearch)(HyperModel(), max_trials=args.max_trials, **common)
    try:
        tuner.search(x, y, validation_data=(xt, yt), batch_size=batch, verbose=0)
    except Stop:
        pass


def sklearn_run(args, trace: Trace) -> None:
    x, y, xt, yt = suite.load(args.model, Path(args.data))
    space = suite.SUITE[args.model]["space"]
    if args.contender == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        def objective(trial):
            params = {name: sample(space, name, trial=trial) for name in space}
            accuracy = suite.estimator(args.model, params, args.seed).fit(x, y).score(xt, yt)
            try:
                trace.trial(accuracy, None)
            except Done:
                trial.study.stop()
            return accuracy

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed))
        study.optimize(objective, n_trials=args.max_trials)
        return
    # HalvingRandomSearchCV: max_trials candidates, successive halving over the training samples
    # (3-fold CV on the training split); its best estimator is then scored on the held-out split.
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV
    from sklearn.pipeline import Pipeline

    def values(name):
        kind, *a = space[name]
        if kind == "choice":
            return a[0]
        import scipy.stats

        if kind == "logint":
            return sorted({int(round(v)) for v in scipy.stats.loguniform(a[0], a[1]).ppf([i / 7 for i in range(8)])})
        return scipy.stats.loguniform(a[0], a[1])

    base = suite.estimator(args.model, {}, args.seed)
    if args.model == "sk_tree":  # the estimator itself is a parameter: one grid per kind
        tree = suite.estimator(args.model, {"estimator": "tree"}, args.seed)
        forest = suite.estimator(args.model, {"estimator": "forest"}, args.seed)
        common = {"clf__max_depth": values("max_depth"), "clf__criterion": values("criterion")}
        pipe = Pipeline([("clf", tree)])
        grid = [{"clf": [tree], **common}, {"clf": [forest], "clf__n_estimators": values("n_estimators"), **common}]
    else:
        pipe = base
        grid = {f"svc__{name}": values(name) for name in space}
    search = HalvingRandomSearchCV(pipe, grid, n_candidates=args.max_trials, factor=3, cv=3,
                                   random_state=args.seed, n_jobs=1, refit=True)
    search.fit(x, y)
    trace.trials = sum(search.n_candidates_) - 1  # every candidate fit counts as a trial
    trace.max_trials = 10 ** 9
    trace.trial(search.best_estimator_.score(xt, yt), None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(suite.SUITE))
    parser.add_argument("--contender", required=True, choices=sorted(set(CONTENDERS_KERAS + CONTENDERS_SKLEARN)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", required=True)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--trace", required=True, type=Path)
    parser.add_argument("--max-trials", type=int, default=11)
    parser.add_argument("--target", type=float, default=None)
    args = parser.parse_args(argv)
    keras_model = suite.SUITE[args.model]["kind"] in suite.KERAS_KINDS
    if args.contender not in (CONTENDERS_KERAS if keras_model else CONTENDERS_SKLEARN):
        print(f"error: {args.contender} does not run {args.model}", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    trace = Trace(args.trace, args.target if args.target is not None else suite.SUITE[args.model]["target"],
                  args.max_trials)
    try:
        (keras_run if keras_model else sklearn_run)(args, trace)
    except Done:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
