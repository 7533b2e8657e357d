"""detect_type.py: parse the script, tell cnn / rnn / mlp / sklearn apart, refuse the rest."""

from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, SCRIPTS

import json
import subprocess
import sys

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
    before = project.run_env()
    result = project.script("detect_type")
    assert result.returncode == 2
    assert "error: model.py: PyTorch is not supported" in result.stderr
    # the run is as fetch left it, plus the failure for the message to the developer
    after = project.run_env()
    assert after.pop("FAILED_STAGE") == "detect" and "PyTorch is not supported" in after.pop("FAILURE")
    assert after == before


# ---------------------------------------------------------------------------
# the runtime: Keras 2 era, Keras 3, scikit-learn

sys.path.insert(0, str(SCRIPTS))
import detect_type  # noqa: E402

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


@pytest.mark.parametrize("name, expected", [
    ("keras2_np_utils_cnn.py", "cnn keras2"),
    ("keras2_fit_generator.py", "cnn keras2"),
    ("keras_vgg16_transfer.py", "cnn keras3"),
    ("tf_applications_module.py", "cnn keras3"),
    ("keras_cnn_tf_alias.py", "cnn keras3"),
    ("keras_rnn.py", "rnn keras3"),
    ("sklearn_svc.py", "sklearn sklearn"),
])
def test_detect_type_prints_the_runtime_with_the_flag_only(name, expected):
    flagged = subprocess.run([PYTHON, str(SCRIPTS / "detect_type.py"), str(FIXTURES / name), "--runtime"],
                             capture_output=True, text=True)
    assert flagged.returncode == 0, flagged.stderr
    assert flagged.stdout.strip() == expected
    assert detect(FIXTURES / name).stdout.strip() == expected.split()[0]   # one word by default


KERAS2_SNIPPETS = {
    "np_utils": "from keras.utils import np_utils\n",
    "np_utils module": "from keras.utils.np_utils import to_categorical\n",
    "layers.convolutional": "from keras.layers.convolutional import Conv2D\n",
    "tf layers.core": "from tensorflow.keras.layers.core import Dense\n",
    "normalization attribute": "import keras\nkeras.layers.normalization.BatchNormalization()\n",
    "embeddings": "from keras.layers.embeddings import Embedding\n",
    "recurrent": "from keras.layers.recurrent import LSTM\n",
    "pooling": "from keras.layers.pooling import MaxPooling2D\n",
    "merge": "from keras.layers.merge import concatenate\n",
    "advanced_activations": "from keras.layers.advanced_activations import LeakyReLU\n",
    "wrappers": "from keras.layers.wrappers import TimeDistributed\n",
    "noise": "from keras.layers.noise import GaussianNoise\n",
    "keras_preprocessing": "import keras\nfrom keras_preprocessing.sequence import pad_sequences\n",
    "ImageDataGenerator": "from keras.preprocessing.image import ImageDataGenerator\n",
    "ImageDataGenerator module": "import keras\nfrom keras.preprocessing import image\ng = image.ImageDataGenerator()\n",
    "scikit_learn wrapper": "from keras.wrappers.scikit_learn import KerasClassifier\n",
    "fit_generator": "import keras\nmodel.fit_generator(gen, epochs=2)\n",
    "evaluate_generator": "import keras\nmodel.evaluate_generator(gen)\n",
    "predict_generator": "import keras\nmodel.predict_generator(gen)\n",
    "predict_classes": "import keras\nmodel.predict_classes(x)\n",
    "lr=": "import keras\nkeras.optimizers.Adam(lr=0.01)\n",
    "lr= lower case": "from keras import optimizers\noptimizers.adam(lr=0.01)\n",
    "nb_epoch=": "import keras\nmodel.fit(x, y, nb_epoch=3)\n",
    "tf_keras": "import tf_keras as keras\n",
    "optimizers.legacy": "import tensorflow as tf\nopt = tf.keras.optimizers.legacy.Adam()\n",
    "set_session": "import tensorflow as tf\nfrom keras import backend as K\nK.set_session(sess)\n",
    "compat.v1 session": "import tensorflow as tf\nsess = tf.compat.v1.Session()\n",
    "tf1 as compat": "import tensorflow.compat.v1 as tf\nsess = tf.Session()\n",
    "layers.experimental": "from tensorflow import keras\nkeras.layers.experimental.preprocessing.Rescaling(1 / 255)\n",
    "preprocessing.text": "from keras.preprocessing.text import Tokenizer\n",
    "optimizers.experimental": "import tensorflow as tf\ntf.keras.optimizers.experimental.AdamW()\n",
    "backend math": "import keras\nfrom keras import backend as K\nK.mean(K.equal(y, p))\n",
    "backend set_value": "import tensorflow.keras.backend as K\nK.set_value(model.optimizer.lr, 0.01)\n",
}


@pytest.mark.parametrize("source", KERAS2_SNIPPETS.values(), ids=list(KERAS2_SNIPPETS))
def test_a_keras_2_only_import_or_api_makes_the_script_keras2(source):
    assert detect_type.runtime_of(source) == "keras2"


@pytest.mark.parametrize("source", [
    "import keras\nfrom keras import layers\nlayers.Conv2D(8, 3)\nkeras.utils.to_categorical(y)\n",
    "import tensorflow as tf\ntf.keras.optimizers.Adam(learning_rate=0.01)\nmodel.fit(x, epochs=2)\n",
    "from tensorflow.keras.layers import Conv2D\nfrom tensorflow.keras.utils import image_dataset_from_directory\n",
    "import keras\n# model.fit_generator(gen), Adam(lr=0.1) in a comment\nx = 'keras.utils.np_utils'\n",
    "import keras\nfrom sklearn.model_selection import train_test_split\nlr = 0.1\nkeras.optimizers.SGD(learning_rate=lr)\n",
    "import keras\nfrom keras import backend as K\nK.clear_session()\nK.image_data_format()\n",
    "import keras\nclf = keras.wrappers.SKLearnClassifier(model=build)\n",
])
def test_a_keras_3_script_is_keras3(source):
    assert detect_type.runtime_of(source) == "keras3"


def test_a_scikit_learn_script_is_sklearn():
    assert detect_type.runtime_of((FIXTURES / "sklearn_svc.py").read_text()) == "sklearn"


@pytest.mark.parametrize("name", ["keras_vgg16_transfer.py", "tf_applications_module.py"])
def test_a_keras_applications_base_is_a_cnn(name):
    assert detect_type.classify((FIXTURES / name).read_text()) == "cnn"


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the training corpus is not there")
def test_every_corpus_script_gets_the_type_and_runtime_it_expects():
    checked = 0
    for expect in sorted(CORPUS.glob("*/expect.json")):
        wanted = json.loads(expect.read_text())
        source = (expect.parent / wanted.get("script", "model.py")).read_text()
        assert (detect_type.classify(source), detect_type.runtime_of(source)) == \
            (wanted["type"], wanted["runtime"]), expect.parent.name
        checked += 1
    assert checked >= 10


def test_find_entry_knows_fit_generator(tmp_path):
    (tmp_path / "utils.py").write_text("def helper():\n    return 1\n")
    # its only fit is a fit_generator()
    (tmp_path / "legacy.py").write_text((FIXTURES / "keras2_fit_generator.py").read_text())
    assert detect_type.find_entry(tmp_path) == tmp_path / "legacy.py"


def test_detect_records_the_runtime_in_run_env(project):
    project.push_change("model.py", (FIXTURES / "keras2_np_utils_cnn.py").read_text())
    assert project.script("fetch").returncode == 0
    result = project.script("detect_type")
    assert result.returncode == 0, result.stderr
    run = project.run_env()
    assert (run["MODEL_TYPE"], run["MODEL_RUNTIME"]) == ("cnn", "keras2")
    assert "model.py: cnn, keras2" in result.stderr
