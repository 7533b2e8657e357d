"""Step sizes (sourceedit.Context: bold, epochs, lr_scale) and the rules that lower a
penalty (less_dropout, l2, alpha, gamma_step), each on a small source.

Each case checks the label, the value written (the one changed line) and that the
result compiles; the defaults are the plain steps test_tweak.py covers. One test
compiles the rewritten optimizers with real Keras.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rules
import search
import sourceedit
import tweak

ROOT = Path(__file__).resolve().parent.parent
BOLD = sourceedit.Context(bold=True)


def src(text: str) -> str:
    return textwrap.dedent(text)


def changed(old: str, new: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm=""))[2:]
    return [d[1:] for d in diff if d.startswith("-")], [d[1:] for d in diff if d.startswith("+")]


def tweaked(rule_id: str, source: str, context: sourceedit.Context | None = None) -> tuple[str, list[str]]:
    """(label, added lines) of one rule on `source`; the result compiles and its label
    leads back to the rule."""
    result = rules.attempt(rule_id, source, context)
    assert result is not None, f"{rule_id} did not apply"
    compile(result.source, "<tweaked>", "exec")
    assert search.rule_of({"tweak": result.label}) == rule_id, result.label
    return result.label, changed(source, result.source)[1]


CNN = src('''\
    import keras
    from keras import layers
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, 3, activation="relu"),
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=5)
''')
RNN = src('''\
    import keras
    from keras import layers
    model = keras.Sequential([keras.Input(shape=(28, 28)), layers.LSTM(24)])
''')
FOREST = "from sklearn.ensemble import RandomForestClassifier\nclf = RandomForestClassifier(n_estimators=200)\n"
LOGREG = "from sklearn.linear_model import LogisticRegression\nclf = LogisticRegression(max_iter=50)\n"
NB = "from sklearn.naive_bayes import GaussianNB\nclf = GaussianNB(var_smoothing=0.001)\n"
SK_MLP = "from sklearn.neural_network import MLPClassifier\nclf = MLPClassifier(hidden_layer_sizes=(3, 8))\n"
SVC = (ROOT / "bench" / "models" / "sk_svc.py").read_text()   # the pipeline form: Pipeline([... SVC(...)])
SVC_LINE = '''model = Pipeline([("scale", StandardScaler()), ("svc", SVC(C={}, gamma={}))])'''


# ---------------------------------------------------------------------------
# bold: a bigger step; the label says the change

BOLD_CASES = [
    ("filters", CNN, ("filters x2", '    layers.Conv2D(32, 3, activation="relu"),'),
     ("filters 16→64", '    layers.Conv2D(64, 3, activation="relu"),')),
    ("dense_units", CNN, ("dense units x2", '    layers.Dense(64, activation="relu"),'),
     ("dense units 32→128", '    layers.Dense(128, activation="relu"),')),
    ("units", RNN, ("units x2", "model = keras.Sequential([keras.Input(shape=(28, 28)), layers.LSTM(48)])"),
     ("units 24→96", "model = keras.Sequential([keras.Input(shape=(28, 28)), layers.LSTM(96)])")),
    ("n_estimators", FOREST, ("n_estimators 200→400", "clf = RandomForestClassifier(n_estimators=400)"),
     ("n_estimators 200→800", "clf = RandomForestClassifier(n_estimators=800)")),
    ("max_iter", LOGREG, ("max_iter 50→250", "clf = LogisticRegression(max_iter=250)"),
     ("max_iter 50→1000", "clf = LogisticRegression(max_iter=1000)")),
    ("C", SVC, ("C 0.002→0.02", SVC_LINE.format(0.02, 0.5)), ("C 0.002→0.2", SVC_LINE.format(0.2, 0.5))),
    ("var_smoothing", NB, ("var_smoothing 0.001→0.1", "clf = GaussianNB(var_smoothing=0.1)"),
     ("var_smoothing 0.001→1.0", "clf = GaussianNB(var_smoothing=1.0)")),
    ("hidden_layer_sizes", SK_MLP, ("hidden units x2", "clf = MLPClassifier(hidden_layer_sizes=(6, 16))"),
     ("hidden units x4", "clf = MLPClassifier(hidden_layer_sizes=(12, 32))")),
    ("hidden_layer_sizes", SK_MLP.replace("hidden_layer_sizes=(3, 8)", "max_iter=50"),
     ("hidden units x2", "clf = MLPClassifier(max_iter=50, hidden_layer_sizes=(200,))"),
     ("hidden units x4", "clf = MLPClassifier(max_iter=50, hidden_layer_sizes=(400,))")),
]


@pytest.mark.parametrize("rule_id,source,plain,bold", BOLD_CASES, ids=[case[0] for case in BOLD_CASES])
def test_a_bold_step_is_bigger_and_the_default_is_the_plain_one(rule_id, source, plain, bold):
    for context, (label, line) in ((None, plain), (BOLD, bold)):
        assert tweaked(rule_id, source, context) == (label, [line])


LIMITS_CASES = [
    # (estimator call, plain step, bold step): each limit toward the library's default
    ("RandomForestClassifier(min_samples_leaf=120)", "RandomForestClassifier(min_samples_leaf=30)",
     "RandomForestClassifier(min_samples_leaf=1)"),
    ("DecisionTreeClassifier(min_samples_split=500, ccp_alpha=0.02)",
     "DecisionTreeClassifier(min_samples_split=125, ccp_alpha=0.002)",
     "DecisionTreeClassifier(min_samples_split=2, ccp_alpha=0.0)"),
    ("ExtraTreesClassifier(max_leaf_nodes=8, min_samples_leaf=0.2)",
     "ExtraTreesClassifier(max_leaf_nodes=32, min_samples_leaf=0.05)",
     "ExtraTreesClassifier(max_leaf_nodes=128, min_samples_leaf=1)"),
    # HistGradientBoosting's own default leaf is 20
    ("HistGradientBoostingClassifier(min_samples_leaf=200)", "HistGradientBoostingClassifier(min_samples_leaf=50)",
     "HistGradientBoostingClassifier(min_samples_leaf=20)"),
]


@pytest.mark.parametrize("call,plain,bold", LIMITS_CASES, ids=[c[0].split("(")[0] for c in LIMITS_CASES])
def test_tree_limits_step_toward_the_library_default(call, plain, bold):
    source = f"from sklearn import ensemble, tree\nclf = {call}\n"
    for context, line in ((None, plain), (BOLD, bold)):
        label, added = tweaked("tree_limits", source, context)
        assert added == [f"clf = {line}"] and label.startswith("looser ")


@pytest.mark.parametrize("call", [
    "RandomForestClassifier(n_estimators=50)",                  # no limit given: the default is the loosest
    "DecisionTreeClassifier(min_samples_leaf=1, min_samples_split=2, ccp_alpha=0.0)",   # the defaults
    "HistGradientBoostingClassifier(min_samples_leaf=20)",
    "SVC(C=1.0)",
])
def test_tree_limits_leave_loose_trees_and_other_estimators_alone(call):
    assert rules.attempt("tree_limits", f"clf = {call}\n") is None


@pytest.mark.parametrize("rule_id,call,line", [
    ("n_estimators", "AdaBoostClassifier(n_estimators=3)", "AdaBoostClassifier(n_estimators=50)"),
    ("n_estimators", "RandomForestClassifier(n_estimators=150)", "RandomForestClassifier(n_estimators=300)"),
    ("max_iter", "LinearSVC(C=1e-05, max_iter=5)", "LinearSVC(C=1e-05, max_iter=1000)"),
    ("max_iter", "HistGradientBoostingClassifier(max_iter=3)", "HistGradientBoostingClassifier(max_iter=100)"),
    ("max_iter", "LogisticRegression(max_iter=300)", "LogisticRegression(max_iter=1500)"),
])
def test_a_toy_count_goes_at_least_to_the_library_default(rule_id, call, line):
    assert tweaked(rule_id, f"clf = {call}\n")[1] == [f"clf = {line}"]


def test_settings_in_a_dict_are_changed_where_the_dict_sets_them():
    source = src('''\
        from sklearn.ensemble import RandomForestClassifier
        params = dict(n_estimators=200, min_samples_leaf=40)
        clf = RandomForestClassifier(**params, random_state=0)
    ''')
    assert tweaked("n_estimators", source)[1] == ["params = dict(n_estimators=400, min_samples_leaf=40)"]
    assert tweaked("tree_limits", source)[1] == ["params = dict(n_estimators=200, min_samples_leaf=10)"]
    keras_config = src('''\
        import keras
        CONFIG = {"units": 4, "epochs": 2}
        model = keras.Sequential([keras.Input(shape=(8, 8)), keras.layers.LSTM(CONFIG["units"]),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=CONFIG["epochs"])
    ''')
    assert tweaked("units", keras_config)[1] == ['CONFIG = {"units": 8, "epochs": 2}']
    assert tweaked("epochs", keras_config)[1] == ['CONFIG = {"units": 4, "epochs": 4}']
    # a dict written to by key later holds another value by then: not followed
    assert rules.attempt("units", keras_config.replace("model = ", 'CONFIG["units"] = 6\nmodel = ', 1)) is None


def test_a_bold_step_stops_at_the_cap_but_is_never_smaller_than_the_plain_one():
    source = CNN.replace("Conv2D(16,", "Conv2D(200,").replace("Dense(32,", "Dense(400,")
    assert tweaked("filters", source, BOLD)[0] == f"filters 200→{rules.MAX_FILTERS}"
    assert tweaked("dense_units", source, BOLD)[0] == "dense units 400→1024"
    assert tweaked("filters", source.replace("Conv2D(200,", "Conv2D(300,"), BOLD)[0] == "filters 300→600"


# ---------------------------------------------------------------------------
# epochs: exactly the number the chooser forecasts

def test_epochs_given_are_set_exactly_and_never_above_the_maximum():
    assert tweaked("epochs", CNN, sourceedit.Context(epochs=12)) == ("epochs 5→12", ["model.fit(x, y, epochs=12)"])
    assert tweaked("epochs", CNN, sourceedit.Context(epochs=3)) == ("epochs 5→3", ["model.fit(x, y, epochs=3)"])
    assert tweaked("epochs", CNN, sourceedit.Context(epochs=10_000))[0] == f"epochs 5→{rules.MAX_EPOCHS}"
    assert rules.apply("epochs", CNN, sourceedit.Context(epochs=5)) is None      # nothing changes
    assert tweaked("epochs", CNN) == ("epochs 5→7", ["model.fit(x, y, epochs=7)"])   # the default step


def test_bold_epochs_take_twice_the_step_and_epochs_given_win():
    assert tweaked("epochs", CNN, BOLD) == ("epochs 5→9", ["model.fit(x, y, epochs=9)"])
    assert tweaked("epochs", CNN.replace("epochs=5", "epochs=190"), BOLD)[0] == f"epochs 190→{rules.MAX_EPOCHS}"
    assert tweaked("epochs", CNN, sourceedit.Context(bold=True, epochs=12))[0] == "epochs 5→12"


def test_epochs_given_are_added_to_a_fit_without_them():
    source = CNN.replace("model.fit(x, y, epochs=5)", "model.fit(x, y)")
    assert tweaked("epochs", source, sourceedit.Context(epochs=8)) == ("epochs 1→8", ["model.fit(x, y, epochs=8)"])


def test_a_context_refuses_steps_that_mean_nothing():
    with pytest.raises(ValueError, match="epochs"):
        sourceedit.Context(epochs=0)
    with pytest.raises(ValueError, match="lr_scale"):
        sourceedit.Context(lr_scale=0)


# ---------------------------------------------------------------------------
# lr_scale: every learning rate times the scale

def scaled(scale: float) -> sourceedit.Context:
    return sourceedit.Context(lr_scale=scale)


@pytest.mark.parametrize("given,scale,label,line", [
    ("keras.optimizers.Adam(learning_rate=2e-05)", 10, "learning rate 2e-05→0.0002",
     "opt = keras.optimizers.Adam(learning_rate=0.0002)"),
    ("keras.optimizers.SGD(0.1, momentum=0.9)", 0.316, "learning rate 0.1→0.032",
     "opt = keras.optimizers.SGD(0.032, momentum=0.9)"),
    ("keras.optimizers.Adam(learning_rate=0.5)", 10, "learning rate 0.5→1.0",       # clamped
     "opt = keras.optimizers.Adam(learning_rate=1.0)"),
    ("keras.optimizers.Adam(learning_rate=3e-06)", 0.1, "learning rate 3e-06→1e-06",
     "opt = keras.optimizers.Adam(learning_rate=1e-06)"),
    ("Adam(lr=0.001)", 3.16, "learning rate 0.001→0.0032", "opt = Adam(lr=0.0032)"),                # Keras 2
    ("keras.optimizers.RMSprop(rho=0.8)", 10, "learning rate 0.001→0.01",    # none given: the usual one
     "opt = keras.optimizers.RMSprop(rho=0.8, learning_rate=0.01)"),
])
def test_lr_scale_multiplies_every_learning_rate(given, scale, label, line):
    source = f"import keras\nfrom keras.optimizers import Adam\nopt = {given}\nmodel.compile(optimizer=opt)\n"
    assert tweaked("learning_rate", source, scaled(scale)) == (label, [line])


def test_lr_scale_on_a_rate_at_its_bound_changes_nothing():
    source = "import keras\nopt = keras.optimizers.Adam(learning_rate=1.0)\n"
    assert rules.apply("learning_rate", source, scaled(10)) is None


LAYERS_IMPORT = src('''\
    from keras import layers, models
    model = models.Sequential([layers.Dense(10)])
    model.compile(optimizer="sgd", loss="mse")
''')
TF_KERAS = src('''\
    import tensorflow as tf
    model = tf.keras.Sequential([tf.keras.layers.Dense(10)])
    model.compile(optimizer="rmsprop", loss="mse")
''')
BARE = src('''\
    from keras.layers import Dense
    from keras.models import Sequential
    model = Sequential([Dense(10)])
    OPTIMIZER = "Adam"
    model.compile(optimizer=OPTIMIZER, loss="mse")
''')
KERAS = src('''\
    import keras
    model = keras.Sequential([keras.layers.Dense(10)])
    model.compile(optimizer="sgd", loss="mse")
''')


@pytest.mark.parametrize("source,label,added", [
    (KERAS, "learning rate 0.01→0.1",
     ['model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")']),
    (TF_KERAS, "learning rate 0.001→0.01",
     ['model.compile(optimizer=tf.keras.optimizers.RMSprop(learning_rate=0.01), loss="mse")']),
    (LAYERS_IMPORT, "learning rate 0.01→0.1",
     ["from keras import layers, models, optimizers",
      'model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")']),
    (BARE, "learning rate 0.001→0.01", ["from keras.optimizers import Adam", "OPTIMIZER = Adam(learning_rate=0.01)"]),
])
def test_lr_scale_makes_an_optimizer_named_by_a_string_a_call_with_the_scaled_rate(source, label, added):
    assert tweaked("learning_rate", source, scaled(10)) == (label, added)


def test_without_lr_scale_the_learning_rate_rule_is_as_before():
    assert rules.apply("learning_rate", KERAS) is None                  # a string: left alone
    near = "import keras\nopt = keras.optimizers.Adam(learning_rate=0.002)\n"
    assert rules.apply("learning_rate", near) is None                   # within 3x of the usual
    assert tweaked("learning_rate", near.replace("0.002", "0.05"))[0] == "learning rate 0.05→0.001"


COMPILE = textwrap.dedent('''
    import json, sys
    out = []
    for source in json.load(sys.stdin):
        scope = {}
        exec(source, scope)
        opt = scope["model"].optimizer
        out.append([type(opt).__name__, round(float(opt.learning_rate.numpy()), 6)])
    print(json.dumps(out))
''')


def in_keras(code: str, stdin: str, legacy: bool = False) -> str:
    """Run `code` in a fresh Python with real Keras (Keras 2: tf_keras under
    TF_USE_LEGACY_KERAS=1), `stdin` on its input; its last line of output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1" if legacy else "0"}
    result = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_the_rewritten_optimizers_compile_with_keras():
    sources = [rules.apply("learning_rate", s, scaled(10)) for s in (KERAS, TF_KERAS, LAYERS_IMPORT, BARE)]
    assert json.loads(in_keras(COMPILE, json.dumps(sources))) == [
        ["SGD", 0.1], ["RMSprop", 0.01], ["SGD", 0.1], ["Adam", 0.01]]


# ---------------------------------------------------------------------------
# less_dropout

DROPOUTS = src('''\
    import keras
    from keras import layers
    RATE = 0.5
    model = keras.Sequential([
        layers.Embedding(100, 8),
        layers.SpatialDropout1D(0.3),
        layers.LSTM(16, dropout=0.4, recurrent_dropout=RATE),
        layers.Dropout(rate=0.9),
        layers.Dropout(0.1),
        layers.Dense(1),
    ])
''')


def test_less_dropout_halves_every_rate_from_0_2_up():
    label, added = tweaked("less_dropout", DROPOUTS)
    assert label == "dropout 0.3→0.15"    # the first rate edited
    assert added == ["RATE = 0.25", "    layers.SpatialDropout1D(0.15),",
                     "    layers.LSTM(16, dropout=0.2, recurrent_dropout=RATE),", "    layers.Dropout(rate=0.45),"]


def test_less_dropout_bold_sets_the_rates_to_0_1():
    label, added = tweaked("less_dropout", DROPOUTS, BOLD)
    assert label == "dropout 0.3→0.1"
    assert added == ["RATE = 0.1", "    layers.SpatialDropout1D(0.1),",
                     "    layers.LSTM(16, dropout=0.1, recurrent_dropout=RATE),", "    layers.Dropout(rate=0.1),"]


def test_less_dropout_leaves_small_rates():
    assert rules.apply("less_dropout", CNN) is None
    assert rules.apply("less_dropout", CNN.replace('layers.Flatten(),', 'layers.Dropout(0.15),')) is None


# ---------------------------------------------------------------------------
# l2

L2 = src('''\
    import keras
    from keras import layers, regularizers
    from keras.regularizers import l2
    model = keras.Sequential([
        layers.Conv2D(8, 3, kernel_regularizer=regularizers.L2(l2=0.02)),
        layers.Flatten(),
        layers.Dense(32, kernel_regularizer=l2(0.01)),
        layers.Dense(10, activation="softmax"),
    ])
''')


def test_l2_divides_the_penalty_of_dense_and_conv_layers():
    assert tweaked("l2", L2) == ("l2 0.02→0.002", [
        "    layers.Conv2D(8, 3, kernel_regularizer=regularizers.L2(l2=0.002)),",
        "    layers.Dense(32, kernel_regularizer=l2(0.001)),"])
    assert tweaked("l2", L2, BOLD) == ("l2 0.02→0.0002", [
        "    layers.Conv2D(8, 3, kernel_regularizer=regularizers.L2(l2=0.0002)),",
        "    layers.Dense(32, kernel_regularizer=l2(0.0001)),"])


def test_l2_leaves_layers_without_a_literal_penalty():
    assert rules.apply("l2", CNN) is None
    assert rules.apply("l2", L2.replace("l2(0.01)", "l2()").replace("L2(l2=0.02)", "L1(0.02)")) is None


# ---------------------------------------------------------------------------
# scikit-learn: alpha, gamma_step

@pytest.mark.parametrize("given,plain,bold", [
    ("Ridge()", ("alpha 1.0→0.1", "Ridge(alpha=0.1)"), ("alpha 1.0→0.01", "Ridge(alpha=0.01)")),
    ("SGDClassifier(alpha=0.003)", ("alpha 0.003→0.0003", "SGDClassifier(alpha=0.0003)"),
     ("alpha 0.003→3e-05", "SGDClassifier(alpha=3e-05)")),
    ("MLPClassifier(max_iter=50)", ("alpha 0.0001→1e-05", "MLPClassifier(max_iter=50, alpha=1e-05)"),
     ("alpha 0.0001→1e-06", "MLPClassifier(max_iter=50, alpha=1e-06)")),
    ("ElasticNet(alpha=2)", ("alpha 2→0.2", "ElasticNet(alpha=0.2)"), ("alpha 2→0.02", "ElasticNet(alpha=0.02)")),
])
def test_alpha_is_divided_and_added_where_the_default_holds(given, plain, bold):
    source = f"from sklearn import linear_model, neural_network\nmodel = {given}\n"
    for context, (label, call) in ((None, plain), (BOLD, bold)):
        assert tweaked("alpha", source, context) == (label, [f"model = {call}"])


def test_alpha_leaves_estimators_without_it():
    assert rules.apply("alpha", LOGREG) is None


def test_gamma_step_divides_a_numeric_gamma_and_keeps_the_scale_rule():
    assert tweaked("gamma_step", SVC) == ("smaller gamma 0.5→0.05", [SVC_LINE.format(0.002, 0.05)])
    assert tweaked("gamma_step", SVC, BOLD) == ("smaller gamma 0.5→0.005", [SVC_LINE.format(0.002, 0.005)])
    assert tweaked("gamma", SVC) == ("gamma 0.5→scale", [SVC_LINE.format(0.002, '"scale"')])
    assert rules.apply("gamma_step", SVC.replace("gamma=0.5", 'gamma="scale"')) is None
    assert rules.apply("gamma_step", SVC.replace(", gamma=0.5", "")) is None


GRID = src('''\
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC
    search = GridSearchCV(SVC(C=5.0, gamma=0.5), {"C": [0.0001, 0.001], "kernel": ["rbf"]}, cv=3)
''')


def test_a_search_grid_is_stepped_where_it_sets_the_parameter_and_the_estimator_where_it_does_not():
    """GridSearchCV sets C from its grid: SVC(C=5.0) is not what the model gets, so C's
    step shifts the grid; gamma is not in the grid, so the estimator's own is changed."""
    assert tweaked("C", GRID, BOLD) == ("C grid [0.0001, 0.001]→[0.01, 0.1]", [
        'search = GridSearchCV(SVC(C=5.0, gamma=0.5), {"C": [0.01, 0.1], "kernel": ["rbf"]}, cv=3)'])
    assert tweaked("gamma_step", GRID)[1] == [
        'search = GridSearchCV(SVC(C=5.0, gamma=0.05), {"C": [0.0001, 0.001], "kernel": ["rbf"]}, cv=3)']
    # a pipeline's grid ("svc__gamma"), named, as a list of grids; a distribution's bounds
    piped = src('''\
        from scipy.stats import loguniform
        from sklearn.model_selection import RandomizedSearchCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC
        pipe = make_pipeline(StandardScaler(), SVC(gamma=0.5))
        grid = [{"svc__gamma": [1.0, 10.0]}]
        search = RandomizedSearchCV(pipe, param_distributions={"svc__C": loguniform(1e-4, 1e-3)}, n_iter=4)
    ''')
    assert tweaked("C", piped, BOLD)[1] == [
        'search = RandomizedSearchCV(pipe, param_distributions={"svc__C": loguniform(0.01, 0.1)}, n_iter=4)']
    gridded = piped.replace('param_distributions={"svc__C": loguniform(1e-4, 1e-3)}', "grid")
    assert tweaked("gamma_step", gridded, BOLD) == ("smaller gamma grid [1.0, 10.0]→[0.01, 0.1]",
                                                    ['grid = [{"svc__gamma": [0.01, 0.1]}]'])
    assert rules.apply("gamma", gridded) is None     # the grid overrides SVC(gamma=0.5)
    # a grid the rules cannot read: neither it nor the estimator it overrides is changed
    assert rules.apply("C", GRID.replace("[0.0001, 0.001]", "np.logspace(-4, -3, 2)")) is None


def test_relu_replaces_sigmoid_and_tanh_in_hidden_layers_never_in_an_output_or_a_recurrent_layer():
    binary = src('''\
        import keras
        from keras import layers
        inputs = keras.Input(shape=(64,))
        x = layers.Dense(32, activation="sigmoid")(inputs)
        x = layers.Dense(16, activation="tanh")(x)
        outputs = layers.Dense(1, activation="sigmoid")(x)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.fit(x_train, y_train, epochs=5)
    ''')
    label, added = tweaked("activation", binary)
    assert label == "activation sigmoid→relu"
    assert added == ['x = layers.Dense(32, activation="relu")(inputs)', 'x = layers.Dense(16, activation="relu")(x)']
    assert rules.apply("activation", CNN) is None        # relu already
    rnn = binary.replace('layers.Dense(32, activation="sigmoid")(inputs)', 'layers.LSTM(32, activation="tanh")(inputs)')
    assert tweaked("activation", rnn)[1] == ['x = layers.Dense(16, activation="relu")(x)']
    mask = src('''\
        import keras
        from keras import layers
        model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(8, 3, padding="same", activation="tanh"),
                                  layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    ''')
    assert tweaked("activation", mask)[1] == ['model = keras.Sequential([keras.Input((28, 28, 1)), '
                                              'layers.Conv2D(8, 3, padding="same", activation="relu"),']


def test_the_new_rules_are_registered_for_their_types():
    assert {r.id for r in rules.rules_for("sklearn")} >= {"alpha", "gamma_step"}
    for model_type in ("cnn", "rnn", "mlp"):
        assert "less_dropout" in {r.id for r in rules.rules_for(model_type)}
    assert {t for t in ("cnn", "rnn", "mlp") if "l2" in {r.id for r in rules.rules_for(t)}} == {"cnn", "mlp"}


def test_the_command_line_takes_the_step_sizes(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(CNN)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "tweak.py"), str(path), "--type", "cnn",
                             "--rule", "filters", "--bold"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TWEAKOPS_ENV_FILE": os.devnull})
    assert result.returncode == 0, result.stderr
    assert '+    layers.Conv2D(64, 3, activation="relu"),\n' in result.stdout
    assert "filters 16→64 (filters)" in result.stderr


# ---------------------------------------------------------------------------
# augment: the shifted images reach the first convolution, in every way a model is built

AUGMENTED_BUILD = src('''\
    import json, sys
    import numpy as np
    out = []
    for source in json.load(sys.stdin):
        scope = {}
        exec(source, scope)
        model = scope["model"]
        model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0)
        names = [type(layer).__name__ for layer in model.layers if type(layer).__name__ != "InputLayer"]
        out.append(names[:2])
    print(json.dumps(out))
''')


@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "keras2"])
def test_the_augmented_models_build_with_the_shifts_before_the_first_convolution(legacy):
    """Sequential lists, model.add with input_shape= on the first conv, the functional API,
    bare imports: each builds, and its first layer is now the RandomTranslation (real
    Keras; Keras 2 is tf_keras under TF_USE_LEGACY_KERAS=1, the fixtures written for it)."""
    fixtures = ["cnn_add", "cnn_bare"] if legacy else ["cnn_sequential", "cnn_functional", "cnn_add", "cnn_bare"]
    sources = []
    for name in fixtures:
        new = rules.apply("augment", (ROOT / "tests" / "fixtures" / "tweak" / f"{name}.py").read_text())
        new = new[:new.index("model.compile(")] if "model.compile(" in new else new
        if legacy:
            new = new.replace("from keras.", "from tf_keras.")
        sources.append(new)
    firsts = json.loads(in_keras(AUGMENTED_BUILD, json.dumps(sources), legacy))
    assert [f[0] for f in firsts] == ["RandomTranslation"] * len(fixtures)
    assert all(f[1] in ("Conv2D", "Rescaling") for f in firsts), firsts


GATED_BUILD = src('''\
    import sys
    import numpy as np
    scope = {}
    exec(sys.stdin.read(), scope)
    model = scope["model"]
    model.predict(np.zeros((2, 40, 1), "float32"), verbose=0)
    print(" ".join(type(layer).__name__ for layer in model.layers))
''')


@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "keras2"])
def test_a_simple_rnn_becomes_a_gru_that_builds_with_the_same_arguments(legacy):
    """SimpleRNN → GRU on a model.add script with bare imports (GRU added to the import) and
    input_shape= on the layer: it builds and predicts in real Keras 3 and Keras 2 (tf_keras)."""
    new = rules.apply("gated_cell", (ROOT / "tests" / "fixtures" / "tweak" / "rnn_simple.py").read_text())
    new = new[:new.index("model.compile(")]
    if legacy:
        new = new.replace("from keras.", "from tf_keras.")
    assert in_keras(GATED_BUILD, new, legacy).split() == ["GRU", "Dense"]


@pytest.mark.parametrize("call,line", [
    ("PCA(n_components=2)", "PCA(n_components=8)"),                 # a count x4
    ("TruncatedSVD(n_components=16)", "TruncatedSVD(n_components=64)"),
    ("PCA(n_components=0.5)", "PCA(n_components=0.875)"),           # a variance share: what it drops ÷4
    ("PCA(n_components=0.98)", "PCA(n_components=0.99)"),           # ... at most 0.99
])
def test_a_projection_keeps_more_components(call, line):
    assert tweaked("n_components", f"clf = {call}\n") == (f"n_components {call.split('=')[1][:-1]}→"
                                                           f"{line.split('=')[1][:-1]}", [f"clf = {line}"])


@pytest.mark.parametrize("call", ["PCA()", "PCA(n_components=0.99)", "PCA(n_components='mle')",
                                  "LinearDiscriminantAnalysis(n_components=2)"])
def test_components_left_alone_where_nothing_is_held_back_or_the_class_is_no_projection(call):
    assert rules.attempt("n_components", f"clf = {call}\n") is None


ENV_SCRIPT = src('''\
    import os
    from os import getenv
    import keras
    from keras import layers
    EPOCHS = int(os.environ.get("TWEAKOPS_TEST_EPOCHS", "3"))  # the job may set it
    raw = os.environ.get("TWEAKOPS_TEST_UNITS", '16')
    model = keras.Sequential([keras.Input((8,)), layers.Dense(int(raw), activation="relu"),
                              layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=float(getenv("TWEAKOPS_TEST_LR", 1e-5))),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=EPOCHS)
''')


@pytest.mark.parametrize("rule_id,label,line", [
    ("epochs", "epochs 3→5", 'EPOCHS = int(os.environ.get("TWEAKOPS_TEST_EPOCHS", "5"))  # the job may set it'),
    ("dense_units", "dense units x2", "raw = os.environ.get(\"TWEAKOPS_TEST_UNITS\", '32')"),
    ("learning_rate", "learning rate 1e-05→0.01",
     'model.compile(optimizer=keras.optimizers.SGD(learning_rate=float(getenv("TWEAKOPS_TEST_LR", 0.01))),'),
])
def test_an_environment_default_is_what_runs_and_changes_in_place(rule_id, label, line, monkeypatch):
    """A setting read from the environment with a default: the attempt runs with the default
    (the runners pass only allow-listed variables and TRAIN_ENV's), so the default changes,
    a string one as a string ("3" → "5", int() still reads it)."""
    for name in ("TWEAKOPS_TEST_EPOCHS", "TWEAKOPS_TEST_UNITS", "TWEAKOPS_TEST_LR"):
        monkeypatch.delenv(name, raising=False)
    assert tweaked(rule_id, ENV_SCRIPT) == (label, [line])
    if rule_id == "epochs":   # the script still reads it, as an int
        namespace: dict = {}
        exec(f"import os\n{line}", namespace)
        assert namespace["EPOCHS"] == 5


def test_an_environment_variable_set_here_is_left_alone(monkeypatch):
    """Set in tweakops' own environment, it may reach the script (TRAIN_ENV): the default is
    not what runs, so no rule pretends to change the setting through it."""
    monkeypatch.setenv("TWEAKOPS_TEST_EPOCHS", "7")
    assert rules.attempt("epochs", ENV_SCRIPT) is None
    monkeypatch.delenv("TWEAKOPS_TEST_EPOCHS")
    assert rules.attempt("epochs", ENV_SCRIPT) is not None


@pytest.mark.parametrize("expr", ['int(os.environ.get("N", "three"))', 'int(os.environ["N"])',
                                  'int(os.environ.get("N"))', 'os.environ.get("N", "3")', 'int(len("abc"))'])
def test_no_number_behind_the_read_leaves_the_setting_alone(expr):
    source = f"import os\nEPOCHS = {expr}\nmodel.fit(x, y, epochs=EPOCHS)\n"
    assert rules.attempt("epochs", source) is None
