"""What an attempt's model lacks, read from its learning curve.

The harness records every epoch of every fit (`STATE_DIR/metrics/attempt-N.json`:
loss, accuracy, val_loss, val_accuracy, seconds) and, for scikit-learn, the scores the
script computed, the model's accuracy on its own training data, how many classes its
predictions held and whether the solver converged. From that one record this module
says, in one readable line, what the model lacks; `search.py` lets that rank the moves.

Keras, in this order (the first that holds):

  diverged   a loss is NaN/inf, or the loss ended far above its best   → a smaller learning rate
  stuck      accuracy at chance (near 1/classes, near_chance; or an accuracy
             that did not move at all: one class predicted, at its share) or the
             loss did not move                                         → optimizer and learning rate, then capacity
                                                                         (after 1-2 epochs: 4x the epochs before capacity)
  overfit    training accuracy far above validation (> GAP_OVERFIT), or
             the training data learnt by heart (>= MEMORISED) with
             held-out below the target: capacity cannot help           → dropout, batch normalisation, regularisation
  rising     validation accuracy still climbing at the last epoch and a
             forecast (accuracy ~ a + b·ln(epoch)) reaches the target
             within FORECAST_REACH x the epochs trained               → train longer, to the forecast
  underfit   training accuracy low and not above validation, or still
             rising too slowly for epochs alone to reach the target    → capacity, in bold steps
  plateau    none of the above, below the target                      → capacity and structure

scikit-learn, in this order: `one-class` (its predictions hold one class, or at most
half of them: a regulariser far too strong, or too little capacity; `facts["not_converged"]`
when its solver stopped early too), `overfit` (its training accuracy — the
harness scores the fitted classifier on its own training data — far above the held-out
one), `not-converged` (the solver warned; `facts["underfit"]` when its training accuracy
is below the target too), `underfit` (not overfit, and its training
accuracy itself below the target: a model too simple or too regularised), else
`below-target`.

No I/O besides `load()`; the numbers it used go into `Diagnosis.facts` and the line
into the history record (`why`), the report and the commit message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

NOISE = 0.01            # accuracy differences below this are noise (seeded runs on small data)
GAP_OVERFIT = 0.10      # training minus validation accuracy that counts as overfitting
GAP_CLOSE = 0.05        # ... that counts as "close": the model cannot even fit the training data
MEMORISED = 0.99        # training accuracy from which the training data is learnt by heart: more capacity
                        # cannot raise it, so a held-out accuracy below the target is overfitting
RISING = 0.01           # validation accuracy gained per epoch at the end that counts as rising
FORECAST_REACH = 8      # "train longer" only if the forecast needs at most this many times the epochs
FLAT_LOSS = 0.03        # relative loss drop over a fit below this: the loss did not move
DIVERGED = 1.5          # last loss above this many times the best one: diverging
SHORT_FIT = 2           # epochs too few to read the curve's shape from: train 4x longer
NEAR_CHANCE = 0.25      # "at chance" never reaches further than this share of the way from chance to 1
ACC_KEYS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy")


@dataclass
class Diagnosis:
    kind: str                     # one of the kinds in the module docstring, or "unknown"
    why: str                      # one line a reviewer reads: what was seen
    facts: dict = field(default_factory=dict)

    @property
    def line(self) -> str:
        return f"{self.kind}: {self.why}"


def load(path: str | Path | None) -> dict | None:
    """The harness's metrics file, or None when it is missing or unreadable."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _acc(logs: dict, prefix: str = "") -> float | None:
    for key in ACC_KEYS:
        value = logs.get(prefix + key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


def last_fit(metrics: dict) -> list[dict]:
    """The epochs of the script's last fit (a script may fit more than once)."""
    epochs = [e for e in metrics.get("epochs") or [] if isinstance(e, dict)]
    if not epochs:
        return []
    last = max(e.get("fit", 0) for e in epochs)
    return sorted((e for e in epochs if e.get("fit", 0) == last), key=lambda e: e.get("epoch", 0))


def seconds_per_epoch(metrics: dict | None) -> float | None:
    """Median seconds of one epoch of the last fit."""
    times = sorted(e["time"] for e in last_fit(metrics or {}) if isinstance(e.get("time"), (int, float)))
    return times[len(times) // 2] if times else None


def epochs_trained(metrics: dict | None) -> int:
    """The epoch the model's weights are at: the harness's `epochs_trained` (after a stop
    at the time cap, the epoch it kept), else the last fit's last epoch (counting the
    epochs a warm start continued from)."""
    if isinstance((metrics or {}).get("epochs_trained"), int):
        return metrics["epochs_trained"]
    fit = last_fit(metrics or {})
    return int(fit[-1].get("epoch", len(fit))) if fit else 0


def forecast(points: list[tuple[int, float]], target: float) -> int | None:
    """Epochs at which accuracy ~ a + b·ln(epoch), fitted to `points`, reaches `target`;
    None when the curve does not rise."""
    if len(points) < 2:
        return None
    xs = [math.log(e) for e, _ in points]
    ys = [a for _, a in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var
    if b <= 1e-6:
        return None
    a = my - b * mx
    exponent = (target - a) / b
    return 10 ** 6 if exponent > 13 else max(1, math.ceil(math.exp(exponent)))


def chance_of(metrics: dict) -> float | None:
    """1 / the number of classes, where the harness recorded the model's outputs; where
    the model predicts one class for everything (one_class_share) and that class holds
    more than 1 / classes of the data, that share (a binary model at 0.75 on data
    three-quarters negative has learnt nothing)."""
    n = metrics.get("classes") or metrics.get("outputs")
    chance = 1.0 / n if isinstance(n, int) and n >= 2 else 0.5 if n == 1 else None   # one sigmoid: two classes
    share = one_class_share(metrics)
    return max(chance, share) if chance is not None and share is not None else chance


def one_class_share(metrics: dict) -> float | None:
    """The held-out accuracy of a fit whose training and held-out accuracy did not move at
    all from its first epoch to its last (two or more epochs, the training accuracy below
    MEMORISED, the loss moving): a model predicting the same class for every input scores
    that class's share of the data every epoch. None otherwise."""
    fit = last_fit(metrics)
    train, val = [_acc(e) for e in fit], [_acc(e, "val_") for e in fit]
    losses = [e.get("loss") for e in fit]
    if len(fit) < 2 or None in train or None in val or len({round(a, 9) for a in train}) > 1 \
            or len({round(a, 9) for a in val}) > 1 or train[0] >= MEMORISED or len(set(losses)) < 2:
        return None
    return val[-1]


def near_chance(chance: float) -> float:
    """The accuracy below which a model has learnt next to nothing: 1.5 x chance + 0.05
    (10 classes: 0.20, 4: 0.425), but never more than NEAR_CHANCE of the way from chance
    to 1 (binary: 0.625, not 0.80: a binary model at 0.75 has learnt something)."""
    return min(1.5 * chance + 0.05, chance + NEAR_CHANCE * (1.0 - chance))


def overfit(train: float, held_out: float, target: float) -> bool:
    """Training accuracy far above held-out, or at MEMORISED with held-out below the target
    by more than noise (1.00 against 0.93: no capacity move can raise the training side)."""
    gap = train - held_out
    return gap > GAP_OVERFIT or (train >= MEMORISED and held_out < target and gap > 2 * NOISE)


def overfit_line(train: float, held_out: float) -> str:
    if train >= MEMORISED and train - held_out <= GAP_OVERFIT:
        return f"training accuracy {train:.2f}: its training data learnt by heart, held-out {held_out:.2f}"
    return f"training accuracy {train:.2f} is far above held-out {held_out:.2f}"


def diagnose(metrics: dict | None, target: float, accuracy: float | None = None) -> Diagnosis:
    """What the model of one attempt lacks (see the module docstring)."""
    if not metrics:
        return Diagnosis("unknown", "no metrics recorded for this attempt")
    if metrics.get("framework") == "sklearn" or (metrics.get("scores") and not metrics.get("epochs")):
        return _sklearn(metrics, target, accuracy)
    return _keras(metrics, target, accuracy)


def _keras(metrics: dict, target: float, accuracy: float | None) -> Diagnosis:
    fit = last_fit(metrics)
    if not fit:
        return Diagnosis("unknown", "no epoch was recorded (does the script call fit?)")
    n = epochs_trained(metrics)
    final = accuracy if accuracy is not None else metrics.get("accuracy")
    losses = [e.get("loss") for e in fit if isinstance(e.get("loss"), (int, float))]
    train = [_acc(e) for e in fit]
    val = [_acc(e, "val_") for e in fit]
    train_last = next((a for a in reversed(train) if a is not None), None)
    val_last = next((a for a in reversed(val) if a is not None), None)
    held_out = final if isinstance(final, (int, float)) else val_last
    spe = seconds_per_epoch(metrics)
    facts = {"epochs": n, "train_accuracy": train_last, "val_accuracy": val_last, "accuracy": held_out,
             "seconds_per_epoch": spe}

    if any(not math.isfinite(x) for x in losses):
        return Diagnosis("diverged", f"the loss became NaN/inf by epoch {n}", facts)
    if len(losses) >= 2 and losses[-1] > DIVERGED * min(losses) and (train_last or 0) < target:
        return Diagnosis("diverged", f"the loss rose from {min(losses):.3g} to {losses[-1]:.3g}", facts)

    chance = chance_of(metrics)
    best = max([a for a in train + val if a is not None] + ([held_out] if held_out is not None else []),
               default=None)
    flat = len(losses) >= 2 and losses[0] > 0 and (losses[0] - losses[-1]) / losses[0] < FLAT_LOSS
    if chance is not None and best is not None and best < near_chance(chance):
        facts["chance"] = round(chance, 4)
        if n <= SHORT_FIT:   # it may just not have trained long enough (search.py)
            facts["forecast_epochs"] = max(4 * n, 4)
        if one_class_share(metrics) is not None:
            return Diagnosis("stuck", f"accuracy {held_out:.2f} did not move in {n} epochs: it predicts one class "
                                      f"for every input", facts)
        return Diagnosis("stuck", f"accuracy {best:.2f} is at chance ({chance:.2f}) after {n} epoch(s)", facts)
    if flat and (best is None or best < max(0.3, target / 2)):
        return Diagnosis("stuck", f"the loss barely moved ({losses[0]:.3g} → {losses[-1]:.3g}) in {n} epochs", facts)

    if train_last is not None and held_out is not None and overfit(train_last, held_out, target):
        return Diagnosis("overfit", overfit_line(train_last, held_out), facts)

    curve = [(int(e.get("epoch", i + 1)), a) for i, (e, a) in enumerate(zip(fit, val)) if a is not None]
    if not curve:
        curve = [(int(e.get("epoch", i + 1)), a) for i, (e, a) in enumerate(zip(fit, train)) if a is not None]
    tail = curve[-4:]
    slope = (tail[-1][1] - tail[-2][1]) / max(1, tail[-1][0] - tail[-2][0]) if len(tail) >= 2 else None
    facts["slope"] = None if slope is None else round(slope, 4)
    goal = min(0.999, target + NOISE)
    if len(tail) == 1 or (n <= SHORT_FIT and slope is not None and slope > 0):
        # one or two epochs say little about the shape of the curve: more epochs first
        facts["forecast_epochs"] = max(4 * n, 4)
        return Diagnosis("rising", f"only {n} epoch(s) trained: too short to read the curve", facts)
    if slope is not None and slope >= RISING:
        need = forecast(tail, goal)
        facts["forecast_epochs"] = need
        if need is not None and need <= FORECAST_REACH * n:
            return Diagnosis("rising", f"val accuracy still rising (+{slope:.3f}/epoch at epoch {n}); "
                                       f"forecast: {goal:.2f} at ~{need} epochs", facts)
        return Diagnosis("underfit", f"val accuracy rising (+{slope:.3f}/epoch) but too slowly for epochs "
                                     f"alone (forecast ~{need or 'never'} epochs for {goal:.2f})", facts)
    if train_last is not None and held_out is not None and train_last < goal and \
            train_last - held_out <= GAP_CLOSE:
        return Diagnosis("underfit", f"training accuracy {train_last:.2f} is low and not above held-out "
                                     f"{held_out:.2f}: the model cannot fit the data", facts)
    return Diagnosis("plateau", f"accuracy flat at {held_out if held_out is not None else best:.2f} "
                                f"after {n} epochs", facts)


def _sklearn(metrics: dict, target: float, accuracy: float | None) -> Diagnosis:
    scores = [s for s in metrics.get("scores") or [] if isinstance(s, (int, float))]
    final = accuracy if accuracy is not None else (scores[-1] if scores else metrics.get("accuracy"))
    facts = {"accuracy": final, "predicted_classes": metrics.get("predicted_classes"),
             "classes": metrics.get("classes")}
    predicted, classes = metrics.get("predicted_classes"), metrics.get("classes")
    # a solver that also stopped early: its iterations are off too (MLPClassifier(max_iter=10))
    stopped = ""
    if metrics.get("not_converged"):
        facts["not_converged"] = True
        stopped = "; the solver did not converge either"
    if predicted == 1 and (classes or 2) > 1:
        return Diagnosis("one-class", f"it predicts one class only (of {classes or 'several'}): "
                                      f"a regulariser far too strong or too little capacity{stopped}", facts)
    if isinstance(predicted, int) and isinstance(classes, int) and classes > 2 and predicted <= classes // 2:
        return Diagnosis("one-class", f"it predicts only {predicted} of {classes} classes: "
                                      f"a regulariser far too strong or too little capacity{stopped}", facts)
    # the training accuracy: the harness's (the scored model on its own training data), else
    # a score the script computed before its last one (scripts score their training data first)
    train = metrics.get("train_score")
    if not isinstance(train, (int, float)) and len(scores) >= 2:
        train = max(scores[:-1])
    held_out = final if isinstance(final, (int, float)) else None
    facts["train_accuracy"] = train
    if isinstance(train, (int, float)) and held_out is not None and overfit(train, held_out, target):
        return Diagnosis("overfit", overfit_line(train, held_out), facts)
    underfit = isinstance(train, (int, float)) and held_out is not None and train < min(0.999, target + NOISE)
    if metrics.get("not_converged"):
        if underfit:   # both off: the iterations and the regulariser (LogisticRegression(max_iter=2, C=1e-4))
            facts["underfit"] = True
            return Diagnosis("not-converged", f"the solver did not converge (ConvergenceWarning), and training "
                                              f"accuracy {train:.2f} is below the target itself", facts)
        return Diagnosis("not-converged", "the solver did not converge (ConvergenceWarning)", facts)
    if underfit:
        # not overfit (above), yet below the target on its own training data: too much bias
        return Diagnosis("underfit", f"training accuracy {train:.2f} (held-out {held_out:.2f}) is below "
                                     f"the target itself: the model cannot fit the data", facts)
    if isinstance(final, (int, float)):
        return Diagnosis("below-target", f"accuracy {final:.2f} below the target {target:.2f}", facts)
    return Diagnosis("unknown", "no score was recorded", facts)
