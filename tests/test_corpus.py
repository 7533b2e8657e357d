"""The corpus: training scripts written the way public projects write them, run three ways.

Each folder of tests/fixtures/corpus/ is a model repository's content (the script,
sometimes a requirements.txt or a CSV it reads) plus expect.json:

    {"type": "cnn|rnn|mlp|sklearn", "runtime": "keras3|keras2|sklearn",
     "data": "digits|none", "bare": true|false, "min_accuracy": x,
     "script": "model.py", "requirements": true (only where a requirements.txt is)}

For every folder:
  1. detect: `scripts/detect_type.py <script>` prints the expected type;
  2. bare ("bare": true): `python <script>` in a copy of the folder (DATA_DIR set where
     it reads the image folder) trains and prints its accuracy, read from its last
     accuracy line;
  3. tweakops, local runner: the folder is pushed to a bare git remote and
     `make fetch detect train accuracy` (MAX_TWEAKS=0) trains it: the training succeeds,
     MODEL_TYPE and MODEL_RUNTIME are the expected ones, ACCURACY is at least
     min_accuracy and, for a bare-runnable script, the bare figure within 0.02 (both
     runs seed the same way, so the same seed gives the same accuracy);
  4. the same under RUNNER=docker (marked docker; skipped with the reason where no
     engine answers or the image is missing) for one folder of each distinct docker
     path (docker_path): the runtime in the container (Keras 3, tf_keras, scikit-learn)
     and the model type (sklearn takes the sklearn image, cnn/rnn/mlp the keras one),
     the data it mounts (the image folder, none, a CSV of the checkout) and a
     requirements.txt (a derived image). Every folder runs locally through the same harness.

Keras 2 era scripts ("bare": false) import modules Keras 3 no longer has: they run only
under tweakops, which runs them on tf_keras. A script that reads a CSV of its own
repository runs with no DATA_DIR at all.

    $ .venv/bin/python -m pytest tests/test_corpus.py -q -k local
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import PYTHON, ROOT, SCRIPTS, Project

CORPUS = ROOT / "tests" / "fixtures" / "corpus"
FOLDERS = sorted(p for p in CORPUS.iterdir() if (p / "expect.json").is_file())
SAME_ACCURACY = 0.02          # bare vs tweakops, same seed
BARE_TIMEOUT = 300            # seconds; each script trains in a few seconds on a free CPU

# "Test accuracy: 0.91", "acc: 87.91%", "Accuracy is 83.61 %", "val_accuracy: 0.9",
# "accuracy = 0.83": the word, then (past a separator, never a digit) the number.
ACCURACY_LINE = re.compile(r"acc(?:uracy)?\b[^0-9\n]*?([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", re.IGNORECASE)


def expect_of(folder) -> dict:
    return json.loads((folder / "expect.json").read_text())


def params(predicate=lambda expect: True, folders=FOLDERS):
    return [pytest.param(folder, id=folder.name) for folder in folders if predicate(expect_of(folder))]


def docker_path(folder) -> tuple:
    """What a container run of this folder exercises beyond a local run (module docstring)."""
    expect = expect_of(folder)
    data = "own" if reads_own_data(folder) else expect["data"]
    return expect["runtime"], expect["type"], data, bool(expect.get("requirements"))


def one_per_docker_path() -> list:
    firsts: dict[tuple, object] = {}
    for folder in FOLDERS:
        firsts.setdefault(docker_path(folder), folder)
    return list(firsts.values())


def last_accuracy(output: str) -> float | None:
    """The figure of the last line that names an accuracy; percentages become fractions."""
    for line in reversed(output.replace("\r", "\n").splitlines()):
        match = ACCURACY_LINE.search(line)
        if match:
            value = float(match.group(1))
            return value / 100 if match.group(2) or value > 1 else value
    return None


def reads_own_data(folder) -> bool:
    """A CSV in the repository and no image folder: the script needs no DATA_DIR."""
    return expect_of(folder)["data"] == "none" and any(folder.glob("*.csv"))


def repository_files(folder):
    """What the model repository holds: everything but the test's own expect.json."""
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != "expect.json"]


def missing_requirements(folder) -> list[str]:
    """The requirements.txt entries the test's Python cannot import (bare runs need them)."""
    path = folder / "requirements.txt"
    if not path.is_file():
        return []
    missing = []
    for line in path.read_text().splitlines():
        name = re.split(r"[\s<>=!~;\[#]", line.strip(), maxsplit=1)[0]
        if name and importlib.util.find_spec(name.lower().replace("-", "_")) is None:
            missing.append(name)
    return missing


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------
# Bare runs: once per folder and session, shared by the bare and the tweakops tests.

@pytest.fixture(scope="session")
def bare(tmp_path_factory, digits):
    """run(folder) -> (the completed process, the accuracy it printed), or None where the
    script's own requirements are not installed beside the test's Python."""
    done: dict[str, tuple[subprocess.CompletedProcess, float | None] | None] = {}

    def run(folder):
        if folder.name not in done:
            expect = expect_of(folder)
            if missing_requirements(folder):
                done[folder.name] = None
                return None
            work = tmp_path_factory.mktemp("bare") / folder.name
            work.mkdir()
            for path in repository_files(folder):
                shutil.copy(path, work / path.name)
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
            env.pop("DATA_DIR", None)
            if expect["data"] == "digits":
                env["DATA_DIR"] = str(digits)
            result = subprocess.run([PYTHON, expect["script"]], cwd=work, env=env, capture_output=True,
                                    text=True, timeout=BARE_TIMEOUT)
            done[folder.name] = (result, last_accuracy(result.stdout))
        return done[folder.name]

    return run


# ---------------------------------------------------------------------------
# The corpus itself

def test_the_corpus_covers_what_the_issue_lists():
    expects = {folder.name: expect_of(folder) for folder in FOLDERS}
    assert len(expects) >= 24
    for name, expect in expects.items():
        assert set(expect) >= {"type", "runtime", "data", "bare", "min_accuracy", "script"}, name
        assert expect["type"] in ("cnn", "rnn", "mlp", "sklearn"), name
        assert expect["runtime"] in ("keras3", "keras2", "sklearn"), name
        assert expect["data"] in ("digits", "none") and 0 < expect["min_accuracy"] < 1, name
        assert (CORPUS / name / expect["script"]).is_file(), name
        assert expect.get("requirements", False) == (CORPUS / name / "requirements.txt").is_file(), name
        assert expect["bare"] == (expect["runtime"] != "keras2"), name  # Keras 2 runs only under tweakops
    runtimes = [e["runtime"] for e in expects.values()]
    types = {e["type"] for e in expects.values()}
    assert runtimes.count("keras2") >= 6 and runtimes.count("sklearn") >= 5 and types == {"cnn", "rnn", "mlp", "sklearn"}
    sources = "\n".join((CORPUS / n / e["script"]).read_text() for n, e in expects.items())
    for idiom in ("from keras.utils import np_utils", "from keras.layers.convolutional import",
                  "from keras.layers.core import", "from keras.layers.normalization import BatchNormalization",
                  "from keras.layers.embeddings import Embedding", "lr=0.", ".flow_from_directory(",
                  ".fit_generator(", ".predict_classes(", "from keras_preprocessing.sequence import pad_sequences",
                  "metrics=['acc']", "Convolution2D", "image_dataset_from_directory", "keras.Model):",
                  "validation_split=", "EarlyStopping", "def build_model(", "def train(model, epochs)",
                  "GridSearchCV", "tree.DecisionTreeClassifier", "StandardScaler", "accuracy_score", "clf.score",
                  "LSTM(", "GRU(", "Conv1D(", "from tensorflow import keras", "tf.keras.", "pd.read_csv"):
        assert idiom in sources, idiom


@pytest.mark.parametrize("folder", params())
def test_detect_prints_the_expected_type(folder):
    expect = expect_of(folder)
    result = subprocess.run([PYTHON, str(SCRIPTS / "detect_type.py"), str(folder / expect["script"])],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TWEAKOPS_ENV_FILE": os.devnull})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [expect["type"]]


def test_the_accuracy_line_is_read_as_scripts_print_it():
    assert last_accuracy("Epoch 1/3 - accuracy: 0.5\nTest loss: 0.3\nTest accuracy: 0.9136\n") == 0.9136
    assert last_accuracy("acc: 87.91%") == pytest.approx(0.8791)
    assert last_accuracy("Accuracy is 83.61 %") == pytest.approx(0.8361)
    assert last_accuracy("test acc: 70.89%") == pytest.approx(0.7089)
    assert last_accuracy("final val_accuracy: 0.8985915780067444") == pytest.approx(0.8985915780067444)
    assert last_accuracy("accuracy = 0.8388888835906982\nCNN Error: 9.72%") == pytest.approx(0.8388888835906982)
    assert last_accuracy("MLP test accuracy: 94.7%") == pytest.approx(0.947)
    assert last_accuracy("Validation accuracy: {:.2f}%".format(87.74)) == pytest.approx(0.8774)
    assert last_accuracy("loss: 0.3\n") is None


# ---------------------------------------------------------------------------
# Bare

@pytest.mark.slow
@pytest.mark.parametrize("folder", params(lambda e: e["bare"]))
def test_bare_run_trains_and_prints_its_accuracy(folder, bare):
    if bare(folder) is None:
        pytest.skip(f"{', '.join(missing_requirements(folder))} (its requirements.txt) is not installed beside "
                    "the test Python; tweakops installs it into the runtime, a bare run cannot")
    result, accuracy = bare(folder)
    assert result.returncode == 0, tail(result.stderr)
    assert accuracy is not None, f"no accuracy line in:\n{tail(result.stdout)}"
    assert accuracy >= expect_of(folder)["min_accuracy"], tail(result.stdout)


# ---------------------------------------------------------------------------
# Through tweakops

def seed_folder(project: Project, folder) -> None:
    """The remote holds the whole folder (script, requirements.txt, CSV) as one commit."""
    work = project.root / "seed"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for path in repository_files(folder):
        shutil.copy(path, work / path.name)
    project.git("init", "-q", "-b", "main", cwd=work)
    project.git("add", "-A", cwd=work)
    project.git("commit", "-q", "-m", "model", cwd=work)
    shutil.rmtree(project.remote, ignore_errors=True)
    project.git("clone", "-q", "--bare", str(work), str(project.remote))


def corpus_project(tmp_path, digits, folder, runner: str) -> Project:
    project = Project(tmp_path, digits, example="")
    seed_folder(project, folder)
    project.env.update(RUNNER=runner, MAX_TWEAKS="0")
    if reads_own_data(folder):
        del project.env["DATA_DIR"]   # its data is in its repository: no DATA_DIR at all
    return project


def stage_failure(project: Project, result: subprocess.CompletedProcess) -> str:
    """What a failing run said: the make output's last lines and the attempt's log."""
    log = project.state / "logs" / "attempt-1.log"
    return (f"make exit {result.returncode}, exit_code {read(project.state / 'exit_code')}\n"
            f"--- make stderr\n{tail(result.stderr, 15)}\n"
            f"--- attempt log\n{tail(log.read_text(errors='replace'), 30) if log.exists() else '(none)'}")


def read(path) -> str:
    return path.read_text().strip() if path.exists() else "(absent)"


def check_trained(project: Project, folder, bare) -> None:
    expect = expect_of(folder)
    run = project.run_env()
    assert run.get("MODEL_TYPE") == expect["type"]
    assert run.get("MODEL_FILE") == expect["script"]
    assert run.get("MODEL_RUNTIME") == expect["runtime"]
    result_file = project.state / "results" / "attempt-1.json"
    assert result_file.exists() and json.loads(result_file.read_text())["exit_code"] == 0
    assert run.get("STATUS") != "failed" and "ACCURACY" in run
    # parse_accuracy: 0 = the target is met, 3 = below it; anything else is a failure
    assert read(project.state / "exit_code") in ("0", "3")
    accuracy = float(run["ACCURACY"])
    assert accuracy >= expect["min_accuracy"]
    if expect["bare"] and bare(folder) is not None:
        bare_result, bare_accuracy = bare(folder)
        assert bare_result.returncode == 0 and bare_accuracy is not None, tail(bare_result.stderr)
        assert accuracy == pytest.approx(bare_accuracy, abs=SAME_ACCURACY), (
            f"tweakops {accuracy:.4f} vs bare {bare_accuracy:.4f} for the same seed")


@pytest.mark.slow
@pytest.mark.parametrize("folder", params())
def test_tweakops_local_runner_trains_it_unmodified(folder, tmp_path, digits, bare):
    project = corpus_project(tmp_path, digits, folder, "local")
    result = project.make("fetch", "detect", "train", "accuracy")
    try:
        check_trained(project, folder, bare)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stage_failure(project, result)}") from None
    # the script ran unmodified: the checkout is the repository as pushed
    expect = expect_of(folder)
    assert (project.checkout / expect["script"]).read_bytes() == (folder / expect["script"]).read_bytes()


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("folder", params(folders=one_per_docker_path()))
def test_tweakops_docker_runner_trains_it_unmodified(folder, tmp_path, digits, bare, docker_image):
    docker_image("sklearn" if expect_of(folder)["type"] == "sklearn" else "keras")  # built once per session
    project = corpus_project(tmp_path, digits, folder, "docker")
    result = project.make("fetch", "detect")
    assert result.returncode == 0, stage_failure(project, result)
    result = project.make("train", "accuracy")
    try:
        check_trained(project, folder, bare)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stage_failure(project, result)}") from None
