"""parse_accuracy.py: read the held-out accuracy from a log, whatever shape it has."""

import subprocess

import pytest

from conftest import PYTHON, SCRIPTS

import parse_accuracy

KERAS_LOG = (
    "Epoch 1/2\n"
    "\x1b[1m 1/23\x1b[0m \x1b[37m━━━━\x1b[0m - accuracy: 0.1094 - loss: 2.2903\r"
    "\x1b[1m23/23\x1b[0m \x1b[32m━━━━\x1b[0m - accuracy: 0.2990 - loss: 2.2142 - val_accuracy: 0.5655 - val_loss: 2.0907\n"
    "Epoch 2/2\n"
    "\x1b[1m23/23\x1b[0m - accuracy: 0.9990 - loss: 0.01 - val_accuracy: 0.9123 - val_loss: 0.3\n"
)


@pytest.mark.parametrize("log, expected", [
    (KERAS_LOG, 0.9123),
    ("training accuracy: 0.99\ntest acc 0.93\n", 0.93),
    ("Accuracy: 93.5%\n", 0.935),
    ("accuracy = 0.93\n", 0.93),
    ("Validation accuracy: 0.8012\n", 0.8012),
    ("Test accuracy: 0.5654596090316772\n", 0.5654596090316772),
    ("acc=87\n", 0.87),
    ("val_acc: 0.7\nfinal training accuracy: 0.99\n", 0.7),
])
def test_parse_accuracy_prefers_held_out_figures_and_normalises(log, expected):
    value, _ = parse_accuracy.parse_log(log)
    assert value == pytest.approx(expected)


def test_parse_accuracy_finds_nothing_in_a_log_without_accuracy():
    assert parse_accuracy.parse_log("loss: 0.3\nmean squared error 1.2\n") is None


def test_parse_accuracy_log_mode_prints_the_value(tmp_path):
    (tmp_path / "train.log").write_text(KERAS_LOG)
    result = subprocess.run([PYTHON, str(SCRIPTS / "parse_accuracy.py"), "--log", str(tmp_path / "train.log")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.9123"


def test_parse_accuracy_says_what_it_looked_for(tmp_path):
    (tmp_path / "train.log").write_text("done\n")
    result = subprocess.run([PYTHON, str(SCRIPTS / "parse_accuracy.py"), "--log", str(tmp_path / "train.log")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "no accuracy found in" in result.stderr and "val_accuracy" in result.stderr
