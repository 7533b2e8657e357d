"""Job 2: tell a Keras CNN, RNN, MLP and a scikit-learn script apart (by parsing, not grep).

The entry script is parsed with `ast`: imports and their aliases (`import tensorflow
as tf`, `from tensorflow import keras`, `import keras`, `from keras.layers import
Convolution2D`) and the layers the code calls decide the type, so a word in a comment
or a string never changes the verdict.

  cnn      Keras with a convolution layer (Conv1D/2D/3D, SeparableConv, …)
  rnn      Keras with a recurrent layer (LSTM, GRU, SimpleRNN, Bidirectional, …)
  mlp      Keras with Dense layers only
  sklearn  scikit-learn without Keras

PyTorch, JAX, no ML import or a syntax error: one line naming the reason, exit 2.
When MODEL_FILE is not set the entry script is found: model.py, train.py, main.py,
or the single .py file that calls fit().

Reads:  CHECKOUT_DIR, MODEL_FILE, IMAGE_KERAS, IMAGE_SKLEARN
Writes: run.env MODEL_FILE, MODEL_TYPE, IMAGE, STATUS=detected (pipeline mode)
Exit:   0 detected; 2 unsupported or unreadable

    $ make detect
    $ python scripts/detect_type.py path/to/model.py     # prints the type, writes nothing
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import state

ENTRY_NAMES = ("model.py", "train.py", "main.py")
CONV = {"Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D",
        "SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D",
        "DepthwiseConv1D", "DepthwiseConv2D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose", "Convolution2DTranspose", "Convolution3DTranspose", "ConvLSTM1D",
        "ConvLSTM2D", "ConvLSTM3D"}
RECURRENT = {"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "LSTMCell", "GRUCell",
             "SimpleRNNCell", "CuDNNLSTM", "CuDNNGRU"}
KERAS_ROOTS = {"keras", "tensorflow", "tf_keras"}
OTHER_FRAMEWORKS = {"torch": "PyTorch", "jax": "JAX", "flax": "JAX/Flax", "mxnet": "MXNet",
                    "paddle": "PaddlePaddle", "lightning": "PyTorch Lightning",
                    "pytorch_lightning": "PyTorch Lightning", "xgboost": None, "lightgbm": None}


class Uses(ast.NodeVisitor):
    """Collect the imported top-level modules and the names of called layers."""

    def __init__(self):
        self.modules: set[str] = set()
        self.names: set[str] = set()   # last attribute or bare name of every Call
        self.fit_calls = 0

    def visit_Import(self, node):
        for alias in node.names:
            self.modules.add(alias.name.split(".")[0])

    def visit_ImportFrom(self, node):
        if node.module and node.level == 0:
            self.modules.add(node.module.split(".")[0])
            # `from keras.layers import Convolution2D as C` names a layer too
            for alias in node.names:
                self.names.add(alias.name)

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Attribute):
            self.names.add(func.attr)
            if func.attr == "fit":
                self.fit_calls += 1
        elif isinstance(func, ast.Name):
            self.names.add(func.id)
        self.generic_visit(node)


def classify(source: str, filename: str = "<model>") -> str:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise state.TweakopsError(f"{filename}:{exc.lineno}: syntax error ({exc.msg}); fix the script and push again") from None
    uses = Uses()
    uses.visit(tree)
    if uses.modules & KERAS_ROOTS:
        if uses.names & CONV:
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
    """model.py, train.py, main.py at the top, else the single .py file that calls fit()."""
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
    args = parser.parse_args(argv)
    if args.path:
        print(classify(read_source(Path(args.path)), args.path))
        return state.EXIT_OK

    cfg = state.config()
    checkout = Path(cfg["CHECKOUT_DIR"])
    if not (checkout / ".git").exists():
        raise state.TweakopsError(f"no checkout in {checkout}; run make fetch first")
    state.banner("detect")
    if cfg["MODEL_FILE"]:
        entry = checkout / cfg["MODEL_FILE"]
    else:
        entry = find_entry(checkout)
        state.info(f"entry script: {entry.relative_to(checkout)} (set MODEL_FILE to choose another)")
    rel = str(entry.relative_to(checkout))
    model_type = classify(read_source(entry), rel)
    image = image_for(cfg, model_type)
    state.update_run(cfg, MODEL_FILE=rel, MODEL_TYPE=model_type, IMAGE=image, STATUS="detected")
    state.info(f"{rel}: {model_type} (image {image})")
    print(model_type)
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
