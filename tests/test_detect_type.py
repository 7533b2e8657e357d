"""detect_type.py: parse the script, tell cnn / rnn / mlp / sklearn apart, refuse the rest."""

from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, SCRIPTS

import subprocess

FIXTURES = Path(__file__).parent / "fixtures" / "detect"


def detect(path) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(SCRIPTS / "detect_type.py"), str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("name, expected", [
    ("keras_cnn_tf_alias.py", "cnn"),
    ("keras_cnn_old_alias.py", "cnn"),
    ("keras_cnn_functional.py", "cnn"),
    ("keras_rnn.py", "rnn"),
    ("keras_mlp.py", "mlp"),
    ("sklearn_svc.py", "sklearn"),
])
def test_detect_type_prints_the_model_type(name, expected):
    result = detect(FIXTURES / name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@pytest.mark.parametrize("example, expected", [("cnn", "cnn"), ("rnn", "rnn"), ("sklearn", "sklearn")])
def test_detect_type_knows_the_bundled_examples(example, expected):
    assert detect(ROOT / "models" / example / "model.py").stdout.strip() == expected


@pytest.mark.parametrize("name, message", [
    ("torch_net.py", "torch_net.py: PyTorch is not supported; tweakops trains Keras (TensorFlow) and scikit-learn scripts"),
    ("no_ml.py", "no_ml.py: no Keras, TensorFlow or scikit-learn import found"),
    ("syntax_error.py", "syntax_error.py:3: syntax error"),
])
def test_detect_type_refuses_with_one_clear_line(name, message):
    result = detect(FIXTURES / name)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_detect_type_finds_the_single_script_that_calls_fit(project):
    work = project.root / "seed"
    (work / "model.py").rename(work / "experiment.py")
    (work / "utils.py").write_text("def helper():\n    return 1\n")
    project.git("add", "-A", cwd=work)
    project.git("commit", "-q", "-m", "rename", cwd=work)
    project.git("push", "-q", str(project.remote), "HEAD:main", cwd=work)
    assert project.script("fetch").returncode == 0
    result = project.script("detect_type")
    assert result.returncode == 0, result.stderr
    assert "entry script: experiment.py" in result.stderr
    assert project.run_env()["MODEL_FILE"] == "experiment.py"
    assert project.run_env()["MODEL_TYPE"] == "cnn"
    assert project.run_env()["IMAGE"] == "tweakops/keras:latest"


def test_detect_type_of_an_unsupported_framework_keeps_the_state_valid(project):
    project.push_change("model.py", (FIXTURES / "torch_net.py").read_text())
    assert project.script("fetch").returncode == 0
    before = (project.state / "run.env").read_text()
    result = project.script("detect_type")
    assert result.returncode == 2
    assert "error: model.py: PyTorch is not supported" in result.stderr
    assert (project.state / "run.env").read_text() == before
