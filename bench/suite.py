"""The benchmark suite: each weak start model, its data, its target, and the search space
the tuners get — the start script with the knobs of tweakops' tweak space opened.

A hypermodel is the start script rebuilt from parameters: what the tweak space can change
(filters, kernel size, conv blocks, dense units, dropout, batchnorm, recurrent units and
layers, bidirectional, optimizer, learning rate, epochs; for scikit-learn the estimator and
its hyperparameters) is a parameter; everything else stays as the start script has it.
`START[model]` gives the start script's own values, so `build(model, START[model])` is the
start model (tests/test_bench.py checks that both score alike).

Spaces: ("choice", [values]) | ("int", lo, hi) | ("logint", lo, hi) | ("logfloat", lo, hi).
"""

from __future__ import annotations

from pathlib import Path

EPOCHS_MAX = 10  # the per-trial epoch budget of every tuner (Hyperband's max_epochs)

OPTIMIZERS = ["adam", "sgd", "rmsprop"]
LR = ("logfloat", 1e-5, 1e-1)

CNN_SPACE = {
    "filters": ("choice", [2, 4, 8, 16, 32, 64]),
    "kernel": ("choice", [3, 5, 7]),
    "blocks": ("int", 1, 3),
    "dense_units": ("choice", [0, 32, 64, 128, 256]),
    "dropout": ("choice", [0.0, 0.25, 0.5]),
    "batchnorm": ("choice", [False, True]),
    "optimizer": ("choice", OPTIMIZERS),
    "learning_rate": LR,
    "epochs": ("int", 1, EPOCHS_MAX),
}
RNN_SPACE = {
    "units": ("choice", [8, 16, 32, 64, 128]),
    "layers": ("int", 1, 2),
    "bidirectional": ("choice", [False, True]),
    "optimizer": ("choice", OPTIMIZERS),
    "learning_rate": LR,
    "epochs": ("int", 1, EPOCHS_MAX),
}
MLP_SPACE = {
    "layers": ("int", 1, 3),
    "units": ("choice", [32, 64, 128, 256, 512]),
    "dropout": ("choice", [0.0, 0.25, 0.5, 0.9]),
    "optimizer": ("choice", OPTIMIZERS),
    "learning_rate": LR,
    "epochs": ("int", 1, EPOCHS_MAX),
}
TREE_SPACE = {
    "estimator": ("choice", ["tree", "forest"]),
    "n_estimators": ("logint", 10, 200),
    "max_depth": ("choice", [None, 5, 10, 20, 40]),
    "criterion": ("choice", ["gini", "entropy"]),
}
SVC_SPACE = {
    "C": ("logfloat", 1e-3, 1e3),
    "gamma": ("choice", ["scale", 1e-4, 1e-3, 1e-2, 1e-1, 0.5]),
}

# name: kind (tweakops' type), dataset (bench/data.py), target, how it is weak, the space, the start point
SUITE = {
    "cnn_digits": dict(kind="cnn", dataset="digits", target=0.90, space=CNN_SPACE,
                       weak="too few filters (2) and 3 epochs",
                       start=dict(filters=2, kernel=3, blocks=1, dense_units=0, dropout=0.0, batchnorm=False,
                                  optimizer="adam", learning_rate=0.001, epochs=3, pool=4)),
    "cnn_shifted": dict(kind="cnn", dataset="shifted", target=0.50, space=CNN_SPACE,
                        weak="learning rate far off (SGD 0.0005) on the harder image task",
                        start=dict(filters=16, kernel=3, blocks=2, dense_units=64, dropout=0.0, batchnorm=False,
                                   optimizer="sgd", learning_rate=0.0005, epochs=6, pool=2)),
    "lstm_rows": dict(kind="rnn", dataset="tabular", target=0.85, space=RNN_SPACE,
                      weak="too few epochs (1)",
                      start=dict(cell="LSTM", units=16, layers=1, bidirectional=False, optimizer="adam",
                                 learning_rate=0.001, epochs=1)),
    "gru_waves": dict(kind="rnn", dataset="waves", target=0.60, space=RNN_SPACE,
                      weak="learning rate far off (RMSprop 2e-5)",
                      start=dict(cell="GRU", units=32, layers=1, bidirectional=False, optimizer="rmsprop",
                                 learning_rate=0.00002, epochs=5)),
    "mlp_digits": dict(kind="mlp", dataset="tabular", target=0.90, space=MLP_SPACE,
                       weak="a regulariser far too strong (Dropout 0.9), plain SGD",
                       start=dict(layers=1, units=32, dropout=0.9, optimizer="sgd", learning_rate=0.01, epochs=5)),
    "sk_tree": dict(kind="sklearn", dataset="tabular", target=0.96, space=TREE_SPACE,
                    weak="overfits (an unpruned decision tree, train accuracy 1.0)",
                    start=dict(estimator="tree", n_estimators=100, max_depth=None, criterion="gini")),
    "sk_svc": dict(kind="sklearn", dataset="tabular", target=0.95, space=SVC_SPACE,
                   weak="a regulariser far too strong (StandardScaler + SVC C=0.002, gamma 0.5)",
                   start=dict(C=0.002, gamma=0.5)),
}
KERAS_KINDS = ("cnn", "rnn", "mlp")
MODELS_DIR = Path(__file__).resolve().parent / "models"


def script(name: str) -> Path:
    return MODELS_DIR / f"{name}.py"


# ---------------------------------------------------------------------------
# Data: exactly the split each start script makes.

def load(name: str, data_dir: Path):
    """(x_train, y_train, x_test, y_test) as numpy arrays, the start script's own split."""
    import numpy as np

    dataset = SUITE[name]["dataset"]
    if dataset in ("digits", "shifted"):
        import keras

        opts = dict(color_mode="grayscale", image_size=(28, 28), batch_size=256, verbose=False)
        if dataset == "digits":
            train, test = keras.utils.image_dataset_from_directory(
                str(data_dir), validation_split=0.2, subset="both", seed=1337, **opts)
        else:
            train = keras.utils.image_dataset_from_directory(str(data_dir / "train"), seed=1, **opts)
            test = keras.utils.image_dataset_from_directory(str(data_dir / "test"), shuffle=False, **opts)

        def arrays(ds):
            xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
            return np.concatenate(xs), np.concatenate(ys)

        return (*arrays(train), *arrays(test))
    if dataset == "waves":
        d = np.load(data_dir / "waves.npz")
        return d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    from sklearn.model_selection import train_test_split

    d = np.load(data_dir / "digits.npz")
    X, y = d["X"], d["y"]
    if SUITE[name]["kind"] == "rnn":
        X = X.reshape(-1, 8, 8) / 16.0
    elif SUITE[name]["kind"] == "mlp":
        X = X / 16.0
    x_train, x_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    return x_train, y_train, x_test, y_test


# ---------------------------------------------------------------------------
# Hypermodels

def optimizer(p: dict):
    import keras

    cls = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return cls[p["optimizer"]](learning_rate=p["learning_rate"])


def build(name: str, p: dict, input_shape, classes: int):
    """The compiled Keras model of parameters p (missing ones: the start script's)."""
    import keras
    from keras import layers

    spec = SUITE[name]
    p = {**spec["start"], **p}
    kind = spec["kind"]
    stack = [keras.Input(shape=input_shape)]
    if kind == "cnn":
        stack.append(layers.Rescaling(1.0 / 255))
        for block in range(p["blocks"]):
            stack.append(layers.Conv2D(p["filters"] * 2 ** block, p["kernel"], activation="relu",
                                       padding="valid" if block == 0 else "same"))
            if p["batchnorm"]:
                stack.append(layers.BatchNormalization())
            stack.append(layers.MaxPooling2D(p["pool"] if block == 0 else 2, padding="same"))
        stack.append(layers.Flatten())
        if p["dense_units"]:
            stack.append(layers.Dense(p["dense_units"], activation="relu"))
        if p["dropout"]:
            stack.append(layers.Dropout(p["dropout"]))
    elif kind == "rnn":
        cell = getattr(layers, p["cell"])
        for n in range(p["layers"]):
            layer = cell(p["units"], return_sequences=n < p["layers"] - 1)
            stack.append(layers.Bidirectional(layer) if p["bidirectional"] else layer)
    else:
        for _ in range(p["layers"]):
            stack.append(layers.Dense(p["units"], activation="relu"))
            if p["dropout"]:
                stack.append(layers.Dropout(p["dropout"]))
    stack.append(layers.Dense(classes, activation="softmax"))
    model = keras.Sequential(stack)
    model.compile(optimizer=optimizer(p), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def batch_size(name: str) -> int:
    return 64 if name == "cnn_digits" else 32


def estimator(name: str, p: dict, seed: int):
    """The scikit-learn estimator of parameters p."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    p = {**SUITE[name]["start"], **p}
    if name == "sk_tree":
        if p["estimator"] == "tree":
            return DecisionTreeClassifier(max_depth=p["max_depth"], criterion=p["criterion"], random_state=seed)
        return RandomForestClassifier(n_estimators=p["n_estimators"], max_depth=p["max_depth"],
                                      criterion=p["criterion"], random_state=seed, n_jobs=1)
    return Pipeline([("scale", StandardScaler()), ("svc", SVC(C=p["C"], gamma=p["gamma"]))])
