"""The tweak rules: one small named function each, all in the one REGISTRY below, in
priority order (the prior of the chooser); `python scripts/tweak.py --list` shows them.

  cnn      epochs, filters x2, kernel 3→5 (tuples too), +conv block (Conv+Pool after
           the last one), +dense layer (before the output), dense units x2, +dropout,
           +augmentation (random shifts before the first 2-D convolution), +batchnorm,
           dropout rates ÷2, l2 ÷10, optimizer → adam, learning rate,
           sigmoid/tanh hidden layers → relu
  rnn      epochs, units x2, +recurrent layer (the one below gets
           return_sequences=True), bidirectional, dropout rates ÷2, optimizer,
           learning rate
  mlp      epochs, +dense layer, dense units x2, +dropout, dropout rates ÷2, l2 ÷10,
           optimizer, learning rate, sigmoid/tanh hidden layers → relu
  sklearn  a stronger estimator of the same kind (DecisionTreeClassifier →
           RandomForestClassifier, its import added before the first use),
           n_estimators, max_depth, looser tree limits (min_samples_leaf, min_samples_split,
           max_leaf_nodes, ccp_alpha, ...), a boosting learning_rate, C, alpha, gamma → scale,
           gamma ÷10, max_iter, n_neighbors, weights, hidden_layer_sizes, criterion

A rule gets a sourceedit.Script, collects edits and returns its label ("epochs 1→3"),
or None when it does not apply. The label's first word is the rule's own (rule_of in
tweak.py reads a record's rule from it). Step sizes come from the Script's Context:
`bold` takes a bigger step, `epochs` the exact epochs, `lr_scale` a learning-rate
factor; the defaults are the steps above.

The rules are chosen by what the script holds, not only MODEL_TYPE (rules_for_script):
a Conv1D+LSTM hybrid gets the RNN rules as well as the CNN ones. Keras 2 scripts are
tweaked like Keras 3 ones (`lr=` is the learning rate, `fit_generator(..., epochs=)` and
`nb_epoch=` the epochs). attempt() applies one rule: one that does not apply changes
nothing, and a result that does not compile is never returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import libcst as cst

import attempts
import state
from sourceedit import (CONV, DEPTHWISE, POOL, RECURRENT, SHAPE_KEEPING, Context, Script, Slot,
                        class_name, map_after, maps_fit)

# ---------------------------------------------------------------------------
# knobs of the rules
HIDDEN_UNITS = 64        # width of a new Dense layer when there is none to copy
DROPOUT_RATE = 0.3       # rate of a new Dropout layer
MAX_FILTERS = 512        # filters x2 stops here
MAX_UNITS = 1024         # units x2 stops here
MAX_EPOCHS = 200         # epochs stop growing here
MIN_LEARNING_RATE, MAX_LEARNING_RATE = 1e-6, 1.0   # a scaled learning rate stays in here
BOLD_DROPOUT = 0.1       # a bold less_dropout step sets the rates to this
DROPOUT_FLOOR = 0.2      # less_dropout lowers only rates from this up

# optimizer class -> its usual learning rate; the weak ones are replaced by Adam
OPTIMIZERS = {"Adam": 1e-3, "AdamW": 1e-3, "Nadam": 1e-3, "Adamax": 1e-3, "RMSprop": 1e-3,
              "SGD": 1e-2, "Adagrad": 1e-2, "Adadelta": 1.0, "Ftrl": 1e-3, "Lion": 1e-4}
WEAK_OPTIMIZERS = {"sgd", "rmsprop", "adagrad", "adadelta", "ftrl"}
OPTIMIZER_NAMES = {cls.lower(): cls for cls in OPTIMIZERS}   # compile(optimizer="sgd") -> SGD
# calls whose names show how the script names Keras (keras.layers.Dense, layers.Dense, Dense)
KERAS_NAMES = CONV | RECURRENT | {"Dense", "Sequential", "Model", "Input"}
DROPOUTS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"}
L2 = {"l2", "L2"}        # regularizers.l2(0.01), Keras 3's L2(l2=0.01)
# arguments a copied layer must not take along
NOT_COPIED = {"input_shape", "batch_input_shape", "input_dim", "input_length", "name"}

FORESTS = {"RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
           "ExtraTreesRegressor"}
TREES = {"DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier",
         "ExtraTreeRegressor"}
BOOSTING = {"GradientBoostingClassifier", "GradientBoostingRegressor"}
HIST_BOOSTING = {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}
SVMS = {"SVC", "SVR", "NuSVC", "NuSVR", "OneClassSVM"}
# estimators with an alpha penalty -> its default
ALPHA = {"MLPClassifier": 1e-4, "MLPRegressor": 1e-4, "SGDClassifier": 1e-4, "SGDRegressor": 1e-4,
         "RidgeClassifier": 1.0, "Ridge": 1.0, "Lasso": 1.0, "ElasticNet": 1.0,
         # naive Bayes' additive smoothing: a large alpha drowns the counts in the prior
         "MultinomialNB": 1.0, "BernoulliNB": 1.0, "ComplementNB": 1.0, "CategoricalNB": 1.0}
# projections whose n_components bounds what the estimator after them sees
COMPONENTS = {"PCA", "IncrementalPCA", "KernelPCA", "TruncatedSVD", "FastICA", "NMF", "SparsePCA",
              "FactorAnalysis"}
MAX_COMPONENTS_SHARE = 0.99   # a variance share n_components=0.5 steps toward 1, at most to this
# a stronger estimator of the same kind: class -> (module, class, arguments that carry over)
_TREE_ARGS = {"criterion", "max_depth", "min_samples_split", "min_samples_leaf", "max_features",
              "random_state", "max_leaf_nodes", "min_impurity_decrease", "ccp_alpha",
              "class_weight", "min_weight_fraction_leaf"}
STRONGER = {
    "DecisionTreeClassifier": ("sklearn.ensemble", "RandomForestClassifier", _TREE_ARGS),
    "DecisionTreeRegressor": ("sklearn.ensemble", "RandomForestRegressor", _TREE_ARGS - {"class_weight"}),
    "ExtraTreeClassifier": ("sklearn.ensemble", "ExtraTreesClassifier", _TREE_ARGS),
    "LinearSVC": ("sklearn.svm", "SVC", {"C", "class_weight", "random_state", "tol"}),
    "Perceptron": ("sklearn.linear_model", "LogisticRegression",
                   {"random_state", "max_iter", "tol", "class_weight"}),
}


# ---------------------------------------------------------------------------
# the registry: one place, in priority order (the prior of the chooser)

@dataclass(frozen=True)
class Rule:
    id: str                     # stable, recorded in run.env TWEAK_RULE and history `rule`
    label: str                  # short human label (the rule may add detail: "epochs 1→3")
    types: tuple[str, ...]      # model types it applies to
    fn: Callable[[Script], str | None] = field(repr=False)  # edits the script; label or None
    doc: str = ""


REGISTRY: dict[str, Rule] = {}
BUILD_FAILED = attempts.BUILD_FAILED   # history outcome of a candidate discarded before training
KERAS = ("cnn", "rnn", "mlp")


def rule(rule_id: str, label: str, *types: str):
    """Register a tweak rule: `fn(script)` collects edits and returns its label, or None
    when it does not apply. The first paragraph of its docstring is what --list says."""
    def register(fn):
        if rule_id in REGISTRY:
            raise ValueError(f"tweak rule {rule_id!r} registered twice")
        summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        REGISTRY[rule_id] = Rule(rule_id, label, types, fn, summary)
        return fn
    return register


def rules_for(model_type: str) -> list[Rule]:
    """The rules for a model type, in registry (priority) order."""
    return [r for r in REGISTRY.values() if model_type in r.types]


def types_of(model_type: str, source: str) -> list[str]:
    """The model type plus the other Keras kinds the script also holds: a Conv1D+LSTM
    hybrid (detected as a CNN) gets the RNN rules as well as the CNN ones."""
    types = [model_type]
    if model_type not in KERAS:
        return types
    try:
        names = {class_name(c) for c in Script(source).calls}
    except cst.ParserSyntaxError:
        return types
    for kind, classes in (("cnn", CONV), ("rnn", RECURRENT)):
        if names & classes and kind not in types:
            types.append(kind)
    return types


def rules_for_script(model_type: str, source: str) -> list[Rule]:
    """The rules for this script (see types_of), in registry (priority) order."""
    types = set(types_of(model_type, source))
    return [r for r in REGISTRY.values() if types & set(r.types)]


def readable(x: float, digits: int = 3) -> float:
    """`x` rounded to a few significant digits: a step of 0.003 x10 writes 0.03, not
    0.030000000000000002."""
    return float(f"{x:.{digits}g}")


def _times(s: Script, n: int, cap: int) -> int:
    """n x2, or x4 with a bold step (never past `cap`, never less than x2)."""
    return max(n * 2, min(n * 4, cap)) if s.context.bold else n * 2


def _widen(s: Script, calls: list[cst.Call], keyword: str, cap: int, label: str) -> str | None:
    """Twice (bold: four times) the int its first argument or `keyword` stands for, in
    each call, while under `cap`. The label: "<label> x2", or the change when bold
    ("filters 16→64")."""
    first = None
    for call in calls:
        for literal in s.scalars(getattr(s.arg(call, 0, keyword), "value", None)):
            if isinstance(s.value(literal), int) and s.value(literal) < cap:
                change = s.set_number(literal, _times(s, s.value(literal), cap))
                first = first or change
    if first is None:
        return None
    return f"{label} {first[0]}→{first[1]}" if s.context.bold else f"{label} x2"


# -- Keras: training --------------------------------------------------------

def next_epochs(n: int, bold: bool = False) -> int:
    """The plain step: 1→3, 2→4, 10→15; a bold one adds twice as many (1→5, 10→20)."""
    return n + max(2, n // 2) * (2 if bold else 1)


# the position of `epochs` in fit(x, y, batch_size, epochs) and Keras 2's
# fit_generator(generator, steps_per_epoch, epochs)
EPOCHS_AT = {"fit": 3, "fit_generator": 2}


def _epochs_after(s: Script, n: int) -> int | None:
    """The epochs a fit of `n` epochs gets: Context.epochs (at most MAX_EPOCHS) where
    the chooser gives it, else next_epochs (a bold step at most MAX_EPOCHS); None where
    that changes nothing."""
    if s.context.epochs is not None:
        new = min(s.context.epochs, MAX_EPOCHS)
        return new if new != n else None
    if n >= MAX_EPOCHS:
        return None
    return min(next_epochs(n, bold=True), MAX_EPOCHS) if s.context.bold else next_epochs(n)


@rule("epochs", "epochs", *KERAS)
def more_epochs(s: Script) -> str | None:
    """Train longer: epochs 1→3, 2→4, 10→15 (bold: 1→5, 10→20), or exactly Context.epochs.

    Where the epochs are set: a literal, its constant or the argument that feeds it;
    added when fit() has none. Keras 2's fit_generator and nb_epoch= too."""
    models = s.compiled_models()
    label = None
    for call in s.method_calls(*EPOCHS_AT):
        a = s.arg(call, EPOCHS_AT[call.func.attr.value], "epochs") or s.arg(call, None, "nb_epoch")
        if a is None:
            # fit() without epochs trains one; only on a compiled Keras model, not a scaler
            new = _epochs_after(s, 1)
            if s.code(call.func.value) not in models or any(x.star for x in call.args) or new is None:
                continue
            s.replace(call, s.with_kwarg(call, "epochs", str(new)))
            label = label or f"epochs 1→{new}"
            continue
        for literal in s.scalars(a.value):
            new = _epochs_after(s, s.value(literal)) if isinstance(s.value(literal), int) else None
            if new is None:
                continue
            old, new = s.set_number(literal, new)
            label = label or f"epochs {old}→{new}"
    return label


# -- CNN --------------------------------------------------------------------

@rule("filters", "filters x2", "cnn")
def more_filters(s: Script) -> str | None:
    """Double the filters of every convolution (bold: x4)."""
    return _widen(s, s.layers(CONV), "filters", MAX_FILTERS, "filters")


KERNEL_STEP = {3: 5, 5: 7}


@rule("kernel", "kernel", "cnn")
def bigger_kernel(s: Script) -> str | None:
    """A bigger kernel: 3→5 (5→7), in ints and tuples alike, where the maps stay non-empty."""
    pending: dict[int, int] = {}
    literals = []
    for call in s.layers(CONV | DEPTHWISE):
        a = s.arg(call, 0 if class_name(call) in DEPTHWISE else 1, "kernel_size")
        found = [x for x in (s.numbers(a.value) if a is not None else [])
                 if s.value(x) in KERNEL_STEP and id(x) not in pending]
        trial = {**pending, **{id(x): KERNEL_STEP[s.value(x)] for x in found}}
        if found and maps_fit(s, trial):
            pending = trial
            literals += found
    label = None
    for literal in literals:
        old, new = s.set_number(literal, KERNEL_STEP[s.value(literal)])
        label = label or f"kernel {old}→{new}"
    return label


@rule("conv_block", "+conv block", "cnn")
def add_conv_block(s: Script) -> str | None:
    """Another Conv+Pool block after the last one: twice the filters, padding "same"."""
    chain = s.model()
    convs = [i for i, slot in enumerate(chain) if slot.cls in CONV]
    if not convs:
        return None
    last = chain[convs[-1]]
    conv = last.layer
    # the block ends after the pooling/normalisation/dropout that follow the conv
    end, pool = convs[-1], None
    for i in range(convs[-1] + 1, len(chain)):
        if chain[i].cls in POOL | SHAPE_KEEPING:
            end = i
            pool = pool or (chain[i].layer if chain[i].cls in POOL else None)
        else:
            break
    filters = getattr(s.arg(conv, 0, "filters"), "value", None)
    literal = s.number(filters)
    if literal is not None and isinstance(s.value(literal), int):
        filters_code = str(min(s.value(literal) * 2, MAX_FILTERS))
    elif filters is not None:
        filters_code = f"{s.code(filters)} * 2"
    else:
        return None
    kernel = s.arg(conv, 1, "kernel_size")
    args = [filters_code, s.code(kernel.value) if kernel is not None else "3", f"padding={s.string('same')}"]
    args += [f"{a.keyword.value}={s.code(a.value)}" for a in conv.args
             if a.keyword is not None and a.keyword.value in ("activation", "kernel_initializer",
                                                              "kernel_regularizer", "data_format")]
    naming = s.names_layers()
    if naming:
        args.append(f"name={s.string(s.layer_name('conv'))}")
    new_conv = cst.Call(func=conv.func, args=cst.parse_expression(f"f({', '.join(args)})").args)
    if pool is not None:
        size = s.arg(pool, 0, "pool_size")
        pool_args = ([f"pool_size={s.code(size.value)}"] if size is not None else []) + [f"padding={s.string('same')}"]
        pool_func = pool.func
    else:
        dims = next((d for d in "123" if f"{d}D" in class_name(conv)), "2")
        pool_args = [f"padding={s.string('same')}"]
        pool_func = s.layer_ref(conv.func, f"MaxPooling{dims}D")
    if naming:
        pool_args.append(f"name={s.string(s.layer_name('pool'))}")
    new_pool = cst.Call(func=pool_func, args=cst.parse_expression(f"f({', '.join(pool_args)})").args)
    # not after a map already 1 wide (nothing left to pool), nor where a later pool would
    # then get a map smaller than its window
    shape = map_after(s, chain, end)
    if shape is not None and any(n is not None and n < 2 for n in shape[:-1]):
        return None
    if not maps_fit(s, inserted={id(chain[end].layer): [new_conv, new_pool]}):
        return None
    if not s.insert(chain[end], new_conv):
        return None
    s.insert(chain[end], new_pool)   # same place: lands after the conv
    return "+conv block"


def _new_dense(s: Script, chain: list[Slot], out: int) -> cst.Call:
    """A hidden Dense layer like the last hidden one, else Dense(HIDDEN_UNITS, relu)."""
    output = chain[out].inner
    hidden = next((chain[i].inner for i in range(out - 1, -1, -1)
                   if class_name(chain[i].inner) == "Dense"), None)
    if hidden is not None:
        units = s.arg(hidden, 0, "units")
        act = s.arg(hidden, 1, "activation")
        args = [s.code(units.value) if units is not None else str(HIDDEN_UNITS)]
        args += [f"activation={s.code(act.value)}"] if act is not None else []
    else:
        args = [str(HIDDEN_UNITS), f"activation={s.string('relu')}"]
    if s.names_layers():
        args.append(f"name={s.string(s.layer_name('dense'))}")
    return cst.Call(func=output.func, args=cst.parse_expression(f"f({', '.join(args)})").args)


@rule("dense_layer", "+dense layer", "cnn", "mlp")
def add_dense_layer(s: Script) -> str | None:
    """Another hidden Dense layer right before the output layer."""
    chain = s.model()
    out = s.output_index(chain)
    if out is None or out == 0:
        return None
    new = _new_dense(s, chain, out)
    # goes after a Dropout that guards the output, so the Dropout keeps guarding the output
    at = out - 1 if chain[out - 1].cls == "Dropout" and out > 1 else out
    return "+dense layer" if s.insert(chain[at], new, after=False) else None


@rule("dense_units", "dense units x2", "mlp", "cnn")
def more_dense_units(s: Script) -> str | None:
    """Double the units of the hidden Dense layers, never the output layer (bold: x4)."""
    outputs = {id(chain[i].inner) for chain in s.chains() if (i := s.output_index(chain)) is not None}
    hidden = []
    for call in s.layers({"Dense"}):
        act = s.arg(call, 1, "activation")
        if not (id(call) in outputs or (act is not None and isinstance(act.value, cst.SimpleString)
                                        and act.value.evaluated_value in ("softmax", "sigmoid"))):
            hidden.append(call)
    return _widen(s, hidden, "units", MAX_UNITS, "dense units")


@rule("activation", "activation → relu", "cnn", "mlp")
def relu_activation(s: Script) -> str | None:
    """Hidden convolutions and Dense layers on sigmoid or tanh → relu (they saturate and learn slowly).

    Never an output layer (the last Dense of a model, any Dense where the model's layers
    cannot be told, a convolution that ends a model), nor a recurrent layer, whose tanh
    is its own."""
    hidden, last = set(), set()
    for chain in s.chains():
        out = s.output_index(chain)
        hidden |= {id(slot.inner) for i, slot in enumerate(chain) if out is not None and i != out}
        last |= {id(chain[-1].inner)} if chain else set()   # a convolution as the output: left alone
    label = None
    for call in s.layers(CONV | {"Dense"}):
        if (class_name(call) == "Dense" and id(call) not in hidden) or id(call) in last:
            continue
        a = s.arg(call, None, "activation")
        value = s.resolve(a.value) if a is not None else None
        if isinstance(value, cst.SimpleString) and value.evaluated_value in ("sigmoid", "tanh") \
                and id(value) not in s.changed:
            s.changed[id(value)] = "relu"
            label = label or f"activation {value.evaluated_value}→relu"
            s.replace(value, cst.SimpleString(f"{value.quote}relu{value.quote}"))
    return label


@rule("dropout", "+dropout", "cnn", "mlp")
def add_dropout(s: Script) -> str | None:
    """Dropout(DROPOUT_RATE) right before the output layer (not when one is there)."""
    chain = s.model()
    out = s.output_index(chain)
    if out is None or out == 0 or chain[out - 1].cls == "Dropout":
        return None
    output = chain[out].inner
    args = [str(DROPOUT_RATE)] + ([f"name={s.string(s.layer_name('dropout'))}"] if s.names_layers() else [])
    new = cst.Call(func=s.layer_ref(output.func, "Dropout"), args=cst.parse_expression(f"f({', '.join(args)})").args)
    return "+dropout" if s.insert(chain[out], new, after=False) else None


CONV2D = {"Conv2D", "Convolution2D", "SeparableConv2D", "SeparableConvolution2D", "DepthwiseConv2D"}
AUGMENTING = {"RandomTranslation", "RandomRotation", "RandomZoom", "RandomFlip", "RandomCrop", "RandomContrast",
              "RandomBrightness", "RandAugment", "Pipeline"}


@rule("augment", "+augmentation", "cnn")
def add_augmentation(s: Script) -> str | None:
    """Random shifts of the training images, RandomTranslation(0.1, 0.1), right before the
    first 2-D convolution: more data in effect, for a model that learnt its training images
    by heart (Keras applies it in fit only, never in evaluate or predict).

    A first layer's `input_shape=` moves to the new layer; a functional model's Input is
    shifted into a new name the convolution then reads. Not where the model augments
    already."""
    chain = s.model()
    first = next((i for i, slot in enumerate(chain) if slot.cls in CONV2D), None)
    if first is None or any(slot.cls in AUGMENTING for slot in chain):
        return None
    conv = chain[first]
    args = ["0.1", "0.1"] + ([f"name={s.string(s.layer_name('augment'))}"] if s.names_layers() else [])
    shifted = None
    if conv.style == "functional":   # y = Conv2D(...)(x): augmented = RandomTranslation(...)(x), the conv reads that
        shifted = next((n for n in ("augmented", *(f"augmented_{i}" for i in range(2, 99))) if n not in s.bindings),
                       None)
        if not conv.input or shifted is None:
            return None
        s.replace(conv.statement.body[0].value.args[0].value, cst.Name(shifted))
    elif first == 0:                 # the first layer may declare the model's input: it moves to the new one
        if any(s.arg(conv.inner, None, k) is not None for k in ("batch_input_shape", "input_dim")):
            return None
        shape = s.arg(conv.inner, None, "input_shape")
        if shape is not None:
            args.append(f"input_shape={s.code(shape.value)}")
            s.replace(conv.inner, s.without_kwargs(conv.inner, {"input_shape"}))
    layer = cst.Call(func=s.layer_ref(conv.inner.func, "RandomTranslation"),
                     args=cst.parse_expression(f"f({', '.join(args)})").args)
    done = s.insert(conv, layer, after=False, target=shifted)
    return "+augmentation RandomTranslation(0.1, 0.1)" if done else None


@rule("batchnorm", "+batchnorm", "cnn")
def add_batchnorm(s: Script) -> str | None:
    """BatchNormalization after every convolution that has none."""
    chain = s.model()
    count = 0
    for i, slot in enumerate(chain):
        if slot.cls in CONV and (i + 1 == len(chain) or chain[i + 1].cls != "BatchNormalization"):
            args = f"name={s.string(s.layer_name('bn'))}" if s.names_layers() else ""
            new = cst.Call(func=s.layer_ref(slot.layer.func, "BatchNormalization"),
                           args=cst.parse_expression(f"f({args})").args)
            count += s.insert(slot, new)
    return "+batchnorm" if count else None


# -- RNN --------------------------------------------------------------------

@rule("units", "units x2", "rnn")
def more_units(s: Script) -> str | None:
    """Double the units of every recurrent layer, also inside Bidirectional (bold: x4)."""
    return _widen(s, s.layers(RECURRENT), "units", MAX_UNITS, "units")


@rule("stack_rnn", "+recurrent layer", "rnn")
def stack_recurrent(s: Script) -> str | None:
    """Another recurrent layer on top of the last one, which now returns sequences."""
    chain = s.model()
    rnn = [slot for slot in chain if class_name(slot.inner) in RECURRENT]
    if not rnn:
        return None
    below = rnn[-1]
    inner = below.inner
    copy_inner = s.without_kwargs(inner, NOT_COPIED)
    if s.names_layers():
        copy_inner = s.with_kwarg(copy_inner, "name", s.string(s.layer_name(class_name(inner).lower())))
    if below.layer is inner:
        copy = copy_inner
    else:
        wrapper = s.without_kwargs(below.layer, NOT_COPIED)
        copy = wrapper.with_changes(args=[wrapper.args[0].with_changes(value=copy_inner), *wrapper.args[1:]])
    s.replace(inner, s.with_kwarg(inner, "return_sequences", "True"))
    return f"+recurrent layer ({class_name(inner)})" if s.insert(below, copy) else None


@rule("bidirectional", "bidirectional", "rnn")
def bidirectional(s: Script) -> str | None:
    """Wrap every recurrent layer that is not wrapped yet in Bidirectional(...)."""
    wrapped = {id(c.args[0].value) for c in s.layers({"Bidirectional"}) if c.args}
    changed = False
    for call in s.layers(RECURRENT):
        if id(call) in wrapped:
            continue
        moved = [a for a in call.args if a.keyword is not None and a.keyword.value in
                 ("input_shape", "batch_input_shape")]
        inner = s.without_kwargs(call, {"input_shape", "batch_input_shape"})
        args = [cst.Arg(inner)] + [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in moved]
        args = [a.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
                for a in args[:-1]] + args[-1:]
        s.replace(call, cst.Call(func=s.layer_ref(call.func, "Bidirectional"), args=args))
        changed = True
    return "bidirectional" if changed else None


@rule("gated_cell", "SimpleRNN → GRU", "rnn")
def gated_cell(s: Script) -> str | None:
    """SimpleRNN layers → GRU: a gated cell keeps what it read early in a long sequence,
    where a plain one forgets it (vanishing gradients). Every argument of SimpleRNN means
    the same in GRU; the class is named the way the script names SimpleRNN."""
    changed = False
    for call in s.layers({"SimpleRNN"}):
        s.replace(call, call.with_changes(func=s.layer_ref(call.func, "GRU")))
        changed = True
    return "SimpleRNN → GRU" if changed else None


# -- Keras: regularisation -------------------------------------------------

def _shrink(s: Script, x) -> float | None:
    """A penalty ÷10 (bold: ÷100), rounded; None for what is not a positive number."""
    if not isinstance(x, (int, float)) or x <= 0:
        return None
    return readable(x / (100 if s.context.bold else 10))


def _dropout_rates(s: Script) -> list[cst.Integer | cst.Float]:
    """The literals of every dropout rate: a Dropout/SpatialDropout layer's rate, a
    recurrent layer's dropout= and recurrent_dropout=."""
    args = [s.arg(call, 0, "rate") for call in s.layers(DROPOUTS)]
    args += [s.arg(call, None, keyword) for call in s.layers(RECURRENT)
             for keyword in ("dropout", "recurrent_dropout")]
    return [literal for a in args if a is not None for literal in s.scalars(a.value)]


@rule("less_dropout", "dropout ÷2", *KERAS)
def less_dropout(s: Script) -> str | None:
    """Less dropout: every rate from 0.2 up halved (bold: to 0.1).

    The rates of Dropout and SpatialDropout layers and a recurrent layer's dropout= and
    recurrent_dropout=."""
    label = None
    for literal in _dropout_rates(s):
        rate = s.value(literal)
        if not DROPOUT_FLOOR <= rate < 1:
            continue
        old, new = s.set_number(literal, BOLD_DROPOUT if s.context.bold else readable(rate / 2))
        label = label or f"dropout {old}→{new}"
    return label


@rule("l2", "l2 ÷10", "cnn", "mlp")
def weaker_l2(s: Script) -> str | None:
    """A weaker weight penalty: kernel_regularizer=regularizers.l2(x) with x ÷10 (bold: ÷100).

    On Dense and conv layers; x a literal (or its constant)."""
    label = None
    for call in s.layers(CONV | {"Dense"}):
        a = s.arg(call, None, "kernel_regularizer")
        penalty = s.resolve(a.value) if a is not None else None
        if class_name(penalty) not in L2:
            continue
        factor = s.arg(penalty, 0, "l2") or s.arg(penalty, None, "l")   # l=: Keras 2
        for literal in s.scalars(factor.value if factor is not None else None):
            new = _shrink(s, s.value(literal))
            if new is not None:
                old, new = s.set_number(literal, new)
                label = label or f"l2 {old}→{new}"
    return label


# -- Keras: optimizer -------------------------------------------------------

def _optimizer_arg(s: Script) -> list[cst.Arg]:
    return [a for c in s.method_calls("compile") if (a := s.arg(c, 0, "optimizer")) is not None]


@rule("optimizer", "optimizer → adam", *KERAS)
def better_optimizer(s: Script) -> str | None:
    """Adam instead of SGD/RMSprop/Adagrad/...: a string, a call, or a variable holding either."""
    label = None
    for a in _optimizer_arg(s):
        value = s.resolve(a.value)
        if isinstance(value, cst.SimpleString) and str(value.evaluated_value).lower() in WEAK_OPTIMIZERS:
            s.replace(value, cst.SimpleString(f"{value.prefix}{value.quote}adam{value.quote}"))
            label = label or f"optimizer {value.evaluated_value}→adam"
        elif isinstance(value, cst.Call) and (class_name(value) or "").lower() in WEAK_OPTIMIZERS:
            func = s.layer_ref(value.func, "Adam")
            s.replace(value, cst.Call(func=func, args=cst.parse_expression("f(learning_rate=0.001)").args))
            label = label or f"optimizer {class_name(value)}→Adam"
    return label


def _scaled_rate(rate: float, scale: float) -> float:
    """A learning rate times `scale`, rounded (2e-05 x10 → 0.0002) and kept within
    [MIN_LEARNING_RATE, MAX_LEARNING_RATE]."""
    return min(max(readable(rate * scale, 2), MIN_LEARNING_RATE), MAX_LEARNING_RATE)


def _dotted(base: cst.BaseExpression, *names: str) -> cst.BaseExpression:
    for name in names:
        base = cst.Attribute(value=base, attr=cst.Name(name))
    return base


def _keras_root(module: str) -> str:
    """The package above a Keras submodule: "tensorflow.keras.layers" → "tensorflow.keras"."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part in ("layers", "models"):
            return ".".join(parts[:i])
    return module


def _optimizer_class(s: Script, cls: str, before: cst.CSTNode) -> cst.BaseExpression | None:
    """Optimizer class `cls` named the way the script names Keras: `keras.layers.Dense`
    → `keras.optimizers.SGD` (`tf.keras` too), `layers.Dense` (from keras import layers)
    → `optimizers.SGD` (optimizers added to that import), a bare `Dense` → `SGD`
    (imported from keras.optimizers), any import before `before`. None where no Keras
    call shows the way."""
    for call in s.calls:
        if class_name(call) not in KERAS_NAMES:
            continue
        func = call.func
        base = func.value if isinstance(func, cst.Attribute) else None
        if isinstance(func, cst.Name):                                  # Dense
            source = s.imported_from(func.value)
            if source is not None:
                module = f"{_keras_root(source[0])}.optimizers"
                return cst.Name(s.ensure_import(module, cls, after=source[1], before=before))
        elif isinstance(base, cst.Name) and base.value in ("layers", "models"):    # layers.Dense
            source = s.imported_from(base.value)
            if source is not None:
                name = s.ensure_import(_keras_root(source[0]), "optimizers", after=source[1], before=before)
                return _dotted(cst.Name(name), cls)
        elif isinstance(base, cst.Attribute) and base.attr.value in ("layers", "models"):
            return _dotted(base.value, "optimizers", cls)               # keras.layers.Dense
        elif isinstance(base, cst.Attribute) and base.attr.value == "keras" or \
                isinstance(base, cst.Name) and base.value in ("keras", "tf_keras"):
            return _dotted(base, "optimizers", cls)                     # keras.Sequential
    return None


def _scale_named_optimizers(s: Script, scale: float) -> str | None:
    """compile(optimizer="sgd") → optimizer=keras.optimizers.SGD(learning_rate=<usual x
    scale>), the class named as the script names Keras. Returns the label or None."""
    label, seen = None, set()
    for a in _optimizer_arg(s):
        value = s.resolve(a.value)
        if not isinstance(value, cst.SimpleString) or id(value) in seen:
            continue
        cls = OPTIMIZER_NAMES.get(str(value.evaluated_value).lower())
        func = _optimizer_class(s, cls, before=value) if cls else None
        if func is None:
            continue
        seen.add(id(value))
        new = _scaled_rate(OPTIMIZERS[cls], scale)
        s.replace(value, cst.Call(func=func, args=[s.kwarg("learning_rate", repr(new))]))
        label = label or f"learning rate {OPTIMIZERS[cls]}→{new}"
    return label


def _scale_learning_rates(s: Script, scale: float) -> str | None:
    """Every learning rate times `scale`: each literal one, the usual one added where an
    optimizer call gives none, an optimizer named by a string made a call that gives one."""
    label = None
    for call in s.layers(set(OPTIMIZERS)):
        a = s.arg(call, 0, "learning_rate") or s.arg(call, None, "lr")
        if a is None:
            if any(x.star for x in call.args):
                continue
            usual = OPTIMIZERS[class_name(call)]
            new = _scaled_rate(usual, scale)
            s.replace(call, s.with_kwarg(call, "learning_rate", repr(new)))
            label = label or f"learning rate {usual}→{new}"
            continue
        for literal in s.scalars(a.value):
            if s.value(literal) > 0 and _scaled_rate(s.value(literal), scale) != s.value(literal):
                old, new = s.set_number(literal, _scaled_rate(s.value(literal), scale))
                label = label or f"learning rate {old}→{new}"
    named = _scale_named_optimizers(s, scale)
    return label or named


@rule("learning_rate", "learning rate", *KERAS)
def usual_learning_rate(s: Script) -> str | None:
    """A learning rate off by more than ~3x back to the optimizer's usual value.

    With Context.lr_scale, every learning rate times it instead (see
    _scale_learning_rates)."""
    if s.context.lr_scale is not None:
        return _scale_learning_rates(s, s.context.lr_scale)
    label = None
    for call in s.layers(set(OPTIMIZERS)):
        a = s.arg(call, 0, "learning_rate") or s.arg(call, None, "lr")
        literal = s.number(a.value) if a is not None else None
        if literal is None or s.value(literal) <= 0:
            continue
        usual = OPTIMIZERS[class_name(call)]
        if abs(math.log10(s.value(literal) / usual)) >= 0.5:
            old, new = s.set_number(literal, usual)
            label = label or f"learning rate {old}→{new}"
    return label


# -- scikit-learn -----------------------------------------------------------

def _tune(s: Script, classes: set[str], param: str, change: Callable, default=None,
          absent_default: dict[str, object] | None = None, floors: dict[str, object] | None = None) -> str | None:
    """Change keyword `param` of every estimator of `classes`; where it is not given and
    the class has a known default, add it. A changed value is at least the class's entry
    in `floors` (a count below the library's default goes to the default). Returns
    "param old→new" or None."""
    def step(value, cls):
        new = change(value)
        return max(new, floors[cls]) if new is not None and cls in (floors or {}) else new

    grids, searched = _grid_entries(s, classes, param)
    label = None
    for call in _unsearched(s, classes, searched):   # where a grid sets `param`, the grid is what to change
        a = s.arg(call, None, param)
        if a is None:
            current = (absent_default or {}).get(class_name(call), default)
            if current is None or any(x.star for x in call.args):
                continue
            new = step(current, class_name(call))
            if new is None or new == current:
                continue
            s.replace(call, s.with_kwarg(call, param, repr(new)))
            label = label or f"{param} {current}→{new}"
            continue
        literal = s.number(a.value)
        if literal is None:
            continue
        new = step(s.value(literal), class_name(call))
        if new is None or new == s.value(literal):
            continue
        old, new = s.set_number(literal, new)
        label = label or f"{param} {old}→{new}"
    for values, cls in grids:
        olds, news = [], []
        for literal in values:
            new = step(s.value(literal), cls)
            old, new = s.set_number(literal, new) if new is not None else (s.value(literal), s.value(literal))
            olds.append(old)
            news.append(new)
        if olds != news:
            label = label or f"{param} grid {_listed(olds)}→{_listed(news)}"
    return label


# hyper-parameter searches: their grid (or distributions) sets the estimator's parameters
SEARCHES = {"GridSearchCV", "RandomizedSearchCV", "HalvingGridSearchCV", "HalvingRandomSearchCV"}
# scipy.stats distributions whose positional numbers all scale with a multiplicative step
SCALABLE = {"loguniform", "reciprocal", "uniform", "randint"}


def _listed(values: list) -> str:
    return str(values[0]) if len(values) == 1 else "[" + ", ".join(str(v) for v in values) + "]"


def _grid_entries(s: Script, classes: set[str], param: str) -> tuple[list[tuple[list, str]], set[int]]:
    """Where a search (GridSearchCV, RandomizedSearchCV, ...) over an estimator of `classes`
    sets `param` ("C", or "svc__C" in a pipeline's grid): the number literals of each
    such grid entry (a list of values, or a loguniform/uniform/randint's bounds) with the
    estimator class they are for; and the ids of the estimator calls such a grid sets
    `param` of, whose own keyword the search overrides. A grid entry that is not a
    literal list of numbers is left alone (and so is the estimator's keyword)."""
    grids, searched = [], set()
    for search in s.layers(SEARCHES):
        estimator, grid = s.arg(search, 0, "estimator"), (s.arg(search, 1, "param_grid")
                                                          or s.arg(search, 1, "param_distributions"))
        if estimator is None or grid is None:
            continue
        inside = _calls_under(s, s.resolve(estimator.value))
        mine = [c for c in inside if class_name(c) in classes]
        holder = s.resolve(grid.value)
        dicts = [holder] if isinstance(holder, cst.Dict) else \
            [s.resolve(el.value) for el in holder.elements] if isinstance(holder, (cst.List, cst.Tuple)) else []
        for d in dicts:
            for el in (d.elements if isinstance(d, cst.Dict) else []):
                key = getattr(el.key, "evaluated_value", None) if isinstance(el, cst.DictElement) else None
                if not mine or not isinstance(key, str) or key.rsplit("__", 1)[-1] != param:
                    continue
                searched.update(id(c) for c in mine)
                values = s.numbers(el.value)
                value = s.resolve(el.value)
                if not values and isinstance(value, cst.Call) and class_name(value) in SCALABLE \
                        and value.args and all(a.keyword is None for a in value.args):
                    found = [s.number(a.value) for a in value.args]
                    values = found if all(x is not None for x in found) else []
                if values and all(not isinstance(s.value(x), bool) for x in values):
                    grids.append((values, class_name(mine[0])))
    return grids, searched


def _unsearched(s: Script, classes: set[str], searched: set[int]) -> list[cst.Call]:
    """The estimator calls of `classes` whose parameter no search's grid sets (`searched`:
    _grid_entries' second part): the keyword the model really gets."""
    return [call for call in s.layers(classes) if id(call) not in searched]


def _calls_under(s: Script, node) -> list[cst.Call]:
    """The calls in the expression `node` (itself included): a pipeline's steps."""
    out = []
    for call in s.calls:
        current = call
        while current is not None and current is not node:
            current = s.parent.get(id(current))
        if current is node:
            out.append(call)
    return out


@rule("stronger_estimator", "estimator → stronger", "sklearn")
def stronger_estimator(s: Script) -> str | None:
    """A stronger estimator of the same kind (a tree → a forest), its import added."""
    label = None
    for call in s.layers(set(STRONGER)):
        if any(a.keyword is None for a in call.args):
            continue   # positional arguments mean something else in the new class
        module, new_cls, keep = STRONGER[class_name(call)]
        imported = s.imported_from(call.func.value) if isinstance(call.func, cst.Name) else None
        name = s.ensure_import(module, new_cls, after=imported[1] if imported else None, before=call)
        kept = s.without_kwargs(call, {a.keyword.value for a in call.args} - keep)
        s.replace(call, kept.with_changes(func=cst.Name(name)))
        label = label or f"estimator {class_name(call)}→{new_cls}"
    return label


@rule("n_estimators", "n_estimators x2", "sklearn")
def more_estimators(s: Script) -> str | None:
    """Twice the trees of a forest or boosting model (default 100, AdaBoost 50, Bagging 10).

    Bold: x4. A count below the library's default goes at least to the default (3 → 50
    for AdaBoost): a handful of trees is a toy setting, not a considered one."""
    defaults = {c: 100 for c in FORESTS | BOOSTING} | {"AdaBoostClassifier": 50, "AdaBoostRegressor": 50,
                                                        "BaggingClassifier": 10, "BaggingRegressor": 10}
    factor = 4 if s.context.bold else 2
    return _tune(s, set(defaults), "n_estimators",
                 lambda n: n * factor if isinstance(n, int) and 0 < n < 2000 else None,
                 absent_default=defaults, floors=defaults)


@rule("max_depth", "max_depth x2", "sklearn")
def deeper_trees(s: Script) -> str | None:
    """Deeper trees: max_depth x2, bold x4 (gradient boosting's default 3 → 6; None stays unlimited)."""
    factor = 4 if s.context.bold else 2
    return _tune(s, TREES | FORESTS | BOOSTING, "max_depth",
                 lambda d: d * factor if isinstance(d, int) and 0 < d < 64 else None,
                 absent_default={c: 3 for c in BOOSTING})


# the limits that stop a tree growing -> (the library's default, HistGradientBoosting's where it differs)
TREE_LIMITS = {"min_samples_leaf": (1, 20), "min_samples_split": (2, None), "max_leaf_nodes": (None, 31),
               "min_impurity_decrease": (0.0, None), "ccp_alpha": (0.0, None), "min_weight_fraction_leaf": (0.0, None)}


def _looser(param: str, value, default, bold: bool):
    """One step of a tree limit toward its default (bold: the default itself); None: no step."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if param == "max_leaf_nodes":   # a cap on the leaves: x4 (bold x16)
        return value * (16 if bold else 4) if isinstance(value, int) and 1 < value < 100_000 else None
    if param in ("min_samples_leaf", "min_samples_split"):
        if isinstance(value, float) and 0 < value < 1:   # a fraction of the samples
            return default if bold else readable(value / 4)
        if isinstance(value, int) and value > default:
            return default if bold else max(default, value // 4)
        return None
    if value > 0:                    # a penalty on splits: ÷10 (bold: none)
        return default if bold else readable(value / 10)
    return None


@rule("tree_limits", "looser tree limits ÷4", "sklearn")
def looser_tree_limits(s: Script) -> str | None:
    """Let trees grow: a hand-set min_samples_leaf or min_samples_split ÷4 (toward 1 and
    2; HistGradientBoosting's leaf default 20), max_leaf_nodes x4, ccp_alpha,
    min_impurity_decrease ÷10, for trees, forests and boosting models.

    Bold: each limit back to the library's default (max_leaf_nodes x16). A limit not
    given is left alone: the default is already the loosest."""
    changed = []
    for param, (default, hist_default) in TREE_LIMITS.items():
        groups = [(TREES | FORESTS | BOOSTING, default)]
        if param in ("min_samples_leaf", "max_leaf_nodes"):   # HistGradientBoosting has only these two
            groups.append((HIST_BOOSTING, hist_default))
        for classes, toward in groups:
            label = _tune(s, classes, param, lambda v, toward=toward: _looser(param, v, toward, s.context.bold))
            if label:
                changed.append(label)
    return "looser " + ", ".join(changed) if changed else None


@rule("boost_rate", "learning_rate x10", "sklearn")
def faster_boosting(s: Script) -> str | None:
    """A boosting model's hand-set learning_rate x10, at most 1.0: each tree counts for more.

    Gradient boosting (also the histogram kind) and AdaBoost; a rate not given (the
    default 0.1, AdaBoost's 1.0) is left alone."""
    return _tune(s, BOOSTING | HIST_BOOSTING | {"AdaBoostClassifier", "AdaBoostRegressor"}, "learning_rate",
                 lambda r: readable(min(1.0, r * 10)) if 0 < r < 1.0 else None)


@rule("C", "C x10", "sklearn")
def less_regularisation(s: Script) -> str | None:
    """Less regularisation: C x10 (default 1.0) for SVMs and logistic regression; bold x100."""
    classes = {"SVC", "SVR", "LinearSVC", "LinearSVR", "LogisticRegression", "NuSVR"}
    step = (lambda c: readable(c * 100)) if s.context.bold else (lambda c: c * 10)
    return _tune(s, classes, "C", lambda c: step(c) if 0 < c < 1e4 else None, default=1.0)


@rule("alpha", "alpha ÷10", "sklearn")
def less_alpha(s: Script) -> str | None:
    """Less regularisation: alpha ÷10 for MLP, SGD, ridge, lasso, elastic-net and naive
    Bayes models (their smoothing).

    Bold: ÷100. Where alpha is not given, its default is: 1e-4 (MLP, SGD), 1.0 (ridge,
    lasso, elastic net, MultinomialNB, BernoulliNB, ComplementNB, CategoricalNB)."""
    return _tune(s, set(ALPHA), "alpha", lambda a: _shrink(s, a), absent_default=ALPHA)


@rule("n_components", "n_components x4", "sklearn")
def more_components(s: Script) -> str | None:
    """More components kept by a projection (PCA, TruncatedSVD, KernelPCA, NMF, ...): a
    hand-set count x4, a variance share toward 1 (0.5 → 0.875: what it drops ÷4, at most
    0.99). PCA(n_components=2) before a classifier throws away most of what it needs."""
    def step(n):
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n * 4
        if isinstance(n, float) and 0 < n < MAX_COMPONENTS_SHARE:
            return readable(min(MAX_COMPONENTS_SHARE, 1 - (1 - n) / 4))
        return None
    return _tune(s, COMPONENTS, "n_components", step)


@rule("gamma", "gamma → scale", "sklearn")
def gamma_scale(s: Script) -> str | None:
    """A hand-set numeric gamma back to "scale" (1 / (n_features * X.var()))."""
    label = None
    for call in _unsearched(s, SVMS, _grid_entries(s, SVMS, "gamma")[1]):
        literal = s.number(getattr(s.arg(call, None, "gamma"), "value", None))
        if literal is not None and id(literal) not in s.changed:
            s.changed[id(literal)] = "scale"
            s.replace(literal, cst.SimpleString(s.string("scale")))
            label = label or f"gamma {s.value(literal)}→scale"
    return label


@rule("gamma_step", "smaller gamma ÷10", "sklearn")
def smaller_gamma(s: Script) -> str | None:
    """A wider kernel: a numeric gamma ÷10 (0.5 is far too large on standardized features).

    Bold: ÷100. A gamma given as a string ("scale", "auto") is left alone."""
    label = _tune(s, SVMS, "gamma", lambda g: _shrink(s, g))
    return f"smaller {label}" if label else None


@rule("max_iter", "max_iter x5", "sklearn")
def more_iterations(s: Script) -> str | None:
    """More solver iterations: max_iter x5 (LogisticRegression's default 100, MLP's 200).

    Bold: x20. A hand-set count below the library's default goes at least to the default
    (LinearSVC and SGD 1000, HistGradientBoosting 100)."""
    defaults = {"LogisticRegression": 100, "MLPClassifier": 200, "MLPRegressor": 200}
    # a hand-set count below the library's default goes at least to it (LinearSVC(max_iter=5) → 1000)
    floors = defaults | {"SGDClassifier": 1000, "SGDRegressor": 1000, "LinearSVC": 1000, "Perceptron": 1000,
                         **{c: 100 for c in HIST_BOOSTING}}
    factor = 20 if s.context.bold else 5
    return _tune(s, set(floors), "max_iter",
                 lambda n: n * factor if isinstance(n, int) and 0 < n < 10000 else None,
                 absent_default=defaults, floors=floors)


@rule("n_neighbors", "n_neighbors", "sklearn")
def fewer_neighbors(s: Script) -> str | None:
    """Neighbours toward 3 (default 5): sharper boundaries on clean data."""
    return _tune(s, {"KNeighborsClassifier", "KNeighborsRegressor"}, "n_neighbors",
                 lambda k: (3 if k > 3 else k + 2) if isinstance(k, int) and k > 0 else None, default=5)


@rule("knn_weights", "weights → distance", "sklearn")
def distance_weights(s: Script) -> str | None:
    """Neighbours weighted by distance instead of uniformly."""
    return _switch_string(s, {"KNeighborsClassifier", "KNeighborsRegressor", "RadiusNeighborsClassifier"},
                          "weights", "uniform", "distance")


def _switch_string(s: Script, classes: set, kwarg: str, old: str, new: str) -> str | None:
    """Set a string keyword argument from `old` (or absent, the default) to `new`."""
    label = None
    for call in _unsearched(s, classes, _grid_entries(s, classes, kwarg)[1]):
        a = s.arg(call, None, kwarg)
        value = s.resolve(a.value) if a is not None else None
        if a is None:
            s.replace(call, s.with_kwarg(call, kwarg, s.string(new)))
        elif isinstance(value, cst.SimpleString) and value.evaluated_value == old:
            s.replace(value, cst.SimpleString(f"{value.quote}{new}{value.quote}"))
        else:
            continue
        label = f"{kwarg} {old}→{new}"
    return label


@rule("hidden_layer_sizes", "hidden units x2", "sklearn")
def wider_mlp(s: Script) -> str | None:
    """Twice the hidden units of an MLPClassifier/Regressor (default (100,)); bold: x4."""
    factor = 4 if s.context.bold else 2
    label = None
    mlps = {"MLPClassifier", "MLPRegressor"}
    for call in _unsearched(s, mlps, _grid_entries(s, mlps, "hidden_layer_sizes")[1]):
        a = s.arg(call, None, "hidden_layer_sizes")
        if a is None:
            s.replace(call, s.with_kwarg(call, "hidden_layer_sizes", f"({100 * factor},)"))
            label = f"hidden units x{factor}"
            continue
        for literal in s.numbers(a.value):
            if isinstance(s.value(literal), int) and s.value(literal) < MAX_UNITS:
                s.set_number(literal, min(MAX_UNITS, s.value(literal) * factor))
                label = f"hidden units x{factor}"
    return label


@rule("var_smoothing", "var_smoothing x100", "sklearn")
def smoother_variances(s: Script) -> str | None:
    """GaussianNB's var_smoothing x100 (default 1e-9; bold: x10,000, at most 1.0): a
    feature that barely varies within a class (a pixel always blank) no longer makes
    its likelihood all-or-nothing."""
    factor = 10_000 if s.context.bold else 100
    return _tune(s, {"GaussianNB"}, "var_smoothing",
                 lambda v: readable(min(1.0, v * factor)) if 0 < v < 1.0 else None, default=1e-9)


@rule("criterion", "criterion → entropy", "sklearn")
def entropy_criterion(s: Script) -> str | None:
    """Split trees on entropy instead of gini."""
    return _switch_string(s, {"DecisionTreeClassifier", "RandomForestClassifier", "ExtraTreesClassifier"},
                          "criterion", "gini", "entropy")

# ---------------------------------------------------------------------------
# applying one rule

@dataclass
class Tweak:
    rule: Rule
    label: str
    source: str


def attempt(rule_id: str, source: str, context: Context | None = None) -> Tweak | None:
    """Apply one rule; None when it does not apply, changes nothing, or would not compile."""
    try:
        r = REGISTRY[rule_id]
    except KeyError:
        raise state.TweakopsError(f"unknown tweak rule {rule_id!r}; python scripts/tweak.py --list shows them") from None
    try:
        script = Script(source, context)
    except cst.ParserSyntaxError:
        return None
    label = r.fn(script)
    if not label:
        return None
    new = script.render()
    if new == source:
        return None
    try:
        compile(new, "<tweak>", "exec")
    except (SyntaxError, ValueError):
        return None
    return Tweak(r, label, new)


def apply(rule_id: str, source: str, context: Context | None = None) -> str | None:
    """The source with rule `rule_id` applied, or None when it does not apply."""
    result = attempt(rule_id, source, context)
    return result.source if result else None


def list_rules(model_type: str | None) -> str:
    types = [model_type] if model_type else sorted({t for r in REGISTRY.values() for t in r.types})
    rows = [[t, r.id, r.label, r.doc] for t in types for r in rules_for(t)]
    return state.table(rows, ["type", "rule", "label", "what it does"])

