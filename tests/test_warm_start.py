"""Warm starts through the whole loop, on a real short training.

"Train longer" continues from the parent's saved weights (only the new epochs are
trained), the winner is retrained from scratch before it is published (confirm.py),
and the commit carries the from-scratch figure and why each change was made.
"""

from __future__ import annotations

import json
import textwrap

import pytest

import publish

# learns steadily with plain SGD: two epochs say "still rising", the forecast asks for more
RISING = textwrap.dedent("""\
    import keras
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=0)
    model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=2, batch_size=32, validation_data=(x_test, y_test), verbose=2)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print("Test accuracy:", accuracy)
""")


@pytest.mark.slow
def test_train_longer_continues_from_the_parent_and_the_winner_is_confirmed_from_scratch(project, tmp_path):
    model = tmp_path / "rising.py"
    model.write_text(RISING)
    project.seed_remote(model, "model.py")
    result = project.script("pipeline", TARGET_ACCURACY="0.999", MAX_TWEAKS="1")
    assert result.returncode == 3, result.stdout + result.stderr       # below the target: published anyway

    history = project.history()
    base, tweak, confirmation = [r for r in history if r.get("attempt")]
    assert base["outcome"] == "baseline" and base["epochs"] == 2
    # the diagnosis said "rising" and the move trained longer, from the baseline's weights
    assert tweak["move"] == "epochs" and tweak["diagnosis"] == "rising" and tweak["why"].startswith("rising:")
    assert tweak["warm_from"] == 1 and tweak["outcome"] == "kept"
    epochs = tweak["epochs"]
    assert epochs > 4 and tweak["epochs_run"] == epochs - 2      # only the new epochs were trained
    metrics = json.loads((project.state / tweak["metrics"]).read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(3, epochs + 1))
    assert metrics["warm_start"]["initial_epoch"] == 2
    # the winner retrained from scratch: every epoch, its own accuracy, the best untouched
    assert confirmation["confirms"] == 2 and confirmation["outcome"] == "confirmation"
    assert confirmation["epochs_run"] == epochs and "warm_from" not in confirmation
    assert project.run_env()["BEST_ATTEMPT"] == "2"

    head = project.git("rev-parse", "main", cwd=project.remote).stdout.strip()
    trailers = publish.commit_trailers(project.remote, head)
    assert trailers["Tweakops-Accuracy"] == f"{confirmation['accuracy']:.4f}"
    message = project.git("log", "-1", "--format=%B", "main", cwd=project.remote).stdout
    assert "Trained from scratch (attempt 3)" in message and "  why: rising:" in message


@pytest.mark.slow
def test_without_warm_start_every_attempt_trains_from_epoch_one_and_nothing_is_confirmed(project, tmp_path):
    model = tmp_path / "rising.py"
    model.write_text(RISING)
    project.seed_remote(model, "model.py")
    result = project.script("pipeline", TARGET_ACCURACY="0.999", MAX_TWEAKS="1", WARM_START="0")
    assert result.returncode == 3, result.stdout + result.stderr
    attempts = [r for r in project.history() if r.get("attempt")]
    assert len(attempts) == 2 and "warm_from" not in attempts[1]
    assert attempts[1]["epochs_run"] == attempts[1]["epochs"]
    assert "nothing to confirm" in result.stderr
