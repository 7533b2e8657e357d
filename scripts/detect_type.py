"""Job 2: tell a Keras CNN, RNN, MLP and a scikit-learn script apart (by parsing, not grep).

The entry script is parsed with `ast`: imports and their aliases (`import tensorflow
as tf`, `from tensorflow import keras`, `import keras`, `from keras.layers import
Convolution2D`) and the layers the code calls decide the type, so a word in a comment
or a string never changes the verdict.

  cnn      Keras with a convolution layer (Conv1D/2D/3D, SeparableConv, …)
  rnn      Keras with a recurrent layer (LSTM, GRU, SimpleRNN, Bidirectional, …)
  mlp      Keras with Dense layers only
  sklearn  scikit-learn without Keras

A `keras.applications` base (VGG16, ResNet50, MobileNet, ...) counts as a convolution.

The runtime the script needs is told from the source too (MODEL_RUNTIME):

  keras2   Keras 2-only imports or APIs: keras.utils.np_utils, the old layer modules
           (keras.layers.convolutional/core/normalization/...), keras_preprocessing,
           ImageDataGenerator, keras.wrappers.scikit_learn, fit_generator and the other
           *_generator methods, predict_classes, `lr=` on an optimizer, `nb_epoch=`,
           `import tf_keras`, tf.keras.optimizers.legacy, TF1 sessions (set_session,
           tf.compat.v1.Session), layers.experimental(.preprocessing), keras.preprocessing.text,
           the *.experimental modules, DenseFeatures, the backend math Keras 3 dropped
           (K.mean, K.set_value, K.int_shape, ...)
  keras3   any other Keras script
  sklearn  scikit-learn without Keras

PyTorch, JAX, no ML import or a syntax error: one line naming the reason, exit 2.
When MODEL_FILE is not set the entry script is found: model.py, train.py, main.py,
or the single .py file that calls fit().

Reads:  CHECKOUT_DIR, MODEL_FILE, IMAGE_KERAS, IMAGE_SKLEARN
Writes: run.env MODEL_FILE, MODEL_TYPE, MODEL_RUNTIME, IMAGE, STATUS=detected (pipeline mode)
Exit:   0 detected; 2 unsupported or unreadable

    $ make detect
    $ python scripts/detect_type.py path/to/model.py     # prints the type, writes nothing
    $ python scripts/detect_type.py path/to/model.py --runtime   # "cnn keras2"
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import attempts
import state

ENTRY_NAMES = ("model.py", "train.py", "main.py")
CONV = {"Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D",
        "SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D",
        "DepthwiseConv1D", "DepthwiseConv2D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose", "Convolution2DTranspose", "Convolution3DTranspose", "ConvLSTM1D",
        "ConvLSTM2D", "ConvLSTM3D"}
RECURRENT = {"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "LSTMCell", "GRUCell",
             "SimpleRNNCell", "CuDNNLSTM", "CuDNNGRU"}
# keras.applications bases: a pretrained convnet is a CNN even with only Dense layers on top
APPLICATIONS = {"VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2",
                "ResNet152V2", "InceptionV3", "InceptionResNetV2", "Xception", "MobileNet",
                "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "DenseNet121", "DenseNet169",
                "DenseNet201", "NASNetMobile", "NASNetLarge", "EfficientNetV2B0", "EfficientNetV2B1",
                "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2S", "EfficientNetV2M",
                "EfficientNetV2L", "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge",
                "ConvNeXtXLarge", "RegNetX002", "RegNetY002"} | {f"EfficientNetB{i}" for i in range(8)}
KERAS_ROOTS = {"keras", "tensorflow", "tf_keras"}
FIT_CALLS = {"fit", "fit_generator"}

# Keras 2-only module paths (after `tensorflow.keras` is read as `keras`): a prefix match
# on every imported or referenced dotted name
KERAS2_MODULES = ("keras.utils.np_utils", "keras.layers.convolutional", "keras.layers.core",
                  "keras.layers.normalization", "keras.layers.embeddings", "keras.layers.recurrent",
                  "keras.layers.pooling", "keras.layers.merge", "keras.layers.advanced_activations",
                  "keras.layers.wrappers", "keras.layers.noise", "keras.wrappers.scikit_learn",
                  "keras.layers.experimental", "keras.preprocessing.text", "keras.layers.DenseFeatures",
                  "keras.experimental", "keras.optimizers.experimental", "keras.estimator",
                  "keras.preprocessing.image.ImageDataGenerator", "keras.optimizers.legacy",
                  "keras.backend.set_session", "keras.backend.get_session", "keras_preprocessing",
                  "tf_keras", "tensorflow.python.keras", "tensorflow.compat.v1.Session",
                  "tensorflow.compat.v1.InteractiveSession", "tensorflow.compat.v1.keras",
                  "tensorflow.compat.v1.disable_eager_execution", "tensorflow.compat.v1.disable_v2_behavior",
                  "tensorflow.Session", "tensorflow.InteractiveSession")
# what Keras 3's keras.backend still has: any other keras.backend.X (K.mean, K.set_value,
# K.int_shape, K.function of Keras 2's backend math) is Keras 2's
KERAS3_BACKEND = {"backend", "clear_session", "epsilon", "floatx", "get_uid", "image_data_format",
                  "is_float_dtype", "is_int_dtype", "is_keras_tensor", "result_type", "set_epsilon",
                  "set_floatx", "set_image_data_format", "standardize_dtype"}
KERAS2_METHODS = {"fit_generator", "evaluate_generator", "predict_generator", "predict_classes"}
# optimizer classes (lower case: Keras 2 also had `optimizers.adam`) whose `lr=` is Keras 2's
OPTIMIZERS = {"adam", "adamw", "nadam", "adamax", "rmsprop", "sgd", "adagrad", "adadelta", "ftrl"}
OTHER_FRAMEWORKS = {"torch": "PyTorch", "jax": "JAX", "flax": "JAX/Flax", "mxnet": "MXNet",
                    "paddle": "PaddlePaddle", "lightning": "PyTorch Lightning",
                    "pytorch_lightning": "PyTorch Lightning", "xgboost": None, "lightgbm": None}


class Uses(ast.NodeVisitor):
    """Collect the imported top-level modules and the names of called layers."""

    def __init__(self):
        self.modules: set[str] = set()
        self.names: set[str] = set()   # last attribute or bare name of every Call
        self.fit_calls = 0
        self.dotted: set[str] = set()  # imported and referenced dotted names, aliases resolved
        self.keras2: set[str] = set()  # Keras 2-only APIs the script uses (why it is keras2)
        self._alias: dict[str, str] = {}

    def visit_Import(self, node):
        for alias in node.names:
            self.modules.add(alias.name.split(".")[0])
            self.dotted.add(alias.name)
            if alias.asname:
                self._alias[alias.asname] = alias.name

    def visit_ImportFrom(self, node):
        if node.module and node.level == 0:
            self.modules.add(node.module.split(".")[0])
            self.dotted.add(node.module)
            # `from keras.layers import Convolution2D as C` names a layer too
            for alias in node.names:
                self.names.add(alias.name)
                self.dotted.add(f"{node.module}.{alias.name}")
                self._alias[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def visit_Attribute(self, node):
        parts = []
        inner = node
        while isinstance(inner, ast.Attribute):
            parts.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name):
            root = self._alias.get(inner.id, inner.id)
            self.dotted.add(".".join([root, *reversed(parts)]))
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name is not None:
            self.names.add(name)
        if name in FIT_CALLS and isinstance(func, ast.Attribute):
            self.fit_calls += 1
        if isinstance(func, ast.Attribute) and name in KERAS2_METHODS:
            self.keras2.add(f".{name}()")
        for kw in node.keywords:
            if kw.arg == "nb_epoch" or (kw.arg == "lr" and str(name).lower() in OPTIMIZERS):
                self.keras2.add(f"{name}({kw.arg}=)")
        self.generic_visit(node)

    def keras2_apis(self) -> set[str]:
        """The Keras 2-only imports and APIs found (empty: the script runs on Keras 3)."""
        found = set(self.keras2)
        for name in self.dotted:
            if name == "tensorflow.keras" or name.startswith("tensorflow.keras."):
                name = "keras" + name[len("tensorflow.keras"):]
            found |= {p for p in KERAS2_MODULES if name == p or name.startswith(p + ".")}
            parts = name.split(".")
            if parts[:2] == ["keras", "backend"] and len(parts) > 2 and parts[2] not in KERAS3_BACKEND:
                found.add(".".join(parts[:3]))
        return found


def _uses(source: str, filename: str) -> Uses:
    if not source.strip():
        raise state.TweakopsError(f"{filename} is empty; push the training script (or set MODEL_FILE to it)")
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise state.TweakopsError(f"{filename}:{exc.lineno}: syntax error ({exc.msg}); fix the script and push again") from None
    uses = Uses()
    uses.visit(tree)
    return uses


def runtime_of(source: str, filename: str = "<model>") -> str:
    """keras2, keras3 or sklearn: the runtime the script needs (see the module docstring)."""
    uses = _uses(source, filename)
    if not uses.modules & (KERAS_ROOTS | {"keras_preprocessing"}):
        return "sklearn"
    return "keras2" if uses.keras2_apis() else "keras3"


def classify(source: str, filename: str = "<model>") -> str:
    uses = _uses(source, filename)
    if uses.modules & KERAS_ROOTS:
        if uses.names & (CONV | APPLICATIONS):
            return "cnn"
        if uses.names & RECURRENT:
            return "rnn"
        if "Dense" in uses.names:
            return "mlp"
        raise state.TweakopsError(f"{filename}: imports Keras but builds no Conv, recurrent or Dense layer; tweakops needs one of them")
    if "sklearn" in uses.modules:
        return "sklearn"
    for module, framework in OTHER_FRAMEWORKS.items():
        if module in uses.modules and framework:
            raise state.TweakopsError(f"{filename}: {framework} is not supported; tweakops trains Keras (TensorFlow) and scikit-learn scripts")
    raise state.TweakopsError(f"{filename}: no Keras, TensorFlow or scikit-learn import found; tweakops needs a Keras or scikit-learn training script")


def find_entry(checkout: Path) -> Path:
    """model.py, train.py, main.py at the top, else the single .py file that calls fit()
    (or the Keras 2 fit_generator())."""
    for name in ENTRY_NAMES:
        if (checkout / name).is_file():
            return checkout / name
    candidates = []
    for path in sorted(checkout.rglob("*.py")):
        if ".git" in path.parts:
            continue
        try:
            uses = Uses()
            uses.visit(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError):
            continue
        if uses.fit_calls:
            candidates.append(path)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise state.TweakopsError(f"no training script found in {checkout} (looked for {', '.join(ENTRY_NAMES)} or a .py file calling fit()); set MODEL_FILE")
    names = ", ".join(str(p.relative_to(checkout)) for p in candidates)
    raise state.TweakopsError(f"several scripts call fit() ({names}); set MODEL_FILE to the one to train")


def image_for(cfg: dict, model_type: str) -> str:
    return cfg["IMAGE_SKLEARN"] if model_type == "sklearn" else cfg["IMAGE_KERAS"]


def read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise state.TweakopsError(f"{path} not found; check MODEL_FILE") from None
    except UnicodeDecodeError:
        raise state.TweakopsError(f"{path} is not UTF-8 text; save it as UTF-8") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="a script to classify on its own (prints the type, writes no state)")
    parser.add_argument("--runtime", action="store_true", help="with a path: print the runtime too (cnn keras2)")
    args = parser.parse_args(argv)
    if args.path:
        source = read_source(Path(args.path))
        model_type = classify(source, args.path)
        print(f"{model_type} {runtime_of(source, args.path)}" if args.runtime else model_type)
        return state.EXIT_OK

    cfg = state.config()
    state.hold_run(cfg, "detect")
    checkout = Path(cfg["CHECKOUT_DIR"])
    if not (checkout / ".git").exists():
        raise state.TweakopsError(f"no checkout in {checkout}; run make fetch first")
    state.banner("detect")
    if cfg["MODEL_FILE"]:
        entry = attempts.model_path(cfg, cfg["MODEL_FILE"])
    else:
        entry = find_entry(checkout)
        state.info(f"entry script: {entry.relative_to(checkout)} (set MODEL_FILE to choose another)")
    rel = str(entry.relative_to(checkout))
    source = read_source(entry)
    model_type = classify(source, rel)
    runtime = runtime_of(source, rel)
    image = image_for(cfg, model_type)
    state.update_run(cfg, MODEL_FILE=rel, MODEL_TYPE=model_type, MODEL_RUNTIME=runtime, IMAGE=image,
                     STATUS=attempts.DETECTED)
    state.info(f"{rel}: {model_type}, {runtime} (image {image})")
    print(model_type)
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
