"""search.py: the diagnosis ranks the moves; plateaus, pairs, rounds, the epochs forecast.

Each case is a hand-made metrics file (the harness's format) for a parent and a real
start script of the kind that shows that weakness; the move proposed is checked by what
it does to the source.
"""

from __future__ import annotations

import textwrap

import pytest

import diagnose
import search
import state

CNN_SGD = textwrap.dedent("""\
    import keras
    from keras import layers
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0005),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, validation_split=0.2)
""")
CNN_ADAM = CNN_SGD.replace("keras.optimizers.SGD(learning_rate=0.0005)", "keras.optimizers.Adam(learning_rate=0.001)")
MLP_DROPOUT = textwrap.dedent("""\
    import keras
    from keras import layers
    model = keras.Sequential([keras.Input(shape=(64,)), layers.Dense(32, activation="relu"),
                              layers.Dropout(0.9), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=5, validation_data=(xt, yt))
""")
SVC = textwrap.dedent("""\
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    clf = Pipeline([("scale", StandardScaler()), ("svc", SVC(C=0.002, gamma=0.5))])
    clf.fit(X, y)
    print(clf.score(Xt, yt))
""")


def curve(rows, classes=None, seconds=0.5):
    data = {"framework": "keras", "evaluate": None,
            "epochs": [{"fit": 0, "epoch": i + 1, "time": seconds, "loss": loss, "accuracy": acc, "val_accuracy": val}
                       for i, (loss, acc, val) in enumerate(rows)]}
    if classes:
        data["outputs"] = classes
    return data


def base(source, accuracy):
    return {"attempt": 1, "outcome": "baseline", "accuracy": accuracy, "parent": None,
            "source_hash": state.source_hash(source)}


def child(n, move, accuracy, parent=1, outcome="reverted"):
    return {"attempt": n, "outcome": outcome, "accuracy": accuracy, "parent": parent, "move": move,
            "rule": move.split(":")[0].split("+")[0], "source_hash": f"h{n}"}


def first(source, kind, history, metrics, target=0.8, **kw):
    found = search.propose(source, kind, history, 1, metrics, target, counter=1, **kw)
    return found[0] if found else None


STUCK = curve([(2.31, 0.10, 0.10), (2.31, 0.10, 0.11), (2.309, 0.11, 0.10)], classes=10)


def test_stuck_at_chance_changes_the_optimizer_first():
    c = first(CNN_SGD, "cnn", [base(CNN_SGD, 0.1)], STUCK)
    assert c.diagnosis == "stuck" and c.move == "optimizer"
    assert "Adam(learning_rate=0.001)" in c.source and "SGD" not in c.source
    assert c.why.startswith("stuck: accuracy") and c.why.endswith("→ optimizer")


def test_stuck_with_sgd_and_sigmoid_hidden_layers_fixes_both_in_one_attempt():
    sigmoid = CNN_SGD.replace('Conv2D(4, 3, activation="relu")', 'Conv2D(4, 3, activation="sigmoid")')
    c = first(sigmoid, "cnn", [base(sigmoid, 0.1)], STUCK)
    assert c.move == "optimizer+activation"
    assert "Adam(learning_rate=0.001)" in c.source and 'activation="relu"' in c.source
    assert 'activation="softmax"' in c.source


def test_stuck_with_a_good_optimizer_moves_the_learning_rate_on_a_log_scale():
    slow = CNN_ADAM.replace("0.001", "0.00001")
    c = first(slow, "cnn", [base(slow, 0.1)], STUCK)
    assert c.move == "learning_rate" and "learning_rate=0.001" in c.source   # back to Adam's usual, 100x


def test_stuck_after_one_or_two_epochs_trains_longer_once_the_step_size_was_tried():
    rnn = textwrap.dedent("""\
        import keras
        from keras import layers
        model = keras.Sequential([layers.LSTM(4), layers.Dense(4, activation="softmax")])
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=2, validation_split=0.1)
    """)
    short = curve([(1.38, 0.27, 0.29), (1.33, 0.35, 0.33)], classes=4)
    history = [base(rnn, 0.33)]
    assert first(rnn, "rnn", history, short).move == "optimizer"
    history.append(child(2, "optimizer", 0.32))
    # the fix left it at chance: inconclusive after two epochs, so it is trained longer next
    c = first(rnn, "rnn", history, short)
    assert c.move == "optimizer+epochs" and '"adam"' in c.source and "epochs=10" in c.source
    history.append(child(3, c.move, 0.31))
    assert first(rnn, "rnn", history, short).move == "learning_rate:x10"
    history.append(child(4, "learning_rate:x10", 0.32))
    assert first(rnn, "rnn", history, short).move == "learning_rate:x10+epochs"
    history.append(child(5, "learning_rate:x10+epochs", 0.30))
    # four moves without a gain: two in one attempt, still before any capacity move
    assert first(rnn, "rnn", history, short).move == "optimizer+learning_rate:x10"
    history.append(child(6, "optimizer+learning_rate:x10", 0.30))
    c = first(rnn, "rnn", history, short)
    assert c.move == "optimizer+learning_rate:x10+epochs"   # that pair, at chance too, trained longer
    # after six epochs a model near chance is stuck for real: capacity before epochs
    longer = curve([(1.38, 0.27, 0.29)] * 5 + [(1.37, 0.30, 0.31)], classes=4)
    assert first(rnn.replace("epochs=2", "epochs=6"), "rnn", history, longer).move != "epochs"


def test_a_fix_that_left_a_model_at_chance_is_trained_longer_not_dropped():
    """A plain RNN on plain SGD, at chance after 3 epochs: Adam + GRU in one attempt gave
    0.26 against 0.29 on 4 classes: both at chance, the difference is noise. The same fix
    trained 4x as long comes next, and the fix does not count as one that hurt."""
    rnn = textwrap.dedent("""\
        import keras
        from keras import layers
        model = keras.Sequential([keras.Input(shape=(40, 1)), layers.SimpleRNN(8), layers.Dense(4, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.001), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, epochs=3, validation_split=0.1)
    """)
    flat = curve([(1.429, 0.27, 0.29), (1.426, 0.28, 0.292), (1.423, 0.28, 0.292)], classes=4)
    history = [base(rnn, 0.292)]
    c = first(rnn, "rnn", history, flat, target=0.7)
    assert c.diagnosis == "stuck" and c.move == "optimizer+gated_cell" and "layers.GRU(8)" in c.source
    history.append(child(2, c.move, 0.26))
    c = first(rnn, "rnn", history, flat, target=0.7)
    assert c.move == "optimizer+gated_cell+epochs:bold"
    assert "layers.GRU(8)" in c.source and "Adam" in c.source and "epochs=12" in c.source
    assert search.mean_gains(history, 0.25) == {"optimizer+gated_cell": 0.0}
    # a real gain at chance's edge is a gain: RMSprop → Adam from 0.23 to 0.40 on 4 classes
    history[-1] = child(2, "optimizer+gated_cell", 0.40)
    assert search.mean_gains(history, 0.25)["optimizer+gated_cell"] == pytest.approx(0.108)
    assert first(rnn, "rnn", [base(rnn, 0.292), child(2, "optimizer+gated_cell", 0.18)], flat,
                 target=0.7).move != "optimizer+gated_cell+epochs:bold"   # 0.11 worse: not noise


def test_diverged_takes_a_smaller_learning_rate():
    fast = CNN_ADAM.replace("0.001", "0.5")
    metrics = curve([(2.3, 0.2, 0.2), (float("nan"), 0.1, 0.1)])
    c = first(fast, "cnn", [base(fast, 0.1)], metrics)
    assert c.diagnosis == "diverged" and c.move == "learning_rate:x0.1" and "learning_rate=0.05" in c.source


def test_underfit_with_a_strong_regulariser_lowers_it_in_a_bold_step():
    metrics = curve([(2.6, 0.10, 0.16), (2.32, 0.12, 0.22), (2.30, 0.12, 0.26), (2.28, 0.13, 0.28), (2.26, 0.13, 0.28)])
    c = first(MLP_DROPOUT, "mlp", [base(MLP_DROPOUT, 0.28)], metrics, target=0.9)
    assert c.diagnosis == "underfit" and c.move == "less_dropout:bold" and "Dropout(0.1)" in c.source


def test_underfit_under_a_heavy_weight_penalty_weakens_it_boldly_first():
    """l2(1.0) on the hidden layer: 0.76 on its training data, not above held-out; a wider
    layer under the same penalty learns no more (64 → 256 units gave 0.80 from 0.83)."""
    heavy = MLP_DROPOUT.replace('layers.Dense(32, activation="relu")',
                                'layers.Dense(32, activation="relu", kernel_regularizer=regularizers.l2(1.0))')
    heavy = heavy.replace("layers.Dropout(0.9), ", "").replace("from keras import layers",
                                                              "from keras import layers, regularizers")
    metrics = curve([(3.0, 0.55, 0.70), (2.0, 0.70, 0.80), (1.8, 0.74, 0.82), (1.7, 0.76, 0.83), (1.7, 0.76, 0.83)])
    c = first(heavy, "mlp", [base(heavy, 0.83)], metrics, target=0.92)
    assert c.diagnosis == "underfit" and c.move == "l2:bold" and "l2(0.01)" in c.source
    # with plain SGD too, both flaws are fixed in one attempt
    sgd = heavy.replace('optimizer="adam"', 'optimizer="sgd"')
    c = first(sgd, "mlp", [base(sgd, 0.83)], metrics, target=0.92)
    assert c.move == "l2:bold+optimizer" and "l2(0.01)" in c.source and '"adam"' in c.source


def test_underfit_without_a_flaw_grows_capacity_boldly():
    metrics = curve([(2.0, 0.40, 0.41), (1.9, 0.42, 0.42), (1.85, 0.425, 0.42), (1.84, 0.43, 0.425)])
    c = first(CNN_ADAM, "cnn", [base(CNN_ADAM, 0.42)], metrics, target=0.9)
    assert c.diagnosis == "underfit" and c.move == "filters:bold" and "Conv2D(16, 3" in c.source


def test_a_capacity_step_with_diminishing_returns_gives_way_to_another_kind_of_capacity():
    """filters 4→16 was kept but gained 0.016: on the new best, another conv block comes
    before yet more filters; where the same step had gained 0.2, more filters again."""
    wider = CNN_ADAM.replace("Conv2D(4, 3", "Conv2D(16, 3")
    underfit = curve([(2.0, 0.30, 0.31), (1.9, 0.32, 0.31), (1.88, 0.325, 0.315), (1.87, 0.33, 0.316)])
    for gain, expected in ((0.016, "conv_block"), (0.2, "filters:bold")):
        history = [base(CNN_ADAM, 0.30), {**child(2, "filters:bold", 0.30 + gain, outcome="kept"),
                                          "source_hash": state.source_hash(wider)}]
        found = search.propose(wider, "cnn", history, 2, underfit, 0.9, counter=1, k=20)
        assert found[0].diagnosis == "underfit" and found[0].move == expected, (gain, found[0].move)
        assert "filters:bold" in [c.move for c in found]      # later, never out
        assert expected != "conv_block" or 'Conv2D(32, 3, padding="same"' in found[0].source


def test_overfit_adds_regularisation():
    metrics = curve([(1.0, 0.6, 0.55), (0.5, 0.85, 0.62), (0.2, 0.97, 0.64), (0.1, 0.99, 0.64)])
    c = first(CNN_ADAM, "cnn", [base(CNN_ADAM, 0.64)], metrics)
    assert c.diagnosis == "overfit" and c.move == "dropout" and "Dropout" in c.source


def test_training_images_learnt_by_heart_get_regularisation_never_a_weaker_penalty_or_capacity_first():
    """1.00 on its training images, 0.93 held out, target 0.95: a small gap, but no capacity
    move can raise the training side; after dropout, augmentation and batchnorm come next."""
    memorised = curve([(0.9, 0.80, 0.85), (0.2, 0.97, 0.91), (0.01, 1.0, 0.93), (0.001, 1.0, 0.93)])
    c = first(CNN_ADAM, "cnn", [base(CNN_ADAM, 0.93)], memorised, target=0.95)
    assert c.diagnosis == "overfit" and c.move == "dropout"
    history = [base(CNN_ADAM, 0.93), child(2, "dropout", 0.93)]
    moves = [x.move for x in search.propose(CNN_ADAM, "cnn", history, 1, memorised, 0.95, counter=2, k=3)]
    assert moves[:2] == ["augment", "batchnorm"], moves
    c = first(CNN_ADAM, "cnn", [base(CNN_ADAM, 0.93), child(2, "dropout", 0.92), child(3, "augment", 0.92)],
              memorised, target=0.95)
    assert c.move == "batchnorm"


def test_rising_trains_longer_to_the_forecast_not_by_half():
    metrics = curve([(2.0, 0.40, 0.45), (1.5, 0.55, 0.60), (1.2, 0.63, 0.68), (1.0, 0.69, 0.72)])
    source = CNN_ADAM.replace("epochs=6", "epochs=4")
    c = first(source, "cnn", [base(source, 0.72)], metrics)
    need = diagnose.diagnose(metrics, 0.8).facts["forecast_epochs"]
    assert c.diagnosis == "rising" and c.move == "epochs"
    epochs = int(c.label.split("→")[1])
    assert epochs == min(max(4 + search.MIN_EPOCH_STEP, -(-need * 5 // 4)), diagnose.FORECAST_REACH * 4)
    assert epochs > 4 + 4 // 2      # not the old +50%


def test_training_longer_that_gained_nothing_is_not_followed_by_a_bolder_epochs_step():
    """The parent's curve still rose, but training on from its weights gained nothing: the
    curve has flattened, so capacity comes next, not 4x the epochs (a GRU of 4 units went
    33 → 65 epochs for nothing, then 33 → 130 for +0.01)."""
    rnn = textwrap.dedent("""\
        import keras
        from keras import layers
        model = keras.Sequential([keras.Input(shape=(40, 1)), layers.GRU(4), layers.Dense(4, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=8, validation_split=0.1)
    """)
    rising = curve([(1.3, 0.40, 0.45), (1.1, 0.50, 0.55), (1.0, 0.56, 0.62), (0.9, 0.60, 0.66),
                    (0.85, 0.63, 0.68), (0.8, 0.65, 0.70), (0.78, 0.67, 0.71), (0.76, 0.68, 0.72)], classes=4)
    history = [base(rnn, 0.72)]
    assert first(rnn, "rnn", history, rising).move == "epochs"
    history.append(child(2, "epochs", 0.725))          # within noise of its parent
    c = first(rnn, "rnn", history, rising)
    assert c.diagnosis == "rising" and c.move.split(":")[0] != "epochs" and "+" not in c.move
    assert c.move == "units:bold" and "GRU(16)" in c.source
    # a plain rule within noise still takes its bold step next
    history[-1] = child(2, "units", 0.725)
    assert first(rnn, "rnn", history, rising).move == "units:bold"


def test_the_epochs_forecast_stays_inside_the_time_left():
    metrics = curve([(2.0, 0.40, 0.45), (1.5, 0.55, 0.60), (1.2, 0.63, 0.68), (1.0, 0.69, 0.72)], seconds=2.0)
    facts = {"forecast_epochs": 30}
    assert search.epochs_for(metrics, facts, remaining_s=None) == 32    # 8x the 4 trained
    assert search.epochs_for(metrics, facts, remaining_s=20) == 4 + int(0.5 * 20 / 2.0)
    assert search.epochs_for(metrics, facts, remaining_s=0) == 4 + search.MIN_EPOCH_STEP


def test_sklearn_predicting_one_class_takes_a_bold_log_step_of_c():
    metrics = {"framework": "sklearn", "scores": [0.1], "predicted_classes": 1, "classes": 10}
    only_c = SVC.replace(", gamma=0.5", "")
    c = first(only_c, "sklearn", [base(only_c, 0.1)], metrics, target=0.95)
    assert c.diagnosis == "one-class" and c.move == "C:bold" and "C=0.2" in c.source


SK_MLP = textwrap.dedent("""\
    from sklearn.neural_network import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=10, random_state=0)
    clf.fit(X, y)
    print(clf.score(Xt, yt))
""")


def test_sklearn_mlp_predicting_few_classes_gets_capacity_and_its_iterations():
    """An MLP of 3 hidden units that predicts 4 of 10 classes has no regulariser to weaken
    (alpha is at its tiny default): its solver stopped early, fixed in one attempt with the
    regulariser, and the next move widens it boldly, before another regulariser step."""
    metrics = {"framework": "sklearn", "scores": [0.09], "train_score": 0.10, "predicted_classes": 4,
               "classes": 10, "not_converged": True}
    c = first(SK_MLP, "sklearn", [base(SK_MLP, 0.09)], metrics, target=0.93)
    assert c.diagnosis == "one-class" and "did not converge" in c.why
    assert c.move == "alpha:bold+max_iter:bold" and "max_iter=200" in c.source
    history = [base(SK_MLP, 0.09), child(2, c.move, 0.10, outcome="kept")]
    c = search.propose(c.source, "sklearn", history, 2, {**metrics, "not_converged": False, "predicted_classes": 2},
                       0.93, counter=2)[0]
    assert c.move == "hidden_layer_sizes:bold" and "hidden_layer_sizes=(12,)" in c.source
    assert c.label == "hidden units x4"


FOREST = textwrap.dedent("""\
    from sklearn.ensemble import RandomForestClassifier
    clf = RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0)
    clf.fit(X, y)
    print(clf.score(Xt, yt))
""")


def test_sklearn_underfit_lowers_the_bias_boldly_before_adding_trees():
    """More trees lower a forest's variance, not its bias: a forest that cannot fit its own
    training data gets deeper trees first."""
    metrics = {"framework": "sklearn", "scores": [0.48], "train_score": 0.49, "predicted_classes": 7,
               "classes": 10}
    c = first(FOREST, "sklearn", [base(FOREST, 0.48)], metrics, target=0.93)
    assert c.diagnosis == "underfit" and c.move == "max_depth:bold" and "max_depth=8" in c.source
    svc = SVC.replace(", gamma=0.5", "").replace("C=0.002", "C=0.5")
    c = first(svc, "sklearn", [base(svc, 0.80)], {**metrics, "scores": [0.80], "train_score": 0.81}, target=0.93)
    assert c.move == "C:bold" and "C=50" in c.source
    # a booster with a cautious rate: each tree counts for more first (x10, never above 1.0)
    booster = FOREST.replace("RandomForestClassifier(n_estimators=2, max_depth=2",
                             "GradientBoostingClassifier(n_estimators=10, learning_rate=0.3, max_depth=2")
    c = first(booster, "sklearn", [base(booster, 0.75)], {**metrics, "scores": [0.75], "train_score": 0.78},
              target=0.93)
    assert c.move == "boost_rate" and "learning_rate=1.0" in c.source
    # overfit (its training data learnt by heart): more trees, never a deeper tree first
    c = first(FOREST, "sklearn", [base(FOREST, 0.80)], {**metrics, "scores": [0.80], "train_score": 1.0},
              target=0.93)
    assert c.diagnosis == "overfit" and c.move == "n_estimators"


def test_sklearn_underfit_held_back_by_its_leaf_limits_lets_the_trees_grow_first():
    """A forest whose leaves must hold 120 samples cannot fit its training data however
    many trees it has: the limit goes back to the default in one step."""
    leafy = FOREST.replace("n_estimators=2, max_depth=2", "n_estimators=50, min_samples_leaf=120")
    metrics = {"framework": "sklearn", "scores": [0.84], "train_score": 0.85, "predicted_classes": 10,
               "classes": 10}
    c = first(leafy, "sklearn", [base(leafy, 0.84)], metrics, target=0.95)
    assert c.diagnosis == "underfit" and c.move == "tree_limits:bold" and "min_samples_leaf=1," in c.source
    # fitting its training data well enough: below target, not underfit; the plain step comes after the trees
    c = first(leafy, "sklearn", [base(leafy, 0.90)], {**metrics, "scores": [0.90], "train_score": 0.97},
              target=0.95)
    assert c.diagnosis == "below-target" and c.move != "tree_limits:bold"


def test_sklearn_not_converged_and_underfit_fixes_iterations_and_regulariser_in_one_attempt():
    logreg = textwrap.dedent("""\
        from sklearn.linear_model import LogisticRegression
        clf = LogisticRegression(max_iter=2, C=1e-4)
        clf.fit(X, y)
        print(clf.score(Xt, yt))
    """)
    metrics = {"framework": "sklearn", "scores": [0.80], "train_score": 0.81, "predicted_classes": 10,
               "classes": 10, "not_converged": True}
    c = first(logreg, "sklearn", [base(logreg, 0.80)], metrics, target=0.94)
    assert c.diagnosis == "not-converged" and "below the target" in c.why
    assert c.move == "max_iter:bold+C:bold" and "max_iter=100" in c.source and "C=0.01" in c.source
    # converged at the training data it fits well: the iterations alone, as before
    c = first(logreg, "sklearn", [base(logreg, 0.80)], {**metrics, "train_score": 0.99}, target=0.94)
    assert c.diagnosis == "overfit" or c.move == "max_iter:bold"
    c = first(logreg, "sklearn", [base(logreg, 0.90)], {**metrics, "scores": [0.90], "train_score": 0.96},
              target=0.94)
    assert c.diagnosis == "not-converged" and c.move == "max_iter:bold"


def test_two_plain_flaws_are_fixed_in_one_attempt():
    metrics = {"framework": "sklearn", "scores": [0.1], "predicted_classes": 1, "classes": 10}
    c = first(SVC, "sklearn", [base(SVC, 0.1)], metrics, target=0.95)
    assert c.move == "C:bold+gamma_step:bold" and "C=0.2" in c.source and "gamma=0.005" in c.source
    assert c.label == "C 0.002→0.2 + smaller gamma 0.5→0.005"
    sgd = MLP_DROPOUT.replace('optimizer="adam"', 'optimizer="sgd"')
    underfit = curve([(2.6, 0.10, 0.16), (2.32, 0.12, 0.22), (2.30, 0.12, 0.26), (2.28, 0.13, 0.28), (2.26, 0.13, 0.28)])
    c = first(sgd, "mlp", [base(sgd, 0.28)], underfit, target=0.9)
    assert c.move == "less_dropout:bold+optimizer" and "Dropout(0.1)" in c.source and '"adam"' in c.source
    # tried once on this parent: the single fixes come next, not the same pair again
    again = first(sgd, "mlp", [base(sgd, 0.28), child(2, c.move, 0.3)], underfit, target=0.9)
    assert again.move == "less_dropout:bold"


def test_a_result_within_noise_promotes_the_bold_step_of_the_same_rule():
    metrics = {"framework": "sklearn", "scores": [0.5], "predicted_classes": 10, "classes": 10}
    history = [base(SVC, 0.5), child(2, "C", 0.505)]
    c = first(SVC, "sklearn", history, metrics, target=0.95)
    assert c.move == "C:bold" and "C=0.2" in c.source


def test_a_step_that_left_a_model_predicting_one_class_is_taken_again_further():
    """C 0.002→0.2 with gamma 0.5→0.005 left the SVC predicting one class, accuracy
    unchanged: the same steps again on top (one change per setting in the label), then
    one more round; a step that changed the accuracy is not repeated this way."""
    metrics = {"framework": "sklearn", "scores": [0.1], "predicted_classes": 1, "classes": 10}
    history = [base(SVC, 0.1), child(2, "C:bold+gamma_step:bold", 0.1)]
    c = first(SVC, "sklearn", history, metrics, target=0.95)
    assert c.move == "C:bold+gamma_step:bold+C:bold+gamma_step:bold"
    assert "SVC(C=20.0, gamma=5e-05)" in c.source and c.label == "C 0.002→20.0 + smaller gamma 0.5→5e-05"
    history.append(child(3, c.move, 0.1))
    assert first(SVC, "sklearn", history, metrics, target=0.95).move.count("C:bold") == 3
    moved = [base(SVC, 0.1), child(2, "C:bold+gamma_step:bold", 0.6)]
    assert first(SVC, "sklearn", moved, metrics, target=0.95).move.count("C:bold") < 2


def test_stalled_single_moves_lead_to_a_pair_in_one_attempt():
    """Below target on all ten classes: C x10, gamma → scale and gamma ÷10 each gave
    nothing; their bold steps come first, and once three moves stalled, the first two
    together in one attempt."""
    metrics = {"framework": "sklearn", "scores": [0.5], "predicted_classes": 10, "classes": 10}
    history = [base(SVC, 0.5)] + [child(n, m, 0.5) for n, m in enumerate(["C", "gamma", "gamma_step"], 2)]
    c = first(SVC, "sklearn", history, metrics, target=0.95)
    assert c.diagnosis == "below-target" and c.move == "gamma_step:bold+C:bold"
    assert "SVC(C=0.2, gamma=0.005)" in c.source
    assert first(SVC, "sklearn", history[:3], metrics, target=0.95).move == "C:bold"   # no stall yet


def test_a_move_tried_on_the_parent_is_not_tried_there_again_but_is_on_a_new_best():
    history = [base(CNN_SGD, 0.1), child(2, "optimizer", 0.1)]
    assert first(CNN_SGD, "cnn", history, STUCK).move != "optimizer"
    found = search.propose(CNN_SGD, "cnn", history, 2, STUCK, 0.8, counter=1)
    assert found[0].move == "optimizer"


def test_a_learning_rate_this_lineage_set_is_not_put_back_to_the_usual_value():
    """Attempt 2 took Adam's 0.001 x10 and was kept; from it, "back to the usual rate"
    would be attempt 1 again under another spelling: the log-scale steps go on instead."""
    faster = CNN_ADAM.replace("0.001", "0.01")
    history = [base(CNN_ADAM, 0.1), {**child(2, "learning_rate:x10", 0.3, outcome="kept"),
                                     "source_hash": state.source_hash(faster)}]
    found = search.propose(faster, "cnn", history, 2, STUCK, 0.8, counter=1, k=20)
    moves = [c.move for c in found]
    assert moves and not any("learning_rate" in m.split("+") for m in moves), moves
    assert "learning_rate:x10" in moves   # the same direction stays open
    # a rate the user wrote 10x off is still put back to the usual value
    assert first(faster, "cnn", [base(faster, 0.1)], STUCK).move == "learning_rate"


def test_a_round_gives_k_distinct_candidates_deterministically():
    history = [base(CNN_SGD, 0.1)]
    one = search.propose(CNN_SGD, "cnn", history, 1, STUCK, 0.8, counter=1, k=3)
    two = search.propose(CNN_SGD, "cnn", history, 1, STUCK, 0.8, counter=1, k=3)
    assert [c.move for c in one] == [c.move for c in two] and len(one) == 3
    assert len({state.source_hash(c.source) for c in one}) == 3
    assert one[0].move == first(CNN_SGD, "cnn", history, STUCK).move


def test_no_tweak_left_only_when_singles_bold_steps_and_pairs_are_used_up():
    tiny = "from sklearn.svm import SVC\nclf = SVC(C=0.5)\nclf.fit(X, y)\nprint(clf.score(X, y))\n"
    history = [base(tiny, 0.3)]
    moves = []
    while found := search.propose(tiny, "sklearn", history, 1, None, 0.9, counter=1):
        moves.append(found[0].move)
        history.append({**child(len(history) + 1, found[0].move, 0.3), "source_hash": state.source_hash(found[0].source)})
    assert {"C", "C:bold"} <= set(moves) and len(moves) == len(set(moves))


@pytest.mark.parametrize("kind", sorted(search.PLANS))
def test_every_move_in_the_plans_names_a_registered_rule_and_variant(kind):
    import rules
    for move in search.PLANS[kind]:
        rule_id, _, variant = move.partition(":")
        assert rule_id in rules.REGISTRY and variant in search.VARIANTS, move
