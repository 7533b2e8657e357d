"""tweak.py: each rule on each style of script, the chooser, and `make tweak` end to end.

Every rewrite is checked three ways: the new source parses, the diff holds exactly the
expected lines (everything else byte-identical, comments included), and the intended
value changed as read back with `ast`. No training here; building the tweaked example
models (Keras, no fit) is the one slower test.
"""

from __future__ import annotations

import ast
import collections
import difflib
import io
import json
import os
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import pytest

import rules
import search
import sourceedit
import state
import tweak

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "tweak"
EXAMPLES = ROOT / "models"


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.py").read_text()


def model_type(name: str) -> str:
    return name.split("_")[0]


# (fixture, rule) -> (lines removed, lines added), exactly as in the unified diff.
# Pairs of a fixture and a rule of its type that are not listed must not apply.
EXPECTED = {
    ('cnn_add', 'epochs'): (['history = model.fit(x_train, y_train, epochs=5, validation_data=(x_val, y_val))'],
        ['history = model.fit(x_train, y_train, epochs=7, validation_data=(x_val, y_val))']),
    ('cnn_add', 'filters'): (['model.add(tf.keras.layers.Conv2D(filters=16, kernel_size=3, activation="relu", input_shape=(28, 28, 1), name="conv1"))'],
        ['model.add(tf.keras.layers.Conv2D(filters=32, kernel_size=3, activation="relu", input_shape=(28, 28, 1), name="conv1"))']),
    ('cnn_add', 'kernel'): (['model.add(tf.keras.layers.Conv2D(filters=16, kernel_size=3, activation="relu", input_shape=(28, 28, 1), name="conv1"))'],
        ['model.add(tf.keras.layers.Conv2D(filters=16, kernel_size=5, activation="relu", input_shape=(28, 28, 1), name="conv1"))']),
    ('cnn_add', 'conv_block'): ([],
        ['model.add(tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="tweak_conv_3"))', 'model.add(tf.keras.layers.MaxPooling2D(pool_size=2, padding="same", name="tweak_pool_3"))']),
    ('cnn_add', 'dense_layer'): ([],
        ['model.add(tf.keras.layers.Dense(32, activation="relu", name="tweak_dense_3"))']),
    ('cnn_add', 'dense_units'): (['model.add(tf.keras.layers.Dense(32, activation="relu", name="hidden"))'],
        ['model.add(tf.keras.layers.Dense(64, activation="relu", name="hidden"))']),
    ('cnn_add', 'dropout'): ([],
        ['model.add(tf.keras.layers.Dropout(0.3, name="tweak_dropout_3"))']),
    ('cnn_add', 'batchnorm'): ([],
        ['model.add(tf.keras.layers.BatchNormalization(name="tweak_bn_3"))']),
    ('cnn_add', 'optimizer'): (['optimizer = tf.keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)'],
        ['optimizer = tf.keras.optimizers.Adam(learning_rate=0.001)']),
    ('cnn_add', 'learning_rate'): (['optimizer = tf.keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)'],
        ['optimizer = tf.keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)']),
    ('cnn_bare', 'epochs'): (['model.fit(x_train, y_train)'],
        ['model.fit(x_train, y_train, epochs=3)']),
    ('cnn_bare', 'filters'): (["    Convolution2D(8, (3, 3), activation='sigmoid', input_shape=(28, 28, 1)),"],
        ["    Convolution2D(16, (3, 3), activation='sigmoid', input_shape=(28, 28, 1)),"]),
    ('cnn_bare', 'kernel'): (["    Convolution2D(8, (3, 3), activation='sigmoid', input_shape=(28, 28, 1)),"],
        ["    Convolution2D(8, (5, 5), activation='sigmoid', input_shape=(28, 28, 1)),"]),
    ('cnn_bare', 'activation'): (["    Convolution2D(8, (3, 3), activation='sigmoid', input_shape=(28, 28, 1)),"],
        ["    Convolution2D(8, (3, 3), activation='relu', input_shape=(28, 28, 1)),"]),
    ('cnn_bare', 'conv_block'): ([],
        ["    Convolution2D(16, (3, 3), padding='same', activation='sigmoid'),", "    MaxPooling2D(pool_size=(2, 2), padding='same'),"]),
    ('cnn_bare', 'dense_layer'): ([],
        ["    Dense(64, activation='relu'),"]),
    ('cnn_bare', 'dropout'): ([],
        ['    Dropout,', '    Dropout(0.3),']),
    ('cnn_bare', 'batchnorm'): ([],
        ['    BatchNormalization,', '    BatchNormalization(),']),
    ('cnn_bare', 'optimizer'): (["model.compile(optimizer='rmsprop', loss='sparse_categorical_crossentropy', metrics=['accuracy'])"],
        ["model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])"]),
    ('cnn_functional', 'epochs'): (['EPOCHS = 2'],
        ['EPOCHS = 4']),
    ('cnn_functional', 'filters'): (['FILTERS = 16   # filters of every conv layer'],
        ['FILTERS = 32   # filters of every conv layer']),
    ('cnn_functional', 'kernel'): (['KERNEL = 3'],
        ['KERNEL = 5']),
    ('cnn_functional', 'conv_block'): ([],
        ['    x = layers.Conv2D(32, KERNEL, padding="same", activation="relu")(x)', '    x = layers.MaxPooling2D(padding="same")(x)']),
    ('cnn_functional', 'dense_layer'): ([],
        ['    x = layers.Dense(64, activation="relu")(x)']),
    ('cnn_functional', 'dropout'): ([],
        ['    x = layers.Dropout(0.3)(x)']),
    ('cnn_functional', 'batchnorm'): ([],
        ['    x = layers.BatchNormalization()(x)', '    x = layers.BatchNormalization()(x)']),
    ('cnn_functional', 'learning_rate'): (['LEARNING_RATE = 0.05'],
        ['LEARNING_RATE = 0.001']),
    ('cnn_sequential', 'epochs'): (['epochs = 2'],
        ['epochs = 4']),
    ('cnn_sequential', 'filters'): (['        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),  # first block', '        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),'],
        ['        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),  # first block', '        layers.Conv2D(128, kernel_size=(3, 3), activation="relu"),']),
    ('cnn_sequential', 'kernel'): (['        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),  # first block', '        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),'],
        ['        layers.Conv2D(32, kernel_size=(5, 5), activation="relu"),  # first block', '        layers.Conv2D(64, kernel_size=(5, 5), activation="relu"),']),
    ('cnn_sequential', 'conv_block'): ([],
        ['        layers.Conv2D(128, (3, 3), padding="same", activation="relu"),', '        layers.MaxPooling2D(pool_size=(2, 2), padding="same"),']),
    ('cnn_sequential', 'dense_layer'): ([],
        ['        layers.Dense(64, activation="relu"),']),
    ('cnn_sequential', 'dropout'): ([],
        ['        layers.Dropout(0.3),']),
    ('cnn_sequential', 'batchnorm'): ([],
        ['        layers.BatchNormalization(),', '        layers.BatchNormalization(),']),
    ('cnn_sequential', 'optimizer'): (['model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])'],
        ['model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])']),
    ('mlp', 'epochs'): (['EPOCHS = 5'],
        ['EPOCHS = 7']),
    ('mlp', 'dense_layer'): ([],
        ['        layers.Dense(128, activation="relu"),']),
    ('mlp', 'dense_units'): (['        layers.Dense(128, activation="relu"),  # hidden'],
        ['        layers.Dense(256, activation="relu"),  # hidden']),
    ('mlp', 'dropout'): ([],
        ['        layers.Dropout(0.3),']),
    ('mlp_regularised', 'epochs'): (['model.fit(x_train, y_train, epochs=5)'],
        ['model.fit(x_train, y_train, epochs=7)']),
    ('mlp_regularised', 'dense_layer'): ([],
        ['    layers.Dense(32, activation="relu"),']),
    ('mlp_regularised', 'dense_units'): (['    layers.Dense(32, activation="relu", kernel_regularizer=regularizers.l2(0.01)),'],
        ['    layers.Dense(64, activation="relu", kernel_regularizer=regularizers.l2(0.01)),']),
    ('mlp_regularised', 'less_dropout'): (['DROPOUT = 0.5  # half the units off in every step'],
        ['DROPOUT = 0.25  # half the units off in every step']),
    ('mlp_regularised', 'l2'): (['    layers.Dense(32, activation="relu", kernel_regularizer=regularizers.l2(0.01)),'],
        ['    layers.Dense(32, activation="relu", kernel_regularizer=regularizers.l2(0.001)),']),
    ('rnn_gru_functional', 'epochs'): (['model.fit(train_ds, epochs=4, validation_data=val_ds)'],
        ['model.fit(train_ds, epochs=6, validation_data=val_ds)']),
    ('rnn_gru_functional', 'units'): (['x = layers.GRU(units=24, name="gru")(inputs)'],
        ['x = layers.GRU(units=48, name="gru")(inputs)']),
    ('rnn_gru_functional', 'stack_rnn'): (['x = layers.GRU(units=24, name="gru")(inputs)'],
        ['x = layers.GRU(units=24, name="gru", return_sequences=True)(inputs)', 'x = layers.GRU(units=24, name="tweak_gru_3")(x)']),
    ('rnn_gru_functional', 'bidirectional'): (['x = layers.GRU(units=24, name="gru")(inputs)'],
        ['x = layers.Bidirectional(layers.GRU(units=24, name="gru"))(inputs)']),
    ('rnn_lstm', 'epochs'): (['model.fit(x_train, y_train, epochs=3, validation_split=0.2)  # quick run'],
        ['model.fit(x_train, y_train, epochs=5, validation_split=0.2)  # quick run']),
    ('rnn_lstm', 'units'): (['UNITS = 32  # width of the recurrent layer'],
        ['UNITS = 64  # width of the recurrent layer']),
    ('rnn_lstm', 'stack_rnn'): (['    keras.layers.LSTM(UNITS, input_shape=(28, 28)),'],
        ['    keras.layers.LSTM(UNITS, input_shape=(28, 28), return_sequences=True),', '    keras.layers.LSTM(UNITS),']),
    ('rnn_lstm', 'bidirectional'): (['    keras.layers.LSTM(UNITS, input_shape=(28, 28)),'],
        ['    keras.layers.Bidirectional(keras.layers.LSTM(UNITS), input_shape=(28, 28)),']),
    # augmentation right before the first convolution: the first layer's input_shape moves to it,
    # a functional Input is shifted into a new name the convolution reads
    ('cnn_sequential', 'augment'): ([],
        ['        layers.RandomTranslation(0.1, 0.1),']),
    ('cnn_functional', 'augment'): (['    x = layers.Conv2D(FILTERS, KERNEL, activation="relu")(inputs)'],
        ['    augmented = layers.RandomTranslation(0.1, 0.1)(inputs)', '    x = layers.Conv2D(FILTERS, KERNEL, activation="relu")(augmented)']),
    ('cnn_add', 'augment'): (['model.add(tf.keras.layers.Conv2D(filters=16, kernel_size=3, activation="relu", input_shape=(28, 28, 1), name="conv1"))'],
        ['model.add(tf.keras.layers.RandomTranslation(0.1, 0.1, name="tweak_augment_3", input_shape=(28, 28, 1)))', 'model.add(tf.keras.layers.Conv2D(filters=16, kernel_size=3, activation="relu", name="conv1"))']),
    ('cnn_bare', 'augment'): (["    Convolution2D(8, (3, 3), activation='sigmoid', input_shape=(28, 28, 1)),"],
        ['    RandomTranslation,', '    RandomTranslation(0.1, 0.1, input_shape=(28, 28, 1)),', "    Convolution2D(8, (3, 3), activation='sigmoid'),"]),
    # a plain recurrent cell, every Keras name imported bare: GRU is added to the import
    ('rnn_simple', 'epochs'): (['model.fit(x_train, y_train, epochs=3, validation_split=0.1)'],
        ['model.fit(x_train, y_train, epochs=5, validation_split=0.1)']),
    ('rnn_simple', 'units'): (['model.add(SimpleRNN(8, input_shape=(40, 1)))  # plain cell'],
        ['model.add(SimpleRNN(16, input_shape=(40, 1)))  # plain cell']),
    ('rnn_simple', 'stack_rnn'): (['model.add(SimpleRNN(8, input_shape=(40, 1)))  # plain cell'],
        ['model.add(SimpleRNN(8, input_shape=(40, 1), return_sequences=True))  # plain cell', 'model.add(SimpleRNN(8))']),
    ('rnn_simple', 'bidirectional'): (['from keras.layers import Dense, SimpleRNN', 'model.add(SimpleRNN(8, input_shape=(40, 1)))  # plain cell'],
        ['from keras.layers import Dense, SimpleRNN, Bidirectional', 'model.add(Bidirectional(SimpleRNN(8), input_shape=(40, 1)))  # plain cell']),
    ('rnn_simple', 'gated_cell'): (['from keras.layers import Dense, SimpleRNN', 'model.add(SimpleRNN(8, input_shape=(40, 1)))  # plain cell'],
        ['from keras.layers import Dense, SimpleRNN, GRU', 'model.add(GRU(8, input_shape=(40, 1)))  # plain cell']),
    ('rnn_simple', 'optimizer'): (['from keras.optimizers import SGD', 'model.compile(optimizer=SGD(learning_rate=0.001), loss="sparse_categorical_crossentropy", metrics=["accuracy"])'],
        ['from keras.optimizers import SGD, Adam', 'model.compile(optimizer=Adam(learning_rate=0.001), loss="sparse_categorical_crossentropy", metrics=["accuracy"])']),
    ('rnn_simple', 'learning_rate'): (['model.compile(optimizer=SGD(learning_rate=0.001), loss="sparse_categorical_crossentropy", metrics=["accuracy"])'],
        ['model.compile(optimizer=SGD(learning_rate=0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])']),
    ('sklearn_forest', 'n_estimators'): (['forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)'],
        ['forest = RandomForestClassifier(n_estimators=100, max_depth=6, random_state=0)']),
    ('sklearn_forest', 'max_depth'): (['forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)'],
        ['forest = RandomForestClassifier(n_estimators=20, max_depth=12, random_state=0)']),
    ('sklearn_forest', 'criterion'): (['forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)'],
        ['forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0, criterion="entropy")']),
    ('sklearn_boosting', 'n_estimators'): (['booster = GradientBoostingClassifier(n_estimators=30, learning_rate=0.01, max_depth=2, random_state=0)'],
        ['booster = GradientBoostingClassifier(n_estimators=100, learning_rate=0.01, max_depth=2, random_state=0)']),
    ('sklearn_boosting', 'max_depth'): (['booster = GradientBoostingClassifier(n_estimators=30, learning_rate=0.01, max_depth=2, random_state=0)'],
        ['booster = GradientBoostingClassifier(n_estimators=30, learning_rate=0.01, max_depth=4, random_state=0)']),
    ('sklearn_boosting', 'boost_rate'): (['booster = GradientBoostingClassifier(n_estimators=30, learning_rate=0.01, max_depth=2, random_state=0)'],
        ['booster = GradientBoostingClassifier(n_estimators=30, learning_rate=0.1, max_depth=2, random_state=0)']),
    # settings passed as **PARAMS are changed in the dict; a count below the default goes to it
    ('sklearn_leaves', 'n_estimators'): (['PARAMS = {"n_estimators": 3, "min_samples_leaf": 40, "ccp_alpha": 0.01, "random_state": 0}  # smooth leaves'],
        ['PARAMS = {"n_estimators": 100, "min_samples_leaf": 40, "ccp_alpha": 0.01, "random_state": 0}  # smooth leaves']),
    ('sklearn_leaves', 'tree_limits'): (['PARAMS = {"n_estimators": 3, "min_samples_leaf": 40, "ccp_alpha": 0.01, "random_state": 0}  # smooth leaves'],
        ['PARAMS = {"n_estimators": 3, "min_samples_leaf": 10, "ccp_alpha": 0.001, "random_state": 0}  # smooth leaves']),
    ('sklearn_leaves', 'criterion'): (['forest = RandomForestClassifier(**PARAMS)'],
        ['forest = RandomForestClassifier(**PARAMS, criterion="entropy")']),
    ('sklearn_knn', 'n_neighbors'): (['knn = KNeighborsClassifier(n_neighbors=9)'],
        ['knn = KNeighborsClassifier(n_neighbors=3)']),
    ('sklearn_knn', 'knn_weights'): (['knn = KNeighborsClassifier(n_neighbors=9)'],
        ['knn = KNeighborsClassifier(n_neighbors=9, weights="distance")']),
    ('sklearn_logreg', 'C'): (['pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01))'],
        ['pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1))']),
    ('sklearn_logreg', 'max_iter'): (['pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01))'],
        ['pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500))']),
    ('sklearn_mlp', 'max_iter'): (['net = MLPClassifier(hidden_layer_sizes=(HIDDEN, 8), max_iter=50, random_state=0)'],
        ['net = MLPClassifier(hidden_layer_sizes=(HIDDEN, 8), max_iter=250, random_state=0)']),
    ('sklearn_mlp', 'alpha'): (['net = MLPClassifier(hidden_layer_sizes=(HIDDEN, 8), max_iter=50, random_state=0)'],
        ['net = MLPClassifier(hidden_layer_sizes=(HIDDEN, 8), max_iter=50, random_state=0, alpha=1e-05)']),
    ('sklearn_mlp', 'hidden_layer_sizes'): (['HIDDEN = 16', 'net = MLPClassifier(hidden_layer_sizes=(HIDDEN, 8), max_iter=50, random_state=0)'],
        ['HIDDEN = 32', 'net = MLPClassifier(hidden_layer_sizes=(HIDDEN, 16), max_iter=50, random_state=0)']),
    ('sklearn_counts_nb', 'alpha'): (['model = MultinomialNB(alpha=100.0)  # safe against unseen pixels'],
        ['model = MultinomialNB(alpha=10.0)  # safe against unseen pixels']),
    ('sklearn_pca', 'n_components'): (['pipe = make_pipeline(PCA(n_components=2), LogisticRegression(max_iter=1000))  # easy to plot'],
        ['pipe = make_pipeline(PCA(n_components=8), LogisticRegression(max_iter=1000))  # easy to plot']),
    ('sklearn_pca', 'C'): (['pipe = make_pipeline(PCA(n_components=2), LogisticRegression(max_iter=1000))  # easy to plot'],
        ['pipe = make_pipeline(PCA(n_components=2), LogisticRegression(max_iter=1000, C=10.0))  # easy to plot']),
    ('sklearn_pca', 'max_iter'): (['pipe = make_pipeline(PCA(n_components=2), LogisticRegression(max_iter=1000))  # easy to plot'],
        ['pipe = make_pipeline(PCA(n_components=2), LogisticRegression(max_iter=5000))  # easy to plot']),
    ('sklearn_nb', 'var_smoothing'): (["model = GaussianNB()  # the library's smoothing"],
        ["model = GaussianNB(var_smoothing=1e-07)  # the library's smoothing"]),
    ('sklearn_svc', 'C'): (['C = 0.5'],
        ['C = 5.0']),
    ('sklearn_svc', 'gamma'): (['GAMMA = 0.5  # far too large for these features'],
        ['GAMMA = "scale"  # far too large for these features']),
    ('sklearn_svc', 'gamma_step'): (['GAMMA = 0.5  # far too large for these features'],
        ['GAMMA = 0.05  # far too large for these features']),
    ('sklearn_tree', 'stronger_estimator'): (['clf = DecisionTreeClassifier(max_depth=5, random_state=0)  # a shallow tree'],
        ['from sklearn.ensemble import RandomForestClassifier', 'clf = RandomForestClassifier(max_depth=5, random_state=0)  # a shallow tree']),
    ('sklearn_tree', 'max_depth'): (['clf = DecisionTreeClassifier(max_depth=5, random_state=0)  # a shallow tree'],
        ['clf = DecisionTreeClassifier(max_depth=10, random_state=0)  # a shallow tree']),
    ('sklearn_tree', 'criterion'): (['clf = DecisionTreeClassifier(max_depth=5, random_state=0)  # a shallow tree'],
        ['clf = DecisionTreeClassifier(max_depth=5, random_state=0, criterion="entropy")  # a shallow tree']),

}


# ---------------------------------------------------------------------------
# reading a script back with ast: every call's class and its (resolved) arguments

def facts(source: str) -> tuple[collections.Counter, dict[str, list]]:
    """(calls per class, "Class.arg" / "Class[i]" -> the values given, constants resolved)."""
    tree = ast.parse(source)
    assigned: dict[str, list] = collections.defaultdict(list)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned[target.id].append(node.value)

    def value(node):
        while isinstance(node, ast.Name) and len(assigned.get(node.id, [])) == 1:
            node = assigned[node.id][0]
        if isinstance(node, ast.Tuple):
            return tuple(value(el) for el in node.elts)
        try:
            return ast.literal_eval(node)
        except ValueError:
            return ast.unparse(node)

    counts: collections.Counter = collections.Counter()
    values: dict[str, list] = collections.defaultdict(list)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        cls = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if cls is None:
            continue
        counts[cls] += 1
        for i, arg in enumerate(node.args):
            values[f"{cls}[{i}]"].append(value(arg))
        for kw in node.keywords:
            if kw.arg is None:   # **PARAMS: the dict literal's keys
                given = value(kw.value)
                for k, v in (given.items() if isinstance(given, dict) else ()):
                    values[f"{cls}.{k}"].append(v)
            else:
                values[f"{cls}.{kw.arg}"].append(value(kw.value))
    return counts, values


def numbers(values: list) -> list:
    out = []
    for v in values:
        out += list(v) if isinstance(v, tuple) else [v]
    return out


CONV = {"Conv2D", "Convolution2D"}
RNN = {"LSTM", "GRU", "SimpleRNN"}


def conv_values(v, arg, pos):
    return [x for c in CONV for x in v.get(f"{c}.{arg}", []) + v.get(f"{c}[{pos}]", [])]


def _epochs(old, new):
    (_, a), (_, b) = old, new
    if a.get("fit.epochs"):
        return [x > y for x, y in zip(b["fit.epochs"], a["fit.epochs"])] == [True] * len(a["fit.epochs"])
    return b.get("fit.epochs") == [3]


def _sk(param, expect):
    return lambda old, new: any(expect(x, y) for cls in old[1] for x, y in
                                zip(old[1][cls], new[1].get(cls, [])) if cls.endswith("." + param)) \
        or any(k.endswith("." + param) for k in set(new[1]) - set(old[1]))


def _activations(f) -> list:
    return [v for k, values in f[1].items() if k.endswith(".activation") for v in values]


# rule -> check(old facts, new facts): the intended value changed
INTENT = {
    "epochs": _epochs,
    "filters": lambda o, n: conv_values(n[1], "filters", 0) == [2 * x for x in conv_values(o[1], "filters", 0)],
    "kernel": lambda o, n: numbers(conv_values(n[1], "kernel_size", 1))
    == [5 if x == 3 else x for x in numbers(conv_values(o[1], "kernel_size", 1))],
    "conv_block": lambda o, n: sum(n[0][c] for c in CONV) == sum(o[0][c] for c in CONV) + 1
    and sum(n[0][p] for p in ("MaxPooling2D",)) == sum(o[0][p] for p in ("MaxPooling2D",)) + 1,
    "dense_layer": lambda o, n: n[0]["Dense"] == o[0]["Dense"] + 1,
    "dense_units": lambda o, n: sorted(n[1]["Dense[0]"] + n[1]["Dense.units"])
    != sorted(o[1]["Dense[0]"] + o[1]["Dense.units"]) and n[0]["Dense"] == o[0]["Dense"],
    "dropout": lambda o, n: n[0]["Dropout"] == o[0]["Dropout"] + 1,
    "augment": lambda o, n: n[0]["RandomTranslation"] == o[0]["RandomTranslation"] + 1
    and sum(n[0][c] for c in CONV) == sum(o[0][c] for c in CONV),
    "batchnorm": lambda o, n: n[0]["BatchNormalization"] == sum(o[0][c] for c in CONV),
    "optimizer": lambda o, n: "adam" in n[1]["compile.optimizer"] or n[0]["Adam"] == o[0]["Adam"] + 1,
    "learning_rate": lambda o, n: n[1]["Adam.learning_rate"] + n[1]["SGD.learning_rate"]
    in ([0.001], [0.01]),
    "units": lambda o, n: [v for c in RNN for v in n[1][f"{c}[0]"] + n[1][f"{c}.units"]]
    == [2 * v for c in RNN for v in o[1][f"{c}[0]"] + o[1][f"{c}.units"]],
    "stack_rnn": lambda o, n: sum(n[0][c] for c in RNN) == sum(o[0][c] for c in RNN) + 1
    and sum(n[1][f"{c}.return_sequences"].count(True) for c in RNN) == 1,
    "bidirectional": lambda o, n: n[0]["Bidirectional"] == sum(o[0][c] for c in RNN),
    "gated_cell": lambda o, n: n[0]["SimpleRNN"] == 0 and n[0]["GRU"] == o[0]["GRU"] + o[0]["SimpleRNN"] > 0,
    "less_dropout": lambda o, n: n[1]["Dropout[0]"] == [x / 2 for x in o[1]["Dropout[0]"]],
    "l2": lambda o, n: n[1]["l2[0]"] == [pytest.approx(x / 10) for x in o[1]["l2[0]"]],
    "stronger_estimator": lambda o, n: n[0]["DecisionTreeClassifier"] == o[0]["DecisionTreeClassifier"] - 1
    and n[0]["RandomForestClassifier"] == o[0]["RandomForestClassifier"] + 1,
    "n_estimators": _sk("n_estimators", lambda a, b: b == 2 * a or a < b in (10, 50, 100)),  # or the default
    "max_depth": _sk("max_depth", lambda a, b: b == 2 * a),
    "C": _sk("C", lambda a, b: b == 10 * a),
    "gamma": _sk("gamma", lambda a, b: b == "scale"),
    "gamma_step": _sk("gamma", lambda a, b: b == pytest.approx(a / 10)),
    "alpha": _sk("alpha", lambda a, b: b == pytest.approx(a / 10)),
    "max_iter": _sk("max_iter", lambda a, b: b == max(5 * a, 100)),
    "tree_limits": lambda o, n: _sk("min_samples_leaf", lambda a, b: b == a // 4)(o, n)
    and _sk("ccp_alpha", lambda a, b: b == pytest.approx(a / 10))(o, n),
    "n_neighbors": _sk("n_neighbors", lambda a, b: b == 3),
    "knn_weights": _sk("weights", lambda a, b: b == "distance"),
    "hidden_layer_sizes": _sk("hidden_layer_sizes", lambda a, b: numbers([b]) == [2 * x for x in numbers([a])]),
    "criterion": _sk("criterion", lambda a, b: b == "entropy"),
    "n_components": _sk("n_components", lambda a, b: b == 4 * a),
    "var_smoothing": lambda o, n: n[1]["GaussianNB.var_smoothing"] == [pytest.approx(1e-7)],
    "boost_rate": _sk("learning_rate", lambda a, b: b == pytest.approx(10 * a)),
    "activation": lambda o, n: _activations(n).count("relu") == _activations(o).count("relu") + 1
    and _activations(n).count("softmax") == _activations(o).count("softmax"),   # never the output
}


def comments(source: str) -> list[str]:
    return [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]


def changed_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm=""))[2:]
    return [d[1:] for d in diff if d.startswith("-")], [d[1:] for d in diff if d.startswith("+")]


# ---------------------------------------------------------------------------
# each rule on each style of script

@pytest.mark.parametrize("name,rule_id", sorted(EXPECTED), ids=lambda x: x)
def test_rule_changes_exactly_the_intended_lines(name, rule_id):
    old = fixture(name)
    new = rules.apply(rule_id, old, sourceedit.Context(counter=3))
    assert new is not None, f"{rule_id} did not apply to {name}"
    ast.parse(new)
    removed, added = EXPECTED[name, rule_id]
    assert changed_lines(old, new) == (removed, added)
    assert comments(new) == comments(old)
    assert INTENT[rule_id](facts(old), facts(new)), f"{rule_id} did not change what it should in {name}"
    # the label written to run.env/history leads back to the rule
    assert search.rule_of({"tweak": rules.attempt(rule_id, old, sourceedit.Context(3)).label}) == rule_id


NOT_APPLICABLE = sorted((name, r.id) for name in sorted(p.stem for p in FIXTURES.glob("*.py"))
                        for r in rules.rules_for(model_type(name)) if (name, r.id) not in EXPECTED)


@pytest.mark.parametrize("name,rule_id", NOT_APPLICABLE, ids=lambda x: x)
def test_rule_that_does_not_apply_returns_none(name, rule_id):
    assert rules.apply(rule_id, fixture(name), sourceedit.Context(counter=3)) is None


def test_every_rule_is_exercised_by_a_fixture():
    assert {r for _, r in EXPECTED} == set(rules.REGISTRY)


def test_every_model_type_has_rules_and_each_rule_a_label():
    for t in ("cnn", "rnn", "mlp", "sklearn"):
        assert len(rules.rules_for(t)) >= 4, t
    for r in rules.REGISTRY.values():
        assert r.label and r.doc and r.types, r.id
    assert rules.rules_for("torch") == []
    first_words = [r.label.split()[0] for r in rules.REGISTRY.values()]
    assert len(first_words) == len(set(first_words)), "each rule's label must start with its own word"


def test_new_layer_names_use_the_counter_and_stay_unique():
    source = fixture("cnn_add")
    first = rules.apply("batchnorm", source, sourceedit.Context(counter=7))
    assert 'name="tweak_bn_7"' in first
    # the name is taken already: the next one gets a suffix instead of a clash
    second = rules.apply("conv_block", first, sourceedit.Context(counter=7))
    assert 'name="tweak_conv_7"' in second and 'name="tweak_pool_7"' in second
    assert rules.apply("batchnorm", second, sourceedit.Context(counter=7)).count('name="tweak_bn_7_2"') == 1


def test_layers_are_not_named_where_the_script_names_none():
    assert "name=" not in "".join(changed_lines(fixture("cnn_sequential"),
                                                rules.apply("conv_block", fixture("cnn_sequential")))[1])


def test_a_result_that_does_not_compile_is_never_returned(monkeypatch):
    monkeypatch.setattr(sourceedit.Script, "render", lambda self: self.source + "\ndef broken(:\n")
    assert rules.apply("epochs", fixture("mlp")) is None


def test_an_unparsable_source_is_not_applicable():
    assert rules.apply("epochs", "model.fit(x, epochs=(\n") is None


def test_an_unknown_rule_is_a_clear_error():
    with pytest.raises(state.TweakopsError, match="unknown tweak rule 'nope'"):
        rules.apply("nope", fixture("mlp"))


def test_rules_compose_on_the_same_source():
    source = fixture("rnn_lstm")
    for rule_id in ("stack_rnn", "bidirectional", "units", "epochs"):
        source = rules.apply(rule_id, source, sourceedit.Context(1))
        assert source is not None, rule_id
    counts, values = facts(source)
    assert counts["Bidirectional"] == 2 and counts["LSTM"] == 2
    assert values["LSTM[0]"] == [64, 64] and values["fit.epochs"] == [5]


# ---------------------------------------------------------------------------
# choosing the next rule from the history

def record(attempt, rule_id=None, outcome="reverted", accuracy=None, parent=1, source=None, label=None):
    r = {"attempt": attempt, "outcome": outcome, "accuracy": accuracy, "parent": parent,
         "tweak": label if label is not None else (rules.REGISTRY[rule_id].label if rule_id else ""),
         "rule": rule_id or ""}
    if source is not None:
        r["source_hash"] = state.source_hash(source)
    return r


def baseline(source, accuracy=0.5):
    return record(1, outcome="baseline", accuracy=accuracy, parent=None, source=source)


def propose(source, model_type, history, parent, metrics=None):
    found = search.propose(source, model_type, history, parent, metrics, 0.8, counter=1)
    return found[0] if found else None


def test_without_a_diagnosis_the_chooser_takes_the_registry_order():
    source = fixture("cnn_sequential")
    choice = propose(source, "cnn", [baseline(source)], 1)
    assert choice.rule == rules.rules_for("cnn")[0].id == "epochs"
    assert choice.label == "epochs 2→4"


def test_chooser_never_yields_a_source_already_in_the_history():
    source = fixture("cnn_sequential")
    history = [baseline(source)]
    for _ in range(4 * len(rules.rules_for("cnn"))):
        choice = propose(source, "cnn", history, parent=None)   # no parent: only the hashes stop it
        if choice is None:
            break
        history.append(record(len(history) + 1, label="(formatting differs)", source=choice.source + "\n# x\n"))
    assert choice is None
    hashes = [r["source_hash"] for r in history]
    assert len(hashes) == len(set(hashes)) >= 8


def test_a_rule_recorded_failed_is_not_retried_on_the_same_parent():
    source = fixture("cnn_sequential")
    history = [baseline(source), record(2, "epochs", outcome="failed")]
    assert propose(source, "cnn", history, 1).rule != "epochs"
    # on a new best it may be tried again, after the moves that did not hurt
    applicable = [r.id for r in rules.rules_for("cnn")]
    assert search.plan("unknown", applicable, history, 2)[-1:] == ["epochs"]


def test_a_move_that_hurt_goes_after_the_others_never_out():
    source = fixture("cnn_sequential")
    kept = rules.apply("filters", source)
    history = [baseline(source, 0.50),
               record(2, "epochs", accuracy=0.40),                   # hurt
               record(3, "filters", outcome="kept", accuracy=0.70, source=kept)]   # helped
    order = search.plan("unknown", [r.id for r in rules.rules_for("cnn")], history, 3)
    assert order[-1] == "epochs" and order.index("kernel") < order.index("epochs")
    choice = propose(kept, "cnn", history, parent=3)
    assert state.source_hash(choice.source) != history[2]["source_hash"]


def test_mean_gains_average_the_gain_over_the_parent():
    history = [baseline("x = 1", 0.5), record(2, "epochs", "kept", 0.7),
               record(3, "epochs", "reverted", 0.6, parent=2), record(4, "filters", "failed"),
               record(5, "kernel", "stopped-early"), record(6, "dropout", "cached")]
    gains = search.mean_gains(history)
    assert gains["epochs"] == pytest.approx((0.2 - 0.1) / 2)
    assert gains["filters"] == search.FAILED_GAIN
    assert gains["kernel"] == search.STOPPED_GAIN
    assert "dropout" not in gains


def test_a_record_without_a_rule_field_is_recognised_by_its_label():
    assert search.rule_of({"tweak": "epochs 1→3"}) == "epochs"
    assert search.rule_of({"tweak": "estimator DecisionTreeClassifier→RandomForestClassifier"}) == "stronger_estimator"
    assert search.rule_of({"tweak": "+recurrent layer (LSTM)"}) == "stack_rnn"
    assert search.rule_of({"tweak": ""}) is None


def test_the_best_attempt_comes_from_run_env_else_the_history():
    history = [baseline("a", 0.5), record(2, "epochs", "kept", 0.7), record(3, "filters", "reverted", 0.9)]
    assert tweak.best_attempt({"BEST_ATTEMPT": "5"}, history) == 5
    assert tweak.best_attempt({}, history) == 2
    assert tweak.best_attempt({"ATTEMPT": "1"}, []) == 1


# ---------------------------------------------------------------------------
# make tweak (the script in its own process, as Jenkins runs it)

@pytest.fixture
def workspace(tmp_path):
    """A STATE_DIR and a checkout holding the example CNN after its baseline attempt."""
    env = {k: v for k, v in os.environ.items() if k not in state.DEFAULTS}
    env.update(TWEAKOPS_ENV_FILE=os.devnull, STATE_DIR=str(tmp_path / "state"),
               CHECKOUT_DIR=str(tmp_path / "checkout"), NO_COLOR="1")
    cfg = state.config(environ=env)
    source = (EXAMPLES / "cnn" / "model.py").read_text()
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "model.py").write_text(source)
    state.update_run(cfg, MODEL_FILE="model.py", MODEL_TYPE="cnn", ATTEMPT=1, BEST_ATTEMPT=1, STATUS="trained")
    state.append_history(cfg, baseline(source, 0.6))

    class W:
        pass
    w = W()
    w.env, w.cfg, w.source, w.checkout = env, cfg, source, tmp_path / "checkout" / "model.py"
    w.run = lambda *args: subprocess.run([sys.executable, str(ROOT / "scripts" / "tweak.py"), *args],
                                         env=env, capture_output=True, text=True, timeout=120)
    return w


def test_make_tweak_writes_the_tweak_and_records_it(workspace):
    result = workspace.run()
    assert result.returncode == 0, result.stderr
    expected = rules.apply("epochs", workspace.source, sourceedit.Context(counter=1))
    assert workspace.checkout.read_text() == expected
    assert result.stdout == sourceedit.unified_diff(workspace.source, expected, "model.py")
    assert result.stdout.startswith("--- a/model.py\n+++ b/model.py\n") and "+epochs = 3\n" in result.stdout
    # the banner, then why (the baseline here has no metrics file: no diagnosis)
    assert result.stderr.strip().splitlines()[-2:] == [
        "==> tweak: attempt 2: epochs 1→3 (move epochs, from attempt 1, tweak #1)",
        "tweak: why: unknown: no metrics recorded for this attempt → epochs"]
    run = state.read_run(workspace.cfg)
    assert {k: run[k] for k in ("TWEAK", "TWEAK_RULE", "TWEAK_MOVE", "TWEAK_PARENT", "ATTEMPT", "STATUS")} == {
        "TWEAK": "epochs 1→3", "TWEAK_RULE": "epochs", "TWEAK_MOVE": "epochs", "TWEAK_PARENT": "1",
        "STATUS": "tweaked", "ATTEMPT": "1"}   # train.py numbers the next attempt
    assert run["TWEAK_DIAGNOSIS"] == "unknown"
    assert state.counter(workspace.cfg) == 1


def test_parallel_proposes_a_round_and_the_next_tweaks_take_its_candidates_in_order(workspace):
    workspace.env["PARALLEL"] = "3"
    first = workspace.run()
    assert first.returncode == 0, first.stderr
    queued = json.loads((state.state_dir(workspace.cfg) / "round.json").read_text())
    assert queued["parent"] == 1 and len(queued["candidates"]) == 2
    run = state.read_run(workspace.cfg)
    expected = search.propose(workspace.source, "cnn", state.read_history(workspace.cfg), 1, None, 0.8,
                              counter=1, k=3)
    assert [run["TWEAK_MOVE"]] + [c["move"] for c in queued["candidates"]] == [c.move for c in expected]
    # the first candidate trained (and even became the best): the round goes on from its parent
    state.append_history(workspace.cfg, {**record(2, run["TWEAK_RULE"], "kept", 0.7), "move": run["TWEAK_MOVE"],
                                         "source_hash": state.source_hash(workspace.checkout.read_text())})
    state.update_run(workspace.cfg, BEST_ATTEMPT=2, ATTEMPT=2)
    second = workspace.run()
    assert second.returncode == 0, second.stderr
    run = state.read_run(workspace.cfg)
    assert run["TWEAK_MOVE"] == expected[1].move and run["TWEAK_PARENT"] == "1"
    assert workspace.checkout.read_text() == expected[1].source
    assert len(json.loads((state.state_dir(workspace.cfg) / "round.json").read_text())["candidates"]) == 1


def test_make_tweak_starts_from_the_best_source_not_the_checkout(workspace):
    best = rules.apply("filters", workspace.source)
    state.atomic_write(state.state_dir(workspace.cfg) / "best" / "model.py", best)
    workspace.checkout.write_text(rules.apply("kernel", workspace.source))   # a reverted attempt
    result = workspace.run()
    assert result.returncode == 0, result.stderr
    expected = rules.apply("epochs", best, sourceedit.Context(1))
    assert workspace.checkout.read_text() == expected
    assert result.stdout == sourceedit.unified_diff(best, expected, "model.py")   # diffed against the best


def test_make_tweak_after_a_revert_tries_another_rule(workspace):
    assert workspace.run().returncode == 0
    state.append_history(workspace.cfg, {**record(2, "epochs", "reverted", 0.55),
                                         "source_hash": state.source_hash(workspace.checkout.read_text())})
    workspace.checkout.write_text(workspace.source)       # what parse_accuracy does on a revert
    result = workspace.run()
    assert result.returncode == 0, result.stderr
    run = state.read_run(workspace.cfg)
    assert run["TWEAK_RULE"] == "filters" and state.counter(workspace.cfg) == 2
    assert "==> tweak: attempt 3: filters x2 (move filters, from attempt 1, tweak #2)" in result.stderr


def test_make_tweak_says_when_no_tweak_is_left(workspace):
    workspace.env["MAX_TWEAKS"] = "1000"  # every move tried, the cap not reached
    history = state.read_history(workspace.cfg)
    moves = []
    while found := search.propose(workspace.source, "cnn", history, 1, None, 0.8, counter=1):
        moves.append(found[0].move)     # singles, bold steps, then pairs: all reverted at no gain
        history.append({**record(len(history) + 1, found[0].rule, "reverted", 0.5), "move": found[0].move})
        state.append_history(workspace.cfg, history[-1])
    assert "filters" in moves and "filters:bold" in moves and any("+" in m for m in moves)
    assert len(moves) == len(set(moves))
    before = workspace.checkout.read_text()
    result = workspace.run()
    assert result.returncode == state.EXIT_NO_TWEAK_LEFT == 8
    assert result.stderr.strip() == ("tweak: no tweak left for attempt 1: every cnn move (single, bold and "
                                     "paired) was tried on it or gives a source already trained")
    assert workspace.checkout.read_text() == before and state.counter(workspace.cfg) == 0


def test_make_tweak_says_when_no_rule_applies_to_the_script(workspace):
    """A NearestCentroid has none of the settings the rules change: the line says so, not
    that every move was tried."""
    source = ("from sklearn.neighbors import NearestCentroid\nclf = NearestCentroid()\nclf.fit(X, y)\n"
              "print(clf.score(Xt, yt))\n")
    workspace.checkout.write_text(source)
    state.update_run(workspace.cfg, MODEL_TYPE="sklearn")
    result = workspace.run()
    assert result.returncode == state.EXIT_NO_TWEAK_LEFT
    assert result.stderr.strip() == ("tweak: no tweak left: no sklearn rule applies to model.py (none of the "
                                     "settings the rules change is in it: python scripts/tweak.py --list shows "
                                     "them); tune it by hand and push again")
    assert workspace.checkout.read_text() == source and state.counter(workspace.cfg) == 0


def test_make_tweak_refuses_a_model_type_without_rules(workspace):
    state.update_run(workspace.cfg, MODEL_TYPE="torch")
    result = workspace.run()
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no tweak rules for model type 'torch'; supported: cnn, rnn, mlp, sklearn"


def test_make_tweak_refuses_a_missing_model_file(workspace):
    workspace.checkout.unlink()
    result = workspace.run()
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {workspace.checkout} is missing; run make fetch (and make detect) first"


def test_make_tweak_refuses_an_unparsable_source_and_leaves_it(workspace):
    workspace.checkout.write_text("model = (\n")
    result = workspace.run()
    assert result.returncode == 2 and "does not parse; fix the source" in result.stderr
    assert workspace.checkout.read_text() == "model = (\n"


def test_tweak_on_a_file_prints_the_diff_and_writes_nothing(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(fixture("rnn_lstm"))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "tweak.py"), str(path), "--type", "rnn",
                             "--rule", "bidirectional"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TWEAKOPS_ENV_FILE": os.devnull})
    assert result.returncode == 0, result.stderr
    assert "+    keras.layers.Bidirectional(keras.layers.LSTM(UNITS), input_shape=(28, 28)),\n" in result.stdout
    assert path.read_text() == fixture("rnn_lstm")


def test_tweak_list_shows_every_rule():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "tweak.py"), "--list"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TWEAKOPS_ENV_FILE": os.devnull})
    assert result.returncode == 0, result.stderr
    for r in rules.REGISTRY.values():
        assert f" {r.id} " in result.stdout


# ---------------------------------------------------------------------------
# the bundled example models

@pytest.mark.parametrize("example,kind", [("cnn", "cnn"), ("rnn", "rnn"), ("sklearn", "sklearn")])
def test_each_example_model_has_at_least_three_applicable_rules(example, kind):
    source = (EXAMPLES / example / "model.py").read_text()
    applicable = [r.id for r in rules.rules_for(kind) if rules.apply(r.id, source, sourceedit.Context(1))]
    assert len(applicable) >= 3, applicable


BUILD = textwrap.dedent('''
    import ast, json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = []
    for source in json.load(sys.stdin):
        tree = ast.parse(source)
        # run the script up to (not including) the first compile/fit: data + model, no training
        stop = next(i for i, s in enumerate(tree.body)
                    if any(isinstance(n, ast.Attribute) and n.attr in ("compile", "fit") for n in ast.walk(s)))
        scope = {"__name__": "__tweak_build__"}
        exec(compile(ast.Module(tree.body[:stop], []), "<model>", "exec"), scope)
        out.append(scope["model"].count_params())
    print(json.dumps(out))
''')


@pytest.mark.slow
@pytest.mark.parametrize("example", ["cnn", "rnn"])
def test_every_tweak_of_the_keras_examples_still_builds_a_model(example, digits):
    source = (EXAMPLES / example / "model.py").read_text()
    tweaked = {r.id: s for r in rules.rules_for(example) if (s := rules.apply(r.id, source, sourceedit.Context(1)))}
    result = subprocess.run([sys.executable, "-c", BUILD], input=json.dumps([source, *tweaked.values()]),
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "DATA_DIR": str(digits), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    params = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(params) == len(tweaked) + 1 and all(p > 0 for p in params)
    changes_the_model = {"filters", "kernel", "conv_block", "dense_layer", "units", "stack_rnn", "bidirectional",
                         "batchnorm"} & set(tweaked)
    for rule_id in changes_the_model:
        assert params[1 + list(tweaked).index(rule_id)] != params[0], rule_id


def test_make_tweak_stops_at_max_tweaks_for_jenkins_which_has_no_loop(workspace):
    state.update_run(workspace.cfg, RUN_ID="r1")
    for n in (2, 3):
        state.append_history(workspace.cfg, {**record(n, "epochs", "reverted", 0.5), "run": "r1"})
    state.append_history(workspace.cfg, {**record(4, "filters", "reverted", 0.5), "run": "an older run"})
    workspace.env["MAX_TWEAKS"] = "2"
    result = workspace.run()
    assert result.returncode == 8
    assert result.stderr.strip() == "tweak: MAX_TWEAKS=2 tweaks tried in this run"
    workspace.env["MAX_TWEAKS"] = "3"
    assert workspace.run().returncode == 0


def test_make_tweak_never_tweaks_tweakops_own_published_commit(workspace):
    state.update_run(workspace.cfg, OWN_COMMIT=1)
    before = workspace.checkout.read_text()
    result = workspace.run()
    assert result.returncode == 8
    assert "own published commit" in result.stderr
    assert workspace.checkout.read_text() == before


# ---------------------------------------------------------------------------
# edits that are right on real scripts (tests/fixtures/tweak/real/)

REAL = FIXTURES / "real"


def real(name: str) -> str:
    return (REAL / f"{name}.py").read_text()


@pytest.mark.parametrize("name,rule_id,removed,added", [
    # Keras 2 spellings are edited like Keras 3 ones
    ("keras2_cnn", "learning_rate",
     ['model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=0.1), metrics=["accuracy"])'],
     ['model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=0.001), metrics=["accuracy"])']),
    ("keras2_cnn", "epochs",
     ['model.fit_generator(datagen.flow(x_train, y_train, batch_size=16), steps_per_epoch=4, epochs=2)'],
     ['model.fit_generator(datagen.flow(x_train, y_train, batch_size=16), steps_per_epoch=4, epochs=4)']),
    ("keras2_cnn", "filters",
     ['model.add(Convolution2D(16, (3, 3), activation="relu", input_shape=(28, 28, 1)))'],
     ['model.add(Convolution2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))']),
    ("keras2_cnn", "kernel",
     ['model.add(Convolution2D(16, (3, 3), activation="relu", input_shape=(28, 28, 1)))'],
     ['model.add(Convolution2D(16, (5, 5), activation="relu", input_shape=(28, 28, 1)))']),
    ("keras2_nb_epoch", "epochs",
     ['model.fit(x_train, y_train, batch_size=32, nb_epoch=2)', 'model.fit_generator(batches, 10, 3)'],
     ['model.fit(x_train, y_train, batch_size=32, nb_epoch=4)', 'model.fit_generator(batches, 10, 5)']),
    ("keras2_nb_epoch", "learning_rate",
     ['model.compile(loss="categorical_crossentropy", optimizer=SGD(lr=0.5, momentum=0.9), metrics=["accuracy"])'],
     ['model.compile(loss="categorical_crossentropy", optimizer=SGD(lr=0.01, momentum=0.9), metrics=["accuracy"])']),
    # values followed to where they are set: a module constant passed to a function,
    # a factory's default, a call-site argument, a loop's list
    ("functions", "epochs", ["num_of_epochs = 1"], ["num_of_epochs = 3"]),
    ("functions", "filters", ["def build_model(filters=8, units=32):"], ["def build_model(filters=16, units=32):"]),
    ("functions", "dense_units", ["model = build_model(units=16)"], ["model = build_model(units=32)"]),
    ("loop", "filters", ["for f in [8, 16]:"], ["for f in [16, 32]:"]),
    ("argparse_options", "epochs", ['    parser.add_argument("--epochs", type=int, default=2)'],
     ['    parser.add_argument("--epochs", type=int, default=4)']),
    ("argparse_options", "dense_units", ['    parser.add_argument("--hidden-units", dest="units", type=int, default=32)'],
     ['    parser.add_argument("--hidden-units", dest="units", type=int, default=64)']),
    ("argparse_options", "learning_rate", ['    parser.add_argument("--lr", type=float, default=0.5)'],
     ['    parser.add_argument("--lr", type=float, default=0.01)']),
    # a 64x64 input whose later maps are small: only the first conv can take a 5x5 kernel
    ("cnn_small_map", "kernel",
     ['    layers.Conv2D(16, 3, activation="relu"),   # 62'], ['    layers.Conv2D(16, 5, activation="relu"),   # 62']),
    # the hybrid gets the RNN rules too
    ("conv1d_lstm", "units", ["    layers.LSTM(16),"], ["    layers.LSTM(32),"]),
    ("conv1d_lstm", "bidirectional", ["    layers.LSTM(16),"], ["    layers.Bidirectional(layers.LSTM(16)),"]),
])
def test_real_scripts_are_edited_where_the_value_is_set(name, rule_id, removed, added):
    old = real(name)
    new = rules.apply(rule_id, old, sourceedit.Context(1))
    assert new is not None, f"{rule_id} did not apply to {name}"
    assert changed_lines(old, new) == (removed, added)
    assert comments(new) == comments(old)


def test_a_value_set_in_two_places_with_different_values_is_changed_in_both():
    source = textwrap.dedent('''\
        import keras
        def train(model, epochs):
            model.fit(x, y, epochs=epochs)
        model = keras.Sequential([keras.layers.Dense(10)])
        model.compile(optimizer="adam", loss="mse")
        train(model, 2)
        train(model, 10)
    ''')
    assert changed_lines(source, rules.apply("epochs", source)) == (
        ["train(model, 2)", "train(model, 10)"], ["train(model, 4)", "train(model, 15)"])


def test_options_returned_by_a_function_are_followed_to_their_defaults():
    source = textwrap.dedent('''\
        import argparse
        import keras
        def get_args():
            parser = argparse.ArgumentParser()
            parser.add_argument("--epochs", type=int, default=3)
            return parser.parse_args()
        args = get_args()
        model = keras.Sequential([keras.layers.Dense(10)])
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, epochs=args.epochs)
    ''')
    assert changed_lines(source, rules.apply("epochs", source)) == (
        ['    parser.add_argument("--epochs", type=int, default=3)'],
        ['    parser.add_argument("--epochs", type=int, default=5)'])


def test_a_parameter_reassigned_in_its_function_is_not_followed():
    source = textwrap.dedent('''\
        import keras
        def train(model, epochs=2):
            epochs = epochs * 2
            model.fit(x, y, epochs=epochs)
        model = keras.Sequential([keras.layers.Dense(10)])
        model.compile(optimizer="adam", loss="mse")
        train(model)
    ''')
    assert rules.apply("epochs", source) is None


def _sizes(source: str) -> list[tuple]:
    """The output shape of every layer, as Keras computes it (a real build, no training)."""
    code = textwrap.dedent('''
        import ast, json, sys
        tree = ast.parse(sys.stdin.read())
        stop = next(i for i, s in enumerate(tree.body)
                    if any(isinstance(n, ast.Attribute) and n.attr == "compile" for n in ast.walk(s)))
        scope = {"__name__": "__tweak_build__"}
        try:
            exec(compile(ast.Module(tree.body[:stop], []), "<model>", "exec"), scope)
        except ValueError as exc:
            print(json.dumps({"error": str(exc).splitlines()[0]}))
        else:
            print(json.dumps({"shapes": [list(layer.output.shape[1:]) for layer in scope["model"].layers]}))
    ''')
    result = subprocess.run([sys.executable, "-c", code], input=source, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_kernel_rule_never_makes_a_map_of_size_zero_as_keras_builds_it():
    source = real("cnn_small_map")
    naive = source.replace("Conv2D(16, 3,", "Conv2D(16, 5,").replace("Conv2D(32, 3,", "Conv2D(32, 5,") \
        .replace("Conv2D(64, 3,", "Conv2D(64, 5,")
    # every 3 turned into a 5 (what the rule did before) does not build ...
    assert "error" in _sizes(naive)
    # ... the rule's edit does, and every map keeps a size of at least 1
    built = _sizes(rules.apply("kernel", source))
    assert "shapes" in built, built
    assert all(n >= 1 for shape in built["shapes"] for n in shape if n is not None)


def test_no_conv_block_after_a_map_of_size_one():
    assert rules.apply("conv_block", real("cnn_small_map")) is None


def test_map_sizes_that_cannot_be_computed_leave_the_rules_as_they_were():
    # the size is read at run time: both kernels change, the build check decides
    old = real("cnn_size_at_run_time")
    removed, added = changed_lines(old, rules.apply("kernel", old))
    assert len(removed) == len(added) == 2 and all("Conv2D(4, 5," in line for line in added)


@pytest.mark.parametrize("shape,kernel,expected", [
    ("(28, 28, 1)", "3", "5"),            # 28 -> 24 -> 12 -> 12 -> 6: fits
    ("(6, 6, 1)", "3", "3"),              # 6 -> 2 -> 1 -> 1 -> a pool of 2 on 1 is 0: stays 3
    ("(8, 8)", "3", "5"),                 # 1D: 8 steps -> 4 -> 2 -> 2 -> 1
    ("image_size + (1,)", "3", "5"),      # a constant and a tuple added
])
def test_map_sizes_follow_the_input_shape(shape, kernel, expected):
    """The first conv's kernel grows only where every map stays non-empty (the second
    conv, padding "same", may grow either way)."""
    conv = "Conv1D" if shape == "(8, 8)" else "Conv2D"
    pool = "MaxPooling1D" if conv == "Conv1D" else "MaxPooling2D"
    source = textwrap.dedent(f'''\
        import keras
        from keras import layers
        image_size = (28, 28)
        model = keras.Sequential([
            keras.Input(shape={shape}),
            layers.{conv}(8, {kernel}, activation="relu"),
            layers.{pool}(2),
            layers.{conv}(8, 3, padding="same"),
            layers.{pool}(2),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ])
    ''')
    new = rules.apply("kernel", source)
    assert f"layers.{conv}(8, {expected}, activation=" in new
    assert f'layers.{conv}(8, 5, padding="same")' in new


def test_stronger_estimator_imports_before_the_first_use_and_the_script_runs(tmp_path):
    old = real("sklearn_tree_module")
    new = rules.apply("stronger_estimator", old)
    lines = new.splitlines()
    imported = lines.index("from sklearn.ensemble import RandomForestClassifier")
    used = next(i for i, line in enumerate(lines) if "RandomForestClassifier(" in line)
    assert imported < used
    script = tmp_path / "model.py"
    script.write_text(new)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("accuracy:")


def test_stronger_estimator_never_adds_to_an_import_that_comes_after_the_use():
    source = textwrap.dedent('''\
        """Doc."""
        from sklearn import tree
        clf = tree.DecisionTreeClassifier(max_depth=2)
        from sklearn.ensemble import GradientBoostingClassifier
    ''')
    new = rules.apply("stronger_estimator", source)
    lines = new.splitlines()
    assert lines.index("from sklearn.ensemble import RandomForestClassifier") < lines.index(
        "clf = RandomForestClassifier(max_depth=2)")
    assert "from sklearn.ensemble import GradientBoostingClassifier" in lines


def test_a_hybrid_gets_the_rnn_rules_as_well_as_the_cnn_ones():
    source = real("conv1d_lstm")
    assert rules.types_of("cnn", source) == ["cnn", "rnn"]
    ids = [r.id for r in rules.rules_for_script("cnn", source)]
    assert {"filters", "kernel", "units", "stack_rnn", "bidirectional"} <= set(ids)
    assert [r.id for r in rules.rules_for_script("cnn", real("cnn_small_map"))] == [r.id for r in rules.rules_for("cnn")]
    # every CNN rule tried on the parent: the chooser goes on with the RNN ones
    history = [baseline(source)] + [record(n, r.id) for n, r in enumerate(rules.rules_for("cnn"), start=2)]
    assert propose(source, "cnn", history, 1).rule == "units"


# -- line endings ------------------------------------------------------------

def test_a_crlf_script_stays_crlf_for_every_rule():
    for name in ("cnn_sequential", "cnn_add", "sklearn_tree", "rnn_lstm"):
        lf = fixture(name)
        crlf = lf.replace("\n", "\r\n")
        for r in rules.rules_for(model_type(name)):
            new_lf, new_crlf = rules.apply(r.id, lf), rules.apply(r.id, crlf)
            if new_lf is None:
                continue
            assert new_crlf == new_lf.replace("\n", "\r\n"), (name, r.id)


def _git(*args, cwd):
    return subprocess.run(["git", "-c", "core.autocrlf=false", *args], cwd=cwd, capture_output=True,
                          text=True, check=True)


def test_make_tweak_on_a_crlf_script_changes_one_line_and_its_diff_applies(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    source = fixture("sklearn_knn").replace("\n", "\r\n").encode()
    (checkout / "model.py").write_bytes(source)
    _git("init", "-q", cwd=checkout)
    _git("add", "model.py", cwd=checkout)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "crlf", cwd=checkout)
    env = {k: v for k, v in os.environ.items() if k not in state.DEFAULTS}
    env.update(TWEAKOPS_ENV_FILE=os.devnull, STATE_DIR=str(tmp_path / "state"), CHECKOUT_DIR=str(checkout),
               NO_COLOR="1")
    cfg = state.config(environ=env)
    state.update_run(cfg, MODEL_FILE="model.py", MODEL_TYPE="sklearn", ATTEMPT=1, BEST_ATTEMPT=1, STATUS="trained")
    state.append_history(cfg, baseline(source.decode(), 0.6))
    # bytes: text mode would turn the patch's CRLF lines into LF ones
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "tweak.py")], env=env,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    stat = _git("diff", "--numstat", cwd=checkout).stdout.split()
    assert stat[:2] == ["1", "1"], stat            # one line changed, not the whole file
    tweaked = (checkout / "model.py").read_bytes()
    assert tweaked.count(b"\r\n") == source.count(b"\r\n") and b"\n" not in tweaked.replace(b"\r\n", b"")
    # the printed diff applies to the fetched file and gives the tweaked one
    clean = tmp_path / "clean"
    _git("clone", "-q", str(checkout), str(clean), cwd=tmp_path)
    assert b"+knn = KNeighborsClassifier(n_neighbors=3)\r\n" in result.stdout
    (tmp_path / "tweak.patch").write_bytes(result.stdout)
    _git("apply", str(tmp_path / "tweak.patch"), cwd=clean)
    assert (clean / "model.py").read_bytes() == tweaked


def test_the_diff_marks_a_last_line_without_newline(tmp_path):
    old = "import keras\nmodel.fit(x, y, epochs=2)"
    new = "import keras\nmodel.fit(x, y, epochs=4)"
    diff = sourceedit.unified_diff(old, new, "model.py")
    assert diff.endswith("+model.fit(x, y, epochs=4)\n\\ No newline at end of file\n")
    (tmp_path / "model.py").write_text(old)
    (tmp_path / "p.patch").write_text(diff)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "apply", "p.patch"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "model.py").read_text() == new


# -- a tweak that does not build --------------------------------------------

def checkout_after_baseline(tmp_path, source: str, model_type: str, accuracy: float) -> dict:
    """A STATE_DIR and checkout holding `source`, after its baseline attempt (run r1)."""
    env = {k: v for k, v in os.environ.items() if k not in state.DEFAULTS}
    env.update(TWEAKOPS_ENV_FILE=os.devnull, STATE_DIR=str(tmp_path / "state"),
               CHECKOUT_DIR=str(tmp_path / "checkout"), NO_COLOR="1")
    cfg = state.config(environ=env)
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "model.py").write_text(source)
    state.update_run(cfg, MODEL_FILE="model.py", MODEL_TYPE=model_type, ATTEMPT=1, BEST_ATTEMPT=1,
                     STATUS="trained", RUN_ID="r1")
    state.append_history(cfg, {**baseline(source, accuracy), "run": "r1", "tweak": "baseline"})
    return cfg


def test_a_build_failed_tweak_costs_no_tweak_and_its_move_is_not_tried_again(tmp_path):
    """The record train.py writes for a tweak that failed before its first step."""
    source = (ROOT / "models" / "cnn" / "model.py").read_text()
    cfg = checkout_after_baseline(tmp_path, source, "cnn", 0.5)
    first = propose(source, "cnn", state.read_history(cfg), 1)
    state.append_history(cfg, {**record(None, first.rule, "build-failed", source=first.source), "run": "r1",
                               "move": first.move, "reason": "does not build (exit 1): ValueError: negative size"})
    run, history = state.read_run(cfg), state.read_history(cfg)
    assert tweak.cap_reached({**cfg, "MAX_TWEAKS": 1}, run, history) is None   # no tweak spent
    assert first.move not in search.mean_gains(history)                        # no score
    assert propose(source, "cnn", history, 1).move != first.move                # not again on this parent
    assert tweak.best_attempt({}, history) == 1


@pytest.mark.slow
def test_a_keras_tweak_that_does_not_build_is_discarded_by_its_own_attempt(tmp_path, digits):
    """tweak.py writes a kernel the sizes cannot be computed for (8 -> 4 -> 2 -> a 5x5
    kernel on a 2x2 map); train.py's real attempt fails before its first step: booked
    build-failed, not an attempt, the best source back; the next tweak is another move."""
    env = {k: v for k, v in os.environ.items() if k not in state.DEFAULTS}
    env.update(TWEAKOPS_ENV_FILE=os.devnull, STATE_DIR=str(tmp_path / "state"),
               CHECKOUT_DIR=str(tmp_path / "checkout"), NO_COLOR="1", DATA_DIR=str(digits), MAX_TWEAKS="3")
    cfg = state.config(environ=env)
    source = real("cnn_size_at_run_time")
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "model.py").write_text(source)
    (tmp_path / "state" / "best").mkdir(parents=True)
    (tmp_path / "state" / "best" / "model.py").write_text(source)
    state.update_run(cfg, MODEL_FILE="model.py", MODEL_TYPE="cnn", MODEL_RUNTIME="keras3", ATTEMPT=1,
                     BEST_ATTEMPT=1, BEST_ACCURACY=0.5, STATUS="trained", RUN_ID="r1")
    state.append_history(cfg, {**baseline(source, 0.5), "run": "r1", "tweak": "baseline"})
    for n, rule_id in enumerate(("epochs", "filters"), start=2):   # both hurt: the kernel rule comes next
        state.append_history(cfg, {**record(n, rule_id, "reverted", 0.47), "run": "r1"})

    def script(name):
        return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py")], env=env,
                              capture_output=True, text=True, timeout=600)
    result = script("tweak")
    assert result.returncode == 0, result.stderr
    assert state.read_run(cfg)["TWEAK_RULE"] == "kernel"
    tweaked = (tmp_path / "checkout" / "model.py").read_text()
    result = script("train")
    assert result.returncode == 3, result.stderr
    assert "does not build (exit 1)" in result.stderr and "discarded without spending an attempt" in result.stderr
    failed = state.read_history(cfg)[-1]
    assert failed["outcome"] == "build-failed" and failed["attempt"] is None and failed["rule"] == "kernel"
    assert failed["parent"] == 1 and failed["source_hash"] == state.source_hash(tweaked)
    assert "Computed output size would be zero or negative" in failed["reason"]
    assert (tmp_path / "state" / failed["log"]).is_file()   # its log is kept
    assert not list((tmp_path / "state").glob("*/attempt-4*"))   # the number is free again
    run = state.read_run(cfg)
    assert run["ATTEMPT"] == "1" and run["STATUS"] == "reverted"
    assert (tmp_path / "checkout" / "model.py").read_text() == source
    result = script("tweak")   # MAX_TWEAKS=3, two spent: one left, and not the kernel again
    assert result.returncode == 0, result.stderr
    assert state.read_run(cfg)["TWEAK_RULE"] == "conv_block"
    assert (tmp_path / "checkout" / "model.py").read_text() == rules.apply("conv_block", source, sourceedit.Context(1))
