"""diagnose.py on hand-made metrics files: each learning-curve shape gets its diagnosis."""

import json
import math

import pytest

import diagnose


def keras_metrics(rows, classes=None, accuracy=None, fit=0):
    """rows: (loss, accuracy, val_accuracy) per epoch, as the harness writes them."""
    epochs = [{"fit": fit, "epoch": i + 1, "time": 0.5, "loss": loss, "accuracy": acc,
               **({"val_accuracy": val} if val is not None else {})}
              for i, (loss, acc, val) in enumerate(rows)]
    data = {"framework": "keras", "epochs": epochs, "accuracy": accuracy, "evaluate": None}
    if classes:
        data["outputs"] = classes
    return data


def test_nan_loss_is_diverged():
    d = diagnose.diagnose(keras_metrics([(2.3, 0.1, 0.1), (float("nan"), 0.1, 0.1)]), 0.8)
    assert d.kind == "diverged" and "NaN" in d.why


def test_a_loss_that_rises_far_above_its_best_is_diverged():
    d = diagnose.diagnose(keras_metrics([(2.0, 0.3, 0.3), (1.2, 0.5, 0.5), (9.0, 0.2, 0.2)]), 0.8)
    assert d.kind == "diverged"


def test_accuracy_at_chance_is_stuck():
    rows = [(2.30, 0.10, 0.11), (2.29, 0.11, 0.10), (2.25, 0.12, 0.12), (2.20, 0.13, 0.12)]
    d = diagnose.diagnose(keras_metrics(rows, classes=10), 0.8)
    assert d.kind == "stuck" and "chance" in d.why and d.facts["chance"] == 0.1


@pytest.mark.parametrize("classes, rows, stuck", [
    # binary (one sigmoid unit): 0.52 has learnt nothing, 0.75 has (the default target is 0.80)
    (1, [(0.693, 0.50, 0.51), (0.692, 0.51, 0.52), (0.690, 0.52, 0.52)], True),
    (1, [(0.69, 0.60, 0.62), (0.60, 0.70, 0.71), (0.55, 0.74, 0.75)], False),
    # four and ten classes: close to chance (0.25, 0.10) or well above it
    (4, [(1.386, 0.26, 0.27), (1.37, 0.28, 0.29), (1.36, 0.29, 0.30)], True),
    (4, [(1.38, 0.27, 0.29), (1.20, 0.45, 0.47), (1.05, 0.52, 0.55)], False),
    (10, [(2.30, 0.10, 0.11), (2.28, 0.14, 0.15), (2.25, 0.17, 0.18)], True),
    (10, [(2.30, 0.12, 0.13), (2.00, 0.25, 0.27), (1.80, 0.33, 0.35)], False),
])
def test_at_chance_means_near_chance_for_any_number_of_classes(classes, rows, stuck):
    d = diagnose.diagnose(keras_metrics(rows, classes=classes), 0.8)
    assert (d.kind == "stuck") is stuck, d.line


def test_an_accuracy_that_never_moves_is_one_class_predicted_at_its_share():
    """One sigmoid unit on data 70% negative: 0.702 held out every epoch while the loss
    creeps down is a model answering "no" to everything, not one that has learnt 0.70:
    stuck, with the class's share as chance (a fix that leaves it there is noise)."""
    rows = [(0.62, 0.6993, 0.7022), (0.618, 0.6993, 0.7022), (0.617, 0.6993, 0.7022)]
    d = diagnose.diagnose(keras_metrics(rows, classes=1), 0.95)
    assert d.kind == "stuck" and "predicts one class" in d.why and d.facts["chance"] == 0.7022
    assert diagnose.chance_of(keras_metrics(rows, classes=1)) == pytest.approx(0.7022)
    # it moved after its first epoch, or the training data is learnt by heart: not one class
    for moved in ([(0.62, 0.69, 0.70), *rows[1:]], [(0.05, 1.0, 0.70), (0.04, 1.0, 0.70)]):
        assert diagnose.one_class_share(keras_metrics(moved, classes=1)) is None
        assert diagnose.chance_of(keras_metrics(moved, classes=1)) == 0.5
    assert diagnose.one_class_share(keras_metrics(rows[:1], classes=1)) is None   # one epoch says nothing


def test_a_flat_loss_is_stuck_without_knowing_the_classes():
    rows = [(1.398, 0.278, 0.233), (1.398, 0.281, 0.235), (1.397, 0.285, 0.245)]
    assert diagnose.diagnose(keras_metrics(rows), 0.6).kind == "stuck"


def test_training_far_above_validation_is_overfit():
    rows = [(1.0, 0.6, 0.55), (0.5, 0.85, 0.62), (0.2, 0.97, 0.64), (0.1, 0.99, 0.64)]
    d = diagnose.diagnose(keras_metrics(rows), 0.8)
    assert d.kind == "overfit" and "0.99" in d.why


def test_training_data_learnt_by_heart_below_the_target_is_overfit_even_with_a_small_gap():
    """1.00 on its training data and 0.93 held out: capacity moves cannot raise the
    training side any more; only regularisation (or data) can close the rest."""
    rows = [(0.9, 0.80, 0.85), (0.2, 0.97, 0.91), (0.01, 1.0, 0.93), (0.001, 1.0, 0.93)]
    d = diagnose.diagnose(keras_metrics(rows), 0.95)
    assert d.kind == "overfit" and "by heart" in d.why and "0.93" in d.why
    assert diagnose.diagnose(keras_metrics(rows), 0.93).kind != "overfit"       # at the target
    below = [(a, min(t, 0.98), v) for a, t, v in rows]                             # not memorised: the gap is small
    assert diagnose.diagnose(keras_metrics(below), 0.95).kind != "overfit"


def test_a_curve_still_rising_that_the_forecast_reaches_is_rising_with_a_forecast():
    rows = [(2.0, 0.40, 0.45), (1.5, 0.55, 0.60), (1.2, 0.63, 0.68), (1.0, 0.69, 0.72)]
    d = diagnose.diagnose(keras_metrics(rows), 0.8)
    assert d.kind == "rising"
    need = d.facts["forecast_epochs"]
    assert 4 < need <= diagnose.FORECAST_REACH * 4
    # the forecast follows the fitted log curve: it reaches the goal there and not before
    assert diagnose.forecast([(2, 0.60), (3, 0.68), (4, 0.72)], 0.81) == need


def test_a_curve_rising_too_slowly_for_epochs_alone_is_underfit():
    rows = [(2.3, 0.28, 0.30), (2.1, 0.31, 0.33), (1.95, 0.34, 0.36), (1.85, 0.36, 0.38)]
    d = diagnose.diagnose(keras_metrics(rows, classes=10), 0.9)
    assert d.kind == "underfit" and "too slowly" in d.why


def test_low_training_accuracy_not_above_validation_is_underfit():
    # a Dropout(0.9) model: training accuracy (with dropout) below validation, flat
    rows = [(2.6, 0.10, 0.16), (2.32, 0.121, 0.216), (2.30, 0.122, 0.26), (2.28, 0.13, 0.278), (2.26, 0.127, 0.284)]
    d = diagnose.diagnose(keras_metrics(rows), 0.9)
    assert d.kind == "underfit"


def test_one_or_two_epochs_say_train_longer():
    d = diagnose.diagnose(keras_metrics([(2.26, 0.146, 0.158)]), 0.85)
    assert d.kind == "rising" and d.facts["forecast_epochs"] >= 4


def test_flat_near_the_target_is_a_plateau():
    rows = [(0.5, 0.83, 0.76), (0.45, 0.84, 0.77), (0.44, 0.84, 0.77), (0.44, 0.845, 0.77)]
    assert diagnose.diagnose(keras_metrics(rows), 0.8 + 0.02).kind == "plateau"


def test_only_the_last_fit_counts():
    first = keras_metrics([(float("nan"), 0.1, 0.1)], fit=0)["epochs"]
    later = keras_metrics([(1.0, 0.6, 0.55), (0.2, 0.97, 0.6)], fit=1)["epochs"]
    data = {"framework": "keras", "epochs": first + later}
    assert diagnose.diagnose(data, 0.8).kind == "overfit"


def test_sklearn_predicting_one_class_points_at_the_regulariser():
    d = diagnose.diagnose({"framework": "sklearn", "scores": [0.1], "predicted_classes": 1, "classes": 10}, 0.9)
    assert d.kind == "one-class" and "one class" in d.why


def test_sklearn_not_converged():
    d = diagnose.diagnose({"framework": "sklearn", "scores": [0.7], "predicted_classes": 10, "classes": 10,
                           "not_converged": True}, 0.9)
    assert d.kind == "not-converged"


@pytest.mark.parametrize("train, held_out, kind", [
    (0.49, 0.48, "underfit"),      # a forest of stumps: as bad on its training data as on held-out
    (0.49, 0.43, "underfit"),      # a shallow tree: a little better on its training data, far from the target
    (1.00, 0.86, "overfit"),       # an unpruned tree: its training data learnt by heart
    (0.95, 0.91, "below-target"),  # fits its training data as well as the target asks: neither
    (1.00, 0.92, "overfit"),       # a forest at 1.00: a small gap, but no capacity can raise the training side
    (1.00, 0.94, "below-target"),  # ... at the target: nothing to diagnose as missing there
    (1.00, 0.99, "below-target"),  # within noise of its training accuracy
])
def test_sklearn_training_accuracy_against_held_out(train, held_out, kind):
    data = {"framework": "sklearn", "scores": [held_out], "train_score": train, "predicted_classes": 10,
            "classes": 10}
    d = diagnose.diagnose(data, 0.93)
    assert d.kind == kind, d.line
    assert d.facts["train_accuracy"] == train
    if kind != "below-target":
        assert f"{train:.2f}" in d.why and f"{held_out:.2f}" in d.why


def test_sklearn_below_target_and_no_metrics_at_all():
    assert diagnose.diagnose({"framework": "sklearn", "scores": [0.8]}, 0.9).kind == "below-target"
    assert diagnose.diagnose(None, 0.9).kind == "unknown"
    assert diagnose.diagnose({"framework": "keras", "epochs": []}, 0.9).kind == "unknown"


def test_a_metrics_file_round_trip_and_the_numbers_it_gives(tmp_path):
    path = tmp_path / "attempt-3.json"
    path.write_text(json.dumps(keras_metrics([(2.0, 0.4, 0.4), (1.0, 0.6, 0.6), (0.8, 0.7, 0.7)])))
    data = diagnose.load(path)
    assert diagnose.epochs_trained(data) == 3 and diagnose.seconds_per_epoch(data) == 0.5
    assert diagnose.load(tmp_path / "missing.json") is None
    (tmp_path / "torn.json").write_text('{"epochs": [')
    assert diagnose.load(tmp_path / "torn.json") is None


@pytest.mark.parametrize("points", [[(1, 0.5)], [(1, 0.5), (2, 0.5)], [(1, 0.6), (2, 0.5)]])
def test_no_forecast_from_a_curve_that_does_not_rise(points):
    assert diagnose.forecast(points, 0.9) is None


def test_forecast_is_finite_for_a_curve_that_barely_rises():
    assert diagnose.forecast([(1, 0.1), (2, 0.1001)], 0.99) == 10 ** 6
    assert math.isfinite(diagnose.forecast([(3, 0.3), (4, 0.4)], 0.9))


def test_sklearn_scoring_its_training_data_far_above_held_out_is_overfit():
    d = diagnose.diagnose({"framework": "sklearn", "scores": [1.0, 0.855], "predicted_classes": 10,
                           "classes": 10}, 0.96)
    assert d.kind == "overfit" and "1.00" in d.why
