"""Job 4: tweak the model's own source, one small readable change per attempt.

Starts from the best source so far, picks the next tweak rule for the model type and
rewrites the entry script with libcst (a concrete syntax tree), so comments and
formatting survive and the diff a person reviews shows only the change. No sed, no
regular expressions on source, no line numbers.

Rules (one small named function each, all in the one REGISTRY below; `--list` shows them):

  cnn      filters x2, kernel 3→5 (tuples too), +conv block (Conv+Pool after the last
           one), +dense layer (before the output), epochs, +dropout, +batchnorm,
           optimizer → adam, learning rate → the optimizer's usual value
  rnn      units x2, +recurrent layer (the one below gets return_sequences=True),
           bidirectional, epochs, optimizer, learning rate
  mlp      dense units x2, +dense layer, epochs, +dropout, optimizer, learning rate
  sklearn  n_estimators, max_depth, C, gamma, max_iter, n_neighbors, weights,
           hidden_layer_sizes, criterion, a stronger estimator of the same kind
           (DecisionTreeClassifier → RandomForestClassifier, its import added before
           the first use)

The rules are chosen by what the script holds, not only MODEL_TYPE: a Conv1D+LSTM
hybrid gets the RNN rules as well as the CNN ones. The kernel and +conv block rules
compute the spatial map sizes where the source gives them (the input shape, the
kernels, strides and padding of the conv/pool chain) and never make a map of size 0.

The rules understand the ways scripts are written: `Sequential([...])` lists,
`model.add(...)`, the functional API (`x = layers.Conv2D(...)(x)`), positional and
keyword arguments, values held in constants (`FILTERS = 32 ... Conv2D(FILTERS, 3)`
changes the constant), `tf.keras.layers.X`, `keras.layers.X`, `layers.X`, bare
imports (a new layer class is added to the `from ... import` line) and old aliases
(`Convolution2D`), and Keras 2 scripts like Keras 3 ones (`lr=` is the learning rate,
`fit_generator(..., epochs=)` and `nb_epoch=` the epochs). A value is followed to where
it is set: a module constant, a function parameter (its call-site argument or its
default: `train(model, EPOCHS)`, `def build_model(filters=8)`) or the list a `for` loop
walks, an argparse option's default (`args.epochs`); the edit is made there. Where the
script names its layers, new layers are named
`tweak_<kind>_<n>` with n the tweak counter, so names stay unique. A rule that does
not apply changes nothing; a result that does not compile is never written. Line
endings stay as they are (a CRLF script stays CRLF; the diff shows only the change).

Build check: each candidate written into the checkout is run up to its first fit
(scripts/buildcheck.py, BUILD_CHECK=0 skips it; so do epochs and learning-rate tweaks, which
build as their parent did). One that does not build is put back,
recorded in history.jsonl (`attempt: null, outcome: build-failed`, its rule, parent,
source_hash, diff and reason) and the next candidate is tried in the same run of
tweak.py: it costs no training, no attempt and no MAX_TWEAKS tweak, the same source
never comes back and its rule is not retried on that parent.

Which rule next (deterministic given history.jsonl, so a rerun picks the same one):
  - never a source whose normalised hash (state.source_hash: comments and formatting
    do not count) is already in the history, nor the parent itself;
  - never a rule already tried on the same parent, whatever its outcome (a failed
    rule is never retried there; a reverted one would give the same accuracy again);
  - score = the mean accuracy gain the rule gave over its parent in past attempts
    (failed counts as -0.10, stopped early without an accuracy as -0.05); untried
    rules score 0. Highest score first, so rules that helped come first, then the
    untried ones, then the ones that hurt; ties go to fewer tries, then registry order
    (the order below is the prior: cheap, usually helpful changes first).
  A plain mean is a small greedy bandit: good enough for ten attempts, and easy to read
  in the history. It cannot know that two rules help only together.

Reads:  run.env MODEL_FILE (relative to CHECKOUT_DIR), MODEL_TYPE, ATTEMPT, BEST_ATTEMPT,
        RUN_ID; STATE_DIR/best/<basename of MODEL_FILE> (else the checkout file);
        history.jsonl; tweak_count; BUILD_CHECK
Writes: the checkout's MODEL_FILE (atomically), tweak_count + 1, run.env TWEAK (label),
        TWEAK_RULE (rule id), TWEAK_PARENT (best attempt), STATUS=tweaked (ATTEMPT is
        left to train.py, which numbers the attempt it runs); a build-failed record in
        history.jsonl per discarded candidate;
        the unified diff against the best on stdout, one banner line on stderr (plus one
        line per discarded candidate)
Exit:   0 a tweak was written; 2 no rules for the model type, file missing or unparsable;
        8 no tweak left (every rule tried on this parent or already trained; with FILE
        --rule: the rule does not apply)

    $ make tweak
    $ python scripts/tweak.py --list                          # the rules per type
    $ python scripts/tweak.py models/cnn/model.py --rule filters   # print a diff, write nothing
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import libcst as cst

import buildcheck
import state

# ---------------------------------------------------------------------------
# knobs of the rules
HIDDEN_UNITS = 64        # width of a new Dense layer when there is none to copy
DROPOUT_RATE = 0.3       # rate of a new Dropout layer
MAX_FILTERS = 512        # filters x2 stops here
MAX_UNITS = 1024         # units x2 stops here
MAX_EPOCHS = 200         # epochs stop growing here
FAILED_GAIN = -0.10      # score of a failed attempt (it did not even train)
BUILD_FAILED = "build-failed"   # history outcome of a candidate discarded before training
STOPPED_GAIN = -0.05     # score of an attempt stopped early without an accuracy

# ---------------------------------------------------------------------------
# layer and estimator classes, by the last name of the call (`layers.Conv2D` -> Conv2D)
CONV = {"Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D",
        "SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D",
        "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Convolution2DTranspose",
        "Convolution3DTranspose"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
POOL = {"MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "MaxPool1D", "MaxPool2D", "MaxPool3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "AvgPool1D", "AvgPool2D",
        "AvgPool3D"}
RECURRENT = {"LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU"}
WRAPPERS = {"Bidirectional", "TimeDistributed"}
FLATTEN = {"Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
           "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAvgPool1D",
           "GlobalAvgPool2D", "GlobalMaxPool1D", "GlobalMaxPool2D"}
# optimizer class -> its usual learning rate; the weak ones are replaced by Adam
OPTIMIZERS = {"Adam": 1e-3, "AdamW": 1e-3, "Nadam": 1e-3, "Adamax": 1e-3, "RMSprop": 1e-3,
              "SGD": 1e-2, "Adagrad": 1e-2, "Adadelta": 1.0, "Ftrl": 1e-3, "Lion": 1e-4}
WEAK_OPTIMIZERS = {"sgd", "rmsprop", "adagrad", "adadelta", "ftrl"}
# arguments a copied layer must not take along
NOT_COPIED = {"input_shape", "batch_input_shape", "input_dim", "input_length", "name"}

FORESTS = {"RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
           "ExtraTreesRegressor"}
TREES = {"DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier",
         "ExtraTreeRegressor"}
BOOSTING = {"GradientBoostingClassifier", "GradientBoostingRegressor"}
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
# the script being edited: what it holds, and the edits collected by one rule

@dataclass
class Context:
    """What a rule may need besides the source: `counter` names new layers (tweak_conv_<counter>)."""
    counter: int = 0


@dataclass
class Slot:
    """One layer in a model: an element of a Sequential list, a model.add(...)
    statement, or a functional `y = Layer(...)(x)` statement."""
    layer: cst.BaseExpression      # the layer object expression (a Call, maybe a wrapper)
    container: cst.CSTNode         # cst.List, or the Module / IndentedBlock holding the statement
    index: int                     # position in the container
    style: str                     # "list", "add", "functional"
    statement: cst.SimpleStatementLine | None = None
    target: str | None = None      # functional: the name assigned
    input: str | None = None       # functional: the name passed in

    @property
    def cls(self) -> str | None:
        return class_name(self.layer)

    @property
    def inner(self) -> cst.Call | None:
        """The layer itself, inside a Bidirectional/TimeDistributed wrapper."""
        return unwrap(self.layer)


def class_name(node: cst.CSTNode | None) -> str | None:
    """`layers.Conv2D(...)` -> "Conv2D"; anything that is not a call of a name -> None."""
    if not isinstance(node, cst.Call):
        return None
    func = node.func
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None


def unwrap(node: cst.CSTNode | None) -> cst.Call | None:
    if class_name(node) in WRAPPERS and node.args and isinstance(node.args[0].value, cst.Call):
        return node.args[0].value
    return node if isinstance(node, cst.Call) else None


def _clean(comma):
    """A copy of a separator comma without the comment or blank lines it carried."""
    if isinstance(comma, cst.Comma) and isinstance(comma.whitespace_after, cst.ParenthesizedWhitespace):
        return comma.with_changes(whitespace_after=comma.whitespace_after.with_changes(
            first_line=cst.TrailingWhitespace(), empty_lines=[]))
    return comma


def _separator(items, opening_ws) -> cst.Comma:
    """The comma that separates items here: copied from the sequence, else built from
    the whitespace after the opening bracket (one item per line stays so)."""
    for item in items[:-1]:
        if isinstance(item.comma, cst.Comma):
            return _clean(item.comma)
    if isinstance(opening_ws, cst.ParenthesizedWhitespace):
        return cst.Comma(whitespace_after=opening_ws.with_changes(
            first_line=cst.TrailingWhitespace(), empty_lines=[]))
    return cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))


def insert_item(items: list, pos: int, new, opening_ws=None) -> list:
    """Insert an Element/Arg/ImportAlias into a comma-separated sequence, formatted like its neighbours."""
    items = list(items)
    if not items:
        return [new.with_changes(comma=cst.MaybeSentinel.DEFAULT)]
    sep = _separator(items, opening_ws)
    if pos < len(items):
        items.insert(pos, new.with_changes(comma=sep))
        return items
    last = items[-1]
    if isinstance(last.comma, cst.Comma):
        # a trailing comma: the new last item takes it (without the old item's comment),
        # the old last item keeps its comment and gets the separator's indentation
        trailing = last.comma
        kept = sep
        if isinstance(trailing.whitespace_after, cst.ParenthesizedWhitespace) and \
                isinstance(sep.whitespace_after, cst.ParenthesizedWhitespace):
            kept = sep.with_changes(whitespace_after=sep.whitespace_after.with_changes(
                first_line=trailing.whitespace_after.first_line,
                empty_lines=trailing.whitespace_after.empty_lines))
        items[-1] = last.with_changes(comma=kept)
        items.append(new.with_changes(comma=_clean(trailing)))
    else:
        items[-1] = last.with_changes(comma=sep)
        items.append(new.with_changes(comma=cst.MaybeSentinel.DEFAULT))
    return items


def _statement_ws(stmt: cst.SimpleStatementLine) -> cst.SimpleStatementLine:
    return stmt.with_changes(leading_lines=(), trailing_whitespace=cst.TrailingWhitespace())


@dataclass(frozen=True)
class _Param:
    """A binding by a function parameter: its value comes from the call sites or the default."""
    func: cst.FunctionDef
    param: cst.Param


@dataclass(frozen=True)
class _Loop:
    """A binding by `for name in [...]`: each element in turn."""
    node: cst.For


SCOPES = (cst.FunctionDef, cst.Lambda, cst.ClassDef)


class _Collect(cst.CSTVisitor):
    """One walk: every call (in source order), parents, bindings per scope, bodies."""

    def __init__(self, script: Script):
        self.s = script
        self.stack: list[cst.CSTNode] = []
        self.scopes: list[cst.CSTNode] = []
        self.globals: dict[int, set[str]] = {}

    def bind(self, name: str, value) -> None:
        s = self.s
        s.bindings.setdefault(name, []).append(value)
        scope = self.scopes[-1] if self.scopes else s.module
        if name in self.globals.get(id(scope), ()):
            scope = s.module     # `global name` in a function: the binding is the module's
        s.scoped.setdefault((id(scope), name), []).append(value)

    def on_visit(self, node):
        if self.stack:
            self.s.parent[id(node)] = self.stack[-1]
        self.stack.append(node)
        s = self.s
        if isinstance(node, cst.Call):
            s.calls.append(node)
        elif isinstance(node, cst.Assign):
            for target in node.targets:
                if isinstance(target.target, cst.Name):
                    self.bind(target.target.value, node.value)
                else:
                    for name in _names_in(target.target):
                        self.bind(name, None)
        elif isinstance(node, cst.AnnAssign) and isinstance(node.target, cst.Name):
            self.bind(node.target.value, node.value)
        elif isinstance(node, cst.For) and isinstance(node.target, cst.Name):
            self.bind(node.target.value, _Loop(node))
        elif isinstance(node, cst.Param) and self.scopes and isinstance(self.scopes[-1], cst.FunctionDef):
            self.bind(node.name.value, _Param(self.scopes[-1], node))
        elif isinstance(node, (cst.AugAssign, cst.For, cst.WithItem, cst.Param)):
            target = {cst.AugAssign: "target", cst.For: "target", cst.WithItem: "asname",
                      cst.Param: "name"}[type(node)]
            for name in _names_in(getattr(node, target)):
                self.bind(name, None)   # not a constant
        elif isinstance(node, cst.Return) and self.scopes and isinstance(self.scopes[-1], cst.FunctionDef):
            s.returns.setdefault(self.scopes[-1].name.value, []).append(node.value)
        elif isinstance(node, cst.Global) and self.scopes:
            self.globals.setdefault(id(self.scopes[-1]), set()).update(n.name.value for n in node.names)
        elif isinstance(node, cst.ImportFrom):
            s.imports_from.append(node)
        elif isinstance(node, cst.SimpleString):
            s.strings.append(node)
        elif isinstance(node, (cst.Module, cst.IndentedBlock)):
            s.bodies.append(node)
        if isinstance(node, SCOPES):
            self.scopes.append(node)
        return True

    def on_leave(self, original_node):
        self.stack.pop()
        if isinstance(original_node, SCOPES):
            self.scopes.pop()


def _names_in(node) -> list[str]:
    if node is None:
        return []
    if isinstance(node, cst.Name):
        return [node.value]
    if isinstance(node, cst.AsName):
        return _names_in(node.name)
    if isinstance(node, (cst.Tuple, cst.List)):
        return [n for el in node.elements for n in _names_in(el.value)]
    if isinstance(node, cst.StarredElement):
        return _names_in(node.value)
    return []


class _Apply(cst.CSTTransformer):
    def __init__(self, edits: dict[int, list[Callable]]):
        super().__init__()
        self.edits = edits

    def on_leave(self, original_node, updated_node):
        for edit in self.edits.get(id(original_node), ()):
            updated_node = edit(updated_node)
        return updated_node


class Script:
    """A parsed source plus the edits one rule collects; `render()` gives the new source.

    Edits are keyed by the identity of the original node, applied in one pass, so a
    rule can change a constant, a call and insert layers without them tripping up
    each other; everything not edited is printed back byte for byte."""

    def __init__(self, source: str, context: Context | None = None):
        self.source = source
        self.module = cst.parse_module(source)
        self.context = context or Context()
        self.parent: dict[int, cst.CSTNode] = {}
        self.calls: list[cst.Call] = []
        self.bindings: dict[str, list] = {}
        self.scoped: dict[tuple[int, str], list] = {}   # (id of scope, name) -> values bound there
        self.returns: dict[str, list] = {}              # function name -> the values it returns
        self.imports_from: list[cst.ImportFrom] = []
        self.strings: list[cst.SimpleString] = []
        self.bodies: list[cst.CSTNode] = []
        self.module.visit(_Collect(self))
        self._edits: dict[int, list[Callable]] = {}
        self._inserts: dict[int, tuple[cst.CSTNode, list]] = {}
        self._changed: dict[int, object] = {}
        self._names: set[str] = set()
        self._imported: set[tuple[str, str]] = set()
        self._chains: list[list[Slot]] | None = None
        singles = sum(1 for s in self.strings if s.quote == "'")
        self.quote = "'" if singles > len(self.strings) - singles else '"'

    # -- reading -------------------------------------------------------------
    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def layers(self, classes: set[str]) -> list[cst.Call]:
        return [c for c in self.calls if class_name(c) in classes]

    def method_calls(self, *methods: str) -> list[cst.Call]:
        return [c for c in self.calls
                if isinstance(c.func, cst.Attribute) and c.func.attr.value in methods]

    @staticmethod
    def arg(call: cst.Call, pos: int | None, keyword: str) -> cst.Arg | None:
        """The argument given by keyword, else the positional one at `pos`."""
        for a in call.args:
            if a.keyword is not None and a.keyword.value == keyword:
                return a
        n = 0
        for a in call.args:
            if a.star or a.keyword is not None:
                return None     # after *args or a keyword the positions are unknown
            if n == pos:
                return a
            n += 1
        return None

    def scope_of(self, node: cst.CSTNode) -> cst.CSTNode:
        """The function, lambda or class whose body holds `node`, else the module (a
        parameter default or a decorator belongs to the scope around the def)."""
        child, current = node, self.parent.get(id(node))
        while current is not None:
            if isinstance(current, SCOPES) and child is current.body:
                return current
            child, current = current, self.parent.get(id(current))
        return self.module

    def lookup(self, name: cst.Name) -> list | None:
        """What `name` is bound to where it is used: the innermost scope that binds it
        (class bodies are not seen from their methods), else None."""
        scope, first = self.scope_of(name), True
        while True:
            values = self.scoped.get((id(scope), name.value))
            if values is not None and (first or not isinstance(scope, cst.ClassDef)):
                return values
            if scope is self.module:
                return None
            scope, first = self.scope_of(scope), False

    def arguments(self, bound: _Param) -> list | None:
        """The values a parameter takes: at each call site of its function the argument
        given, else the default. None when a call cannot be read (*args, a method)."""
        func, param = bound.func, bound.param
        if isinstance(self.scope_of(func), cst.ClassDef) or param in (func.params.star_arg, func.params.star_kwarg):
            return None
        positional = [*func.params.posonly_params, *func.params.params]
        index = positional.index(param) if param in positional else None
        name = param.name.value
        values = []
        for call in self.calls:
            if not (isinstance(call.func, cst.Name) and call.func.value == func.name.value):
                continue
            if any(a.star for a in call.args):
                return None
            given = [a.value for a in call.args if a.keyword is not None and a.keyword.value == name]
            plain = [a.value for a in call.args if a.keyword is None]
            if not given and index is not None and index < len(plain):
                given = [plain[index]]
            if not given and param.default is None:
                return None
            values.append(given[0] if given else param.default)
        if not values:
            return [param.default] if param.default is not None else None
        return values

    def leaves(self, expr, depth: int = 0) -> list:
        """Every value an expression may stand for, names followed to where they are set:
        a constant (bound once in its scope), a parameter (its call-site arguments or its
        default), a `for` loop's list (each element). A name that cannot be followed is a
        leaf itself."""
        if depth > 12:
            return [expr]
        if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name):
            default = self.option_default(expr)
            return self.leaves(default, depth + 1) if default is not None else [expr]
        if not isinstance(expr, cst.Name):
            return [expr]
        values = self.lookup(expr)
        if not values or len(values) != 1 or values[0] is None:
            return [expr]
        bound = values[0]
        if isinstance(bound, _Param):
            found = self.arguments(bound)
        elif isinstance(bound, _Loop):
            seq = self.resolve(bound.node.iter)
            found = [el.value for el in seq.elements] if isinstance(seq, (cst.List, cst.Tuple)) \
                and not any(isinstance(el, cst.StarredElement) for el in seq.elements) else None
        else:
            found = [bound]
        if not found:
            return [expr]
        out, seen = [], set()
        for value in found:
            for leaf in self.leaves(value, depth + 1):
                if id(leaf) not in seen:
                    seen.add(id(leaf))
                    out.append(leaf)
        return out

    def option_default(self, expr: cst.Attribute):
        """`args.epochs` where `args = parser.parse_args()`: the `default=` of the one
        add_argument("--epochs", ...) (what the script gets when it runs without options)."""
        holder = self.resolve(expr.value)
        if isinstance(holder, cst.Call) and isinstance(holder.func, cst.Name) \
                and len(self.returns.get(holder.func.value, [])) == 1:
            holder = self.resolve(self.returns[holder.func.value][0])   # args = get_args()
        if not (isinstance(holder, cst.Call) and isinstance(holder.func, cst.Attribute)
                and holder.func.attr.value == "parse_args"):
            return None
        found = []
        for call in self.method_calls("add_argument"):
            dest = self.arg(call, None, "dest")
            if dest is not None:
                name = getattr(dest.value, "evaluated_value", None)
            else:
                options = [a.value.evaluated_value for a in call.args
                           if a.keyword is None and isinstance(a.value, cst.SimpleString)]
                longs = [o for o in options if str(o).startswith("--")]
                name = str((longs or options or [""])[0]).lstrip("-").replace("-", "_")
            if name == expr.attr.value:
                found.append(call)
        default = self.arg(found[0], None, "default") if len(found) == 1 else None
        return default.value if default is not None else None

    def resolve(self, expr):
        """Follow a name to the one value it stands for (a constant, a parameter given
        one value); the expression itself when it stands for none or several."""
        found = self.leaves(expr)
        return found[0] if len(found) == 1 else expr

    def numbers(self, expr) -> list[cst.Integer | cst.Float]:
        """The number literals an argument stands for: itself, its constant, a tuple's
        items, each value of a loop or of the calls of a function."""
        out = []
        for leaf in self.leaves(expr):
            if isinstance(leaf, (cst.Integer, cst.Float)):
                out.append(leaf)
            elif isinstance(leaf, (cst.Tuple, cst.List)):
                for el in leaf.elements:
                    found = self.numbers(el.value)
                    if len(found) != 1:
                        return []
                    out += found
            else:
                return []
        return out

    def scalars(self, expr) -> list[cst.Integer | cst.Float]:
        """The number literals a scalar argument stands for (several through a loop or
        several calls), or [] when any of its values is not a literal number."""
        found = self.leaves(expr) if expr is not None else []
        return found if found and all(isinstance(x, (cst.Integer, cst.Float)) for x in found) else []

    def number(self, expr) -> cst.Integer | cst.Float | None:
        """The one number literal an argument stands for (itself or its constant), else None."""
        found = self.scalars(expr)
        return found[0] if len(found) == 1 else None

    @staticmethod
    def value(literal: cst.Integer | cst.Float):
        return literal.evaluated_value

    def names_layers(self) -> bool:
        """Does the script give its layers names (then new layers get unique ones)?"""
        return any(self.arg(call, None, "name") for chain in self.chains() for slot in chain
                   for call in (slot.layer, slot.inner) if isinstance(call, cst.Call))

    def layer_name(self, kind: str) -> str:
        base = f"tweak_{kind}_{self.context.counter}"
        taken = {s.evaluated_value for s in self.strings if isinstance(s.evaluated_value, str)} | self._names
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    # -- the models in the script --------------------------------------------
    def chains(self) -> list[list[Slot]]:
        """Every model's layers in order: Sequential lists, model.add runs, functional runs."""
        if self._chains is not None:
            return self._chains
        chains: list[list[Slot]] = []
        for call in self.calls:
            if class_name(call) == "Sequential":
                a = self.arg(call, 0, "layers")
                if a is not None and isinstance(a.value, cst.List):
                    chains.append([Slot(el.value, a.value, i, "list")
                                   for i, el in enumerate(a.value.elements)])
        for body in self.bodies:
            groups: dict[str, list[Slot]] = {}
            for i, stmt in enumerate(body.body):
                if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
                    continue
                small = stmt.body[0]
                if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
                    call = small.value
                    if isinstance(call.func, cst.Attribute) and call.func.attr.value == "add" \
                            and len(call.args) == 1 and isinstance(call.args[0].value, cst.Call):
                        key = "add:" + self.code(call.func.value)
                        groups.setdefault(key, []).append(
                            Slot(call.args[0].value, body, i, "add", statement=stmt))
                elif isinstance(small, cst.Assign) and len(small.targets) == 1 \
                        and isinstance(small.value, cst.Call) and isinstance(small.value.func, cst.Call) \
                        and class_name(small.value.func):
                    target = small.targets[0].target
                    args = small.value.args
                    groups.setdefault("functional", []).append(Slot(
                        small.value.func, body, i, "functional", statement=stmt,
                        target=target.value if isinstance(target, cst.Name) else None,
                        input=args[0].value.value if len(args) == 1 and isinstance(args[0].value, cst.Name)
                        else None))
            chains += [g for g in groups.values() if len(g) > 1]
        self._chains = chains
        return chains

    def model(self) -> list[Slot]:
        """The main model: the chain with the most Dense/conv/recurrent layers."""
        def weight(chain):
            return sum(1 for s in chain if {s.cls, class_name(s.inner)} & (CONV | RECURRENT | {"Dense"}))
        chains = [c for c in self.chains() if weight(c)]
        return max(chains, key=weight) if chains else []

    @staticmethod
    def output_index(chain: list[Slot]) -> int | None:
        """Index of the output layer: the last Dense."""
        for i in range(len(chain) - 1, -1, -1):
            if class_name(chain[i].inner) == "Dense":
                return i
        return None

    def compiled_models(self) -> set[str]:
        """Receivers of .compile(...): the Keras models (not a scaler that also has .fit)."""
        return {self.code(c.func.value) for c in self.method_calls("compile")}

    # -- edits ---------------------------------------------------------------
    def edit(self, node: cst.CSTNode, fn: Callable) -> None:
        self._edits.setdefault(id(node), []).append(fn)

    def replace(self, node: cst.CSTNode, new: cst.CSTNode) -> None:
        self.edit(node, lambda _updated: new)

    def set_number(self, literal, new_value) -> tuple[object, object]:
        """Change a number literal (once, even when several layers share its constant)."""
        old = self.value(literal)
        if id(literal) in self._changed:
            return old, self._changed[id(literal)]
        self._changed[id(literal)] = new_value
        text = repr(new_value) if isinstance(new_value, float) else str(new_value)
        kind = cst.Float if isinstance(new_value, float) else cst.Integer
        self.edit(literal, lambda updated: kind(value=text, lpar=updated.lpar, rpar=updated.rpar))
        return old, new_value

    def string(self, text: str) -> str:
        """Code of a string literal in the script's quote style."""
        return f"{self.quote}{text}{self.quote}"

    def kwarg(self, name: str, value_code: str) -> cst.Arg:
        return cst.parse_expression(f"f({name}={value_code})").args[0]

    def with_kwarg(self, call: cst.Call, name: str, value_code: str) -> cst.Call:
        """`call` with keyword `name` set (replaced where given, else appended)."""
        existing = self.arg(call, None, name)
        new_value = cst.parse_expression(value_code)
        if existing is not None:
            args = [a.with_changes(value=new_value) if a is existing else a for a in call.args]
            return call.with_changes(args=args)
        return call.with_changes(args=insert_item(call.args, len(call.args), self.kwarg(name, value_code),
                                                  call.whitespace_before_args))

    def without_kwargs(self, call: cst.Call, names: set[str]) -> cst.Call:
        args = [a for a in call.args if a.keyword is None or a.keyword.value not in names]
        if len(args) == len(call.args):
            return call
        if args:
            args[-1] = args[-1].with_changes(comma=call.args[-1].comma)
        return call.with_changes(args=args)

    def insert(self, slot: Slot, layer: cst.BaseExpression, after: bool = True) -> bool:
        """Insert a layer into the model right after (or before) `slot`, in the slot's style."""
        pos = slot.index + 1 if after else slot.index
        if slot.style == "list":
            item = cst.Element(value=layer)
        elif slot.style == "add":
            call = slot.statement.body[0].value
            item = _statement_ws(slot.statement.with_changes(body=[cst.Expr(
                call.with_changes(args=[call.args[0].with_changes(value=layer)]))]))
        else:
            name = slot.target if after else slot.input
            if not name:
                return False
            item = _statement_ws(slot.statement.with_changes(body=[cst.Assign(
                targets=[cst.AssignTarget(cst.Name(name))],
                value=cst.Call(func=layer, args=[cst.Arg(cst.Name(name))]))]))
        self._insert(slot.container, pos, item)
        return True

    def _insert(self, container: cst.CSTNode, pos: int, item) -> None:
        entry = self._inserts.setdefault(id(container), (container, []))
        entry[1].append((pos, len(entry[1]), item))

    def layer_ref(self, like: cst.BaseExpression, cls: str) -> cst.BaseExpression:
        """An expression naming layer class `cls` the way `like` names its class:
        `layers.Conv2D` -> `layers.MaxPooling2D`; a bare `Conv2D` -> `MaxPooling2D`,
        imported from where Conv2D comes from if it is not imported yet."""
        if isinstance(like, cst.Attribute):
            return like.with_changes(attr=cst.Name(cls))
        if isinstance(like, cst.Name):
            source = self.imported_from(like.value)
            if source is not None:
                module = source[0]
                if ".layers." in module:          # keras 2 submodules: keras.layers.convolutional
                    module = module.split(".layers.")[0] + ".layers"
                return cst.Name(self.ensure_import(module, cls, after=source[1]))
        return cst.Name(cls)

    def imported_from(self, name: str) -> tuple[str, cst.ImportFrom] | None:
        for imp in self.imports_from:
            if imp.relative or isinstance(imp.names, cst.ImportStar) or imp.module is None:
                continue
            for alias in imp.names:
                bound = alias.asname.name.value if alias.asname else self.code(alias.name)
                if bound == name:
                    return self.code(imp.module), imp
        return None

    def _position(self, node: cst.CSTNode) -> list[tuple[int, int]]:
        """Where a node's statement sits: (id of body, index) from the module down."""
        path = []
        child, current = node, self.parent.get(id(node))
        while current is not None:
            if isinstance(current, (cst.Module, cst.IndentedBlock)) and child in current.body:
                path.append((id(current), list(current.body).index(child)))
            child, current = current, self.parent.get(id(current))
        return path[::-1]

    def _before(self, stmt: cst.CSTNode, use: cst.CSTNode | None) -> bool:
        """Does statement `stmt` run before `use` in the same or an enclosing body?"""
        if use is None:
            return True
        first, second = self._position(stmt), self._position(use)
        if not first or len(second) < len(first) or first[:-1] != second[:len(first) - 1]:
            return False
        body, index = first[-1]
        return second[len(first) - 1][0] == body and index < second[len(first) - 1][1]

    def ensure_import(self, module: str, cls: str, after: cst.ImportFrom | None = None,
                      before: cst.CSTNode | None = None) -> str:
        """Make `cls` importable by its bare name; returns the name to use. The import
        goes after `after` (the import of a sibling class), else with the module's imports,
        but always before `before` (the first use), so the name exists when it runs."""
        for imp in self.imports_from:
            if imp.module is not None and not imp.relative and not isinstance(imp.names, cst.ImportStar) \
                    and self._before(imp, before):
                for alias in imp.names:
                    if self.code(alias.name) == cls:
                        return alias.asname.name.value if alias.asname else cls
        if (module, cls) in self._imported:
            return cls
        self._imported.add((module, cls))
        same = [imp for imp in self.imports_from if imp.module is not None and not imp.relative
                and self.code(imp.module) == module and not isinstance(imp.names, cst.ImportStar)
                and self._before(imp, before)]
        if same:
            def add_alias(updated: cst.ImportFrom) -> cst.ImportFrom:
                return updated.with_changes(names=insert_item(
                    updated.names, len(updated.names), cst.ImportAlias(cst.Name(cls)),
                    updated.lpar.whitespace_after if updated.lpar else None))
            self.edit(same[0], add_alias)
            return cls
        stmt = cst.parse_statement(f"from {module} import {cls}\n")
        anchor = self.parent.get(id(after)) if after is not None else None
        if anchor is not None and self._before(anchor, before):
            body = self.parent[id(anchor)]
            self._insert(body, list(body.body).index(anchor) + 1, stmt)
        else:
            body = self.module
            # the statement of the module that holds the first use: the import goes before it
            limit = self._position(before)[0][1] if before is not None and self._position(before) else len(body.body)
            last_import = [i for i, s in enumerate(body.body[:limit]) if isinstance(s, cst.SimpleStatementLine)
                           and isinstance(s.body[0], (cst.Import, cst.ImportFrom))]
            self._insert(body, last_import[-1] + 1 if last_import else min(limit, self._after_docstring()), stmt)
        return cls

    def _after_docstring(self) -> int:
        """The index after the module docstring and `from __future__` imports."""
        index = 0
        for i, stmt in enumerate(self.module.body):
            small = stmt.body[0] if isinstance(stmt, cst.SimpleStatementLine) else None
            if (i == 0 and isinstance(small, cst.Expr) and isinstance(small.value, cst.SimpleString)) or \
                    (isinstance(small, cst.ImportFrom) and small.module is not None
                     and self.code(small.module) == "__future__"):
                index = i + 1
            else:
                break
        return index

    # -- output --------------------------------------------------------------
    def render(self) -> str:
        edits = {k: list(v) for k, v in self._edits.items()}
        for key, (container, items) in self._inserts.items():
            ordered = sorted(items, key=lambda t: (t[0], t[1]), reverse=True)

            def insert_all(updated, ordered=ordered):
                if isinstance(updated, cst.List):
                    elements = list(updated.elements)
                    for pos, _, item in ordered:
                        elements = insert_item(elements, pos, item, updated.lbracket.whitespace_after)
                    return updated.with_changes(elements=elements)
                body = list(updated.body)
                for pos, _, item in ordered:
                    body.insert(pos, item)
                return updated.with_changes(body=body)
            edits.setdefault(key, []).insert(0, insert_all)
        return self.module.visit(_Apply(edits)).code


# ---------------------------------------------------------------------------
# spatial map sizes: a bigger kernel or another conv block must never shrink a map to
# zero ("Computed output size would be zero or negative"). Sizes are computed where
# the source gives them (an input shape, literal kernels, strides, padding); where it
# does not, the edit stands and the build check before training decides.

SHAPE_KEEPING = {"BatchNormalization", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
                 "SpatialDropout3D", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
                 "ThresholdedReLU", "Softmax", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                 "LayerNormalization", "Rescaling", "Normalization", "RandomFlip", "RandomRotation",
                 "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
                 "ActivityRegularization"}
INPUTS = {"Input", "InputLayer"}
TRANSPOSED = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Convolution2DTranspose",
              "Convolution3DTranspose"}


class _Unknown(Exception):
    """The sizes cannot be computed from the source."""


class _Empty(Exception):
    """A conv or pool would make a map of size <= 0."""


def _int(s: Script, expr, changed: dict) -> int:
    literal = s.number(expr)
    if literal is None:
        raise _Unknown
    value = changed.get(id(literal), s._changed.get(id(literal), s.value(literal)))
    if not isinstance(value, int):
        raise _Unknown
    return value


def _ints(s: Script, expr, changed: dict, n: int) -> list[int]:
    """An int or a tuple of ints as n values, one per dimension (pending edits applied)."""
    value = s.resolve(expr)
    if isinstance(value, (cst.Tuple, cst.List)):
        out = [_int(s, el.value, changed) for el in value.elements]
        if len(out) != n:
            raise _Unknown
        return out
    return [_int(s, expr, changed)] * n


def _shape(s: Script, expr) -> list[int | None]:
    """An input shape: a tuple of ints and Nones, constants and `size + (1,)` followed."""
    value = s.resolve(expr)
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add):
        return _shape(s, value.left) + _shape(s, value.right)
    if not isinstance(value, (cst.Tuple, cst.List)):
        raise _Unknown
    out: list[int | None] = []
    for el in value.elements:
        item = s.resolve(el.value) if isinstance(el, cst.Element) else None
        if isinstance(item, cst.Name) and item.value == "None":
            out.append(None)
        elif isinstance(item, cst.Integer):
            out.append(item.evaluated_value)
        else:
            raise _Unknown
    return out


def _input_shape(s: Script, call: cst.Call) -> list[int | None] | None:
    """The shape a layer declares (`input_shape=`, `Input(shape=)`), batch axis dropped."""
    for keyword, batched in (("input_shape", False), ("batch_input_shape", True), ("batch_shape", True)):
        a = s.arg(call, None, keyword)
        if a is not None:
            shape = _shape(s, a.value)
            return shape[1:] if batched else shape
    if class_name(call) in INPUTS:
        a = s.arg(call, 0, "shape")
        if a is None:
            raise _Unknown
        return _shape(s, a.value)
    return None


def _padding(s: Script, call: cst.Call, pos: int) -> str:
    a = s.arg(call, pos, "padding") or s.arg(call, None, "border_mode")   # border_mode: Keras 1
    if a is None:
        return "valid"
    value = s.resolve(a.value)
    if isinstance(value, cst.SimpleString) and value.evaluated_value in ("valid", "same", "causal"):
        return value.evaluated_value
    raise _Unknown


def _out_size(n: int | None, window: int, stride: int, padding: str, dilation: int = 1) -> int | None:
    """Keras' output length of a conv or pool window along one axis."""
    if n is None:
        return None
    if padding in ("same", "causal"):
        return -(-n // stride)
    return -(-(n - dilation * (window - 1)) // stride)


def _walk(s: Script, calls: list[cst.Call], changed: dict, dims: list | None = None) -> list | None:
    """The map's shape after these layers; raises _Empty where a conv or pool makes a
    map of size <= 0. None where it stops at a layer whose effect on the map is not
    known (Flatten, Dense, Reshape, ...): the sizes after it are not checked."""
    for call in calls:
        cls = class_name(call) or ""
        declared = _input_shape(s, call)
        if declared is not None:
            dims = declared
        if cls in INPUTS or cls in SHAPE_KEEPING:
            continue
        if cls not in CONV | DEPTHWISE | POOL or cls in TRANSPOSED or dims is None \
                or s.arg(call, None, "data_format") is not None:
            return None
        rank = next((int(d) for d in "123" if f"{d}D" in cls), None)
        spatial = dims[:-1]
        if rank != len(spatial):
            raise _Unknown
        if cls in POOL:
            size = s.arg(call, 0, "pool_size")
            window = _ints(s, size.value, changed, rank) if size is not None else [2] * rank
            strides_arg = s.arg(call, 1, "strides")
            value = s.resolve(strides_arg.value) if strides_arg is not None else None
            strides = window if value is None or (isinstance(value, cst.Name) and value.value == "None") \
                else _ints(s, strides_arg.value, changed, rank)
            padding, dilation = _padding(s, call, 2), [1] * rank
        else:
            first = 0 if cls in DEPTHWISE else 1
            kernel = s.arg(call, first, "kernel_size")
            if kernel is None:
                raise _Unknown
            window = _ints(s, kernel.value, changed, rank)
            strides_arg = s.arg(call, first + 1, "strides") or s.arg(call, None, "subsample")
            strides = _ints(s, strides_arg.value, changed, rank) if strides_arg is not None else [1] * rank
            padding = _padding(s, call, first + 2)
            dilation_arg = s.arg(call, 5, "dilation_rate")
            dilation = _ints(s, dilation_arg.value, changed, rank) if dilation_arg is not None else [1] * rank
        spatial = [_out_size(n, w, st, padding, d) for n, w, st, d in zip(spatial, window, strides, dilation)]
        if any(n is not None and n <= 0 for n in spatial):
            raise _Empty
        dims = spatial + dims[-1:]
    return dims


def _in_loop(s: Script, node: cst.CSTNode) -> bool:
    current = s.parent.get(id(node))
    while current is not None and not isinstance(current, SCOPES):
        if isinstance(current, (cst.For, cst.While)):
            return True
        current = s.parent.get(id(current))
    return False


def _chain_layers(s: Script, chain: list[Slot], inserted: dict,
                  upto: int | None = None) -> tuple[list[cst.Call], list | None]:
    """The layer calls of a model in order (`inserted`: id of a slot's layer -> calls
    that go after it; `upto`: the last slot taken), and the input shape a functional
    model starts from."""
    if any(_in_loop(s, slot.container) for slot in chain):
        raise _Unknown     # the loop repeats layers the chain holds once
    if chain[0].style == "add":
        receiver = s.code(chain[0].statement.body[0].value.func.value)
        if len([c for c in s.method_calls("add") if s.code(c.func.value) == receiver]) != len(chain):
            raise _Unknown     # the model gets layers from other places too
    dims = None
    if chain[0].style == "functional":
        for i in range(1, len(chain)):
            if chain[i].input is None or chain[i].input != chain[i - 1].target:
                chain = chain[:i]      # a branch: follow the first run only
                break
        first_input = chain[0].statement.body[0].value.args
        source = s.resolve(first_input[0].value) if first_input else None
        if class_name(source) not in INPUTS:
            raise _Unknown
        dims = _input_shape(s, source)
    calls = []
    for slot in chain[:None if upto is None else upto + 1]:
        if isinstance(slot.layer, cst.Call):
            calls.append(slot.layer)
        calls += inserted.get(id(slot.layer), [])
    return calls, dims


def maps_fit(s: Script, changed: dict | None = None, inserted: dict | None = None) -> bool:
    """False when pending edits (`changed`: id of a number literal -> its new value;
    `inserted`: layers added after a slot) make a map of size <= 0 in a model whose
    sizes can be computed; True otherwise (also when they cannot be computed)."""
    if any(x.evaluated_value == "channels_first" for x in s.strings if isinstance(x.evaluated_value, str)):
        return True
    for chain in s.chains():
        try:
            calls, dims = _chain_layers(s, chain, inserted or {})
            _walk(s, calls, changed or {}, dims)
        except _Unknown:
            continue
        except _Empty:
            return False
    return True


def map_after(s: Script, chain: list[Slot], index: int) -> list | None:
    """The map's shape (spatial sizes, then channels) after layer `index` of a model,
    or None where it cannot be computed."""
    try:
        calls, dims = _chain_layers(s, chain, {}, upto=index)
        return _walk(s, calls, {}, dims)
    except (_Unknown, _Empty):
        return None


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
# rules that change only a number fit or the optimizer reads: the model builds as its
# parent did, so they need no build check (saves a TensorFlow start per tweak)
BUILDS_AS_BEFORE = {"epochs", "learning_rate"}
KERAS = ("cnn", "rnn", "mlp")


def rule(rule_id: str, label: str, *types: str):
    """Register a tweak rule: `fn(script)` collects edits and returns its label, or None
    when it does not apply."""
    def register(fn):
        if rule_id in REGISTRY:
            raise ValueError(f"tweak rule {rule_id!r} registered twice")
        REGISTRY[rule_id] = Rule(rule_id, label, types, fn, (fn.__doc__ or "").strip().split("\n")[0])
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


# -- Keras: training --------------------------------------------------------

def next_epochs(n: int) -> int:
    return n + max(2, n // 2)


# the position of `epochs` in fit(x, y, batch_size, epochs) and Keras 2's
# fit_generator(generator, steps_per_epoch, epochs)
EPOCHS_AT = {"fit": 3, "fit_generator": 2}


@rule("epochs", "epochs", *KERAS)
def more_epochs(s: Script) -> str | None:
    """Train longer: epochs 1→3, 2→4, 10→15 (a literal, its constant or the argument that
    feeds it; added when fit() has none). Keras 2's fit_generator and nb_epoch= too."""
    models = s.compiled_models()
    label = None
    for call in s.method_calls(*EPOCHS_AT):
        a = s.arg(call, EPOCHS_AT[call.func.attr.value], "epochs") or s.arg(call, None, "nb_epoch")
        if a is None:
            # fit() without epochs trains one; only on a compiled Keras model, not a scaler
            if s.code(call.func.value) not in models or any(x.star for x in call.args):
                continue
            s.replace(call, s.with_kwarg(call, "epochs", str(next_epochs(1))))
            label = label or f"epochs 1→{next_epochs(1)}"
            continue
        for literal in s.scalars(a.value):
            if not isinstance(s.value(literal), int) or s.value(literal) >= MAX_EPOCHS:
                continue
            old, new = s.set_number(literal, next_epochs(s.value(literal)))
            label = label or f"epochs {old}→{new}"
    return label


# -- CNN --------------------------------------------------------------------

@rule("filters", "filters x2", "cnn")
def more_filters(s: Script) -> str | None:
    """Double the filters of every convolution."""
    changed = False
    for call in s.layers(CONV):
        for literal in s.scalars(getattr(s.arg(call, 0, "filters"), "value", None)):
            if isinstance(s.value(literal), int) and s.value(literal) < MAX_FILTERS:
                s.set_number(literal, s.value(literal) * 2)
                changed = True
    return "filters x2" if changed else None


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
    """Double the units of the hidden Dense layers (never the output layer)."""
    outputs = {id(chain[i].inner) for chain in s.chains() if (i := s.output_index(chain)) is not None}
    changed = False
    for call in s.layers({"Dense"}):
        act = s.arg(call, 1, "activation")
        if id(call) in outputs or (act is not None and isinstance(act.value, cst.SimpleString)
                                   and act.value.evaluated_value in ("softmax", "sigmoid")):
            continue
        for literal in s.scalars(getattr(s.arg(call, 0, "units"), "value", None)):
            if isinstance(s.value(literal), int) and s.value(literal) < MAX_UNITS:
                s.set_number(literal, s.value(literal) * 2)
                changed = True
    return "dense units x2" if changed else None


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
    """Double the units of every recurrent layer (also inside Bidirectional)."""
    changed = False
    for call in s.layers(RECURRENT):
        for literal in s.scalars(getattr(s.arg(call, 0, "units"), "value", None)):
            if isinstance(s.value(literal), int) and s.value(literal) < MAX_UNITS:
                s.set_number(literal, s.value(literal) * 2)
                changed = True
    return "units x2" if changed else None


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


@rule("learning_rate", "learning rate", *KERAS)
def usual_learning_rate(s: Script) -> str | None:
    """Set a learning rate that is off by more than ~3x back to the optimizer's usual value."""
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
          absent_default: dict[str, object] | None = None) -> str | None:
    """Change keyword `param` of every estimator of `classes`; where it is not given and
    the class has a known default, add it. Returns "param old→new" or None."""
    label = None
    for call in s.layers(classes):
        a = s.arg(call, None, param)
        if a is None:
            current = (absent_default or {}).get(class_name(call), default)
            if current is None or any(x.star for x in call.args):
                continue
            new = change(current)
            if new is None or new == current:
                continue
            s.replace(call, s.with_kwarg(call, param, repr(new)))
            label = label or f"{param} {current}→{new}"
            continue
        literal = s.number(a.value)
        if literal is None:
            continue
        new = change(s.value(literal))
        if new is None or new == s.value(literal):
            continue
        old, new = s.set_number(literal, new)
        label = label or f"{param} {old}→{new}"
    return label


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
    """Twice the trees of a forest or boosting model (default 100, AdaBoost 50, Bagging 10)."""
    classes = FORESTS | BOOSTING | {"AdaBoostClassifier", "AdaBoostRegressor", "BaggingClassifier",
                                    "BaggingRegressor"}
    defaults = {c: 100 for c in FORESTS | BOOSTING} | {"AdaBoostClassifier": 50, "AdaBoostRegressor": 50,
                                                        "BaggingClassifier": 10, "BaggingRegressor": 10}
    return _tune(s, classes, "n_estimators", lambda n: n * 2 if isinstance(n, int) and n < 2000 else None,
                 absent_default=defaults)


@rule("max_depth", "max_depth x2", "sklearn")
def deeper_trees(s: Script) -> str | None:
    """Deeper trees: max_depth x2 (gradient boosting's default 3 → 6; None stays unlimited)."""
    return _tune(s, TREES | FORESTS | BOOSTING, "max_depth",
                 lambda d: d * 2 if isinstance(d, int) and 0 < d < 64 else None,
                 absent_default={c: 3 for c in BOOSTING})


@rule("C", "C x10", "sklearn")
def less_regularisation(s: Script) -> str | None:
    """Less regularisation: C x10 (default 1.0) for SVMs and logistic regression."""
    classes = {"SVC", "SVR", "LinearSVC", "LinearSVR", "LogisticRegression", "NuSVR"}
    return _tune(s, classes, "C", lambda c: c * 10 if 0 < c < 1e4 else None, default=1.0)


@rule("gamma", "gamma → scale", "sklearn")
def gamma_scale(s: Script) -> str | None:
    """A hand-set numeric gamma back to "scale" (1 / (n_features * X.var()))."""
    label = None
    for call in s.layers({"SVC", "SVR", "NuSVC", "NuSVR", "OneClassSVM"}):
        literal = s.number(getattr(s.arg(call, None, "gamma"), "value", None))
        if literal is not None and id(literal) not in s._changed:
            s._changed[id(literal)] = "scale"
            s.replace(literal, cst.SimpleString(s.string("scale")))
            label = label or f"gamma {s.value(literal)}→scale"
    return label


@rule("max_iter", "max_iter x5", "sklearn")
def more_iterations(s: Script) -> str | None:
    """More solver iterations: max_iter x5 (LogisticRegression's default 100, MLP's 200)."""
    defaults = {"LogisticRegression": 100, "MLPClassifier": 200, "MLPRegressor": 200}
    classes = set(defaults) | {"SGDClassifier", "SGDRegressor", "LinearSVC", "Perceptron",
                               "HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}
    return _tune(s, classes, "max_iter", lambda n: n * 5 if isinstance(n, int) and 0 < n < 10000 else None,
                 absent_default=defaults)


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
    for call in s.layers(classes):
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
    """Twice the hidden units of an MLPClassifier/Regressor (default (100,))."""
    label = None
    for call in s.layers({"MLPClassifier", "MLPRegressor"}):
        a = s.arg(call, None, "hidden_layer_sizes")
        if a is None:
            s.replace(call, s.with_kwarg(call, "hidden_layer_sizes", "(200,)"))
            label = "hidden units x2"
            continue
        for literal in s.numbers(a.value):
            if isinstance(s.value(literal), int) and s.value(literal) < MAX_UNITS:
                s.set_number(literal, s.value(literal) * 2)
                label = "hidden units x2"
    return label


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


def unified_diff(old: str, new: str, path: str) -> str:
    """The change as a patch `git apply` takes: line endings as they are in the file
    (a CRLF script gives CRLF lines), a last line without a newline marked so."""
    out = []
    for line in difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                     fromfile=f"a/{path}", tofile=f"b/{path}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def read_source(path: Path) -> str:
    """The script's text exactly as stored: no newline translation (read_text would turn
    CRLF into LF and the written tweak would then change every line)."""
    return path.read_bytes().decode("utf-8")


# ---------------------------------------------------------------------------
# choosing the next rule from the history

def rule_of(record: dict) -> str | None:
    """The rule an attempt used: its `rule` field, else the first word of its `tweak`
    label (every rule's labels start with the same word: "epochs 1→3" is `epochs`)."""
    if record.get("rule") in REGISTRY:
        return record["rule"]
    words = str(record.get("tweak") or "").split()
    for r in REGISTRY.values():
        if words and words[0] == r.label.split()[0]:
            return r.id
    return None


def scores(history: list[dict]) -> dict[str, tuple[float, int]]:
    """rule id -> (mean accuracy gain over its parent, tries). See the module docstring."""
    accuracy = {r.get("attempt"): r.get("accuracy") for r in history
                if isinstance(r.get("accuracy"), (int, float))}
    gains: dict[str, list[float]] = {}
    for record in history:
        rid = rule_of(record)
        if rid is None or record.get("outcome") in ("baseline", "cached", BUILD_FAILED):
            continue   # a build failure is not retried on its parent, but says nothing of accuracy
        outcome = record.get("outcome")
        acc, parent_acc = record.get("accuracy"), accuracy.get(record.get("parent"))
        if outcome == "failed":
            gain = FAILED_GAIN
        elif isinstance(acc, (int, float)) and parent_acc is not None:
            gain = acc - parent_acc
        elif outcome == "stopped-early":
            gain = STOPPED_GAIN
        else:
            continue
        gains.setdefault(rid, []).append(gain)
    return {rid: (sum(g) / len(g), len(g)) for rid, g in gains.items()}


def ranked(model_type: str, history: list[dict], source: str | None = None) -> list[Rule]:
    """The rules for `model_type` (and what `source` holds besides), best first: mean gain,
    then fewer tries, then registry order."""
    rules = rules_for_script(model_type, source) if source is not None else rules_for(model_type)
    score = scores(history)
    order = {r.id: i for i, r in enumerate(rules)}
    return sorted(rules, key=lambda r: (-score.get(r.id, (0.0, 0))[0], score.get(r.id, (0.0, 0))[1], order[r.id]))


def choose(source: str, model_type: str, history: list[dict], parent: int | None,
           context: Context | None = None) -> Tweak | None:
    """The next tweak of `source` (the best so far, attempt `parent`), or None when none is left."""
    seen = {r.get("source_hash") for r in history if r.get("source_hash")} | {state.source_hash(source)}
    tried_here = {rule_of(r) for r in history if parent is not None and r.get("parent") == parent}
    for r in ranked(model_type, history, source):
        if r.id in tried_here:
            continue
        result = attempt(r.id, source, context)
        if result is not None and state.source_hash(result.source) not in seen:
            return result
    return None


def best_attempt(run: dict, history: list[dict]) -> int:
    """The attempt the best source comes from: BEST_ATTEMPT, else the most accurate kept one."""
    if str(run.get("BEST_ATTEMPT", "")).isdigit():
        return int(run["BEST_ATTEMPT"])
    good = [r for r in history if r.get("outcome") in ("baseline", "kept")
            and isinstance(r.get("accuracy"), (int, float)) and isinstance(r.get("attempt"), int)]
    if good:
        return max(good, key=lambda r: (r["accuracy"], -r["attempt"]))["attempt"]
    return int(run["ATTEMPT"]) if str(run.get("ATTEMPT", "")).isdigit() else 1


# ---------------------------------------------------------------------------
# the command line

def list_rules(model_type: str | None) -> str:
    types = [model_type] if model_type else sorted({t for r in REGISTRY.values() for t in r.types})
    rows = [[t, r.id, r.label, r.doc] for t in types for r in rules_for(t)]
    return state.table(rows, ["type", "rule", "label", "what it does"])


def _standalone(args) -> int:
    """tweak.py FILE [--rule ID]: print the diff, write nothing."""
    path = Path(args.file)
    try:
        source = read_source(path)
    except UnicodeDecodeError:
        raise state.TweakopsError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise state.TweakopsError(f"cannot read {path}: {exc.strerror}; give the model's entry script") from None
    model_type = args.type
    if model_type is None:
        try:
            import detect_type
            model_type = detect_type.classify(source, str(path))
        except ImportError:
            raise state.TweakopsError("give the model type with --type cnn|rnn|mlp|sklearn") from None
    if args.rule:
        result = attempt(args.rule, source, Context(args.counter))
        if result is None:
            state.info(f"tweak: {args.rule} does not apply to {path}")
            return state.EXIT_NO_TWEAK_LEFT
    else:
        if not rules_for(model_type):
            raise state.TweakopsError(f"no tweak rules for model type {model_type!r}; use cnn, rnn, mlp or sklearn")
        result = choose(source, model_type, [], None, Context(args.counter))
        if result is None:
            state.info(f"tweak: no rule applies to {path}")
            return state.EXIT_NO_TWEAK_LEFT
    state.banner("tweak", f"{result.label} ({result.rule.id})")
    sys.stdout.write(unified_diff(source, result.source, path.name))
    return state.EXIT_OK


def cap_reached(cfg: dict, run: dict, history: list[dict]) -> str | None:
    """Why no tweak may start now (the one home of the loop's caps), or None.

    Jenkins' job 4 re-triggers itself, so the caps live here, not in a loop: the head
    being tweakops' own published commit (no loop on our own push), MAX_TWEAKS tweaks
    in this run, MAX_MINUTES since the run started.
    """
    if run.get("OWN_COMMIT") == "1":
        return "the fetched head is tweakops' own published commit: not tweaking it again"
    tweaks = sum(1 for r in history if r.get("run") == run.get("RUN_ID") and r.get("tweak") not in (None, "baseline")
                 and r.get("outcome") != BUILD_FAILED)   # discarded before training: no tweak spent
    if tweaks >= cfg["MAX_TWEAKS"]:
        return f"MAX_TWEAKS={cfg['MAX_TWEAKS']} tweaks tried in this run"
    started = run.get("RUN_STARTED_AT")
    if started:
        import datetime as dt

        elapsed = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(started)
        if elapsed.total_seconds() >= cfg["MAX_MINUTES"] * 60:
            return f"MAX_MINUTES={cfg['MAX_MINUTES']} reached"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Tweak the model source (Job 4).")
    parser.add_argument("file", nargs="?", help="tweak this file and print the diff (writes nothing)")
    parser.add_argument("--rule", help="the rule to apply (with FILE)")
    parser.add_argument("--type", choices=sorted({t for r in REGISTRY.values() for t in r.types}),
                        help="model type (with FILE or --list)")
    parser.add_argument("--counter", type=int, default=0, help="number used in new layer names (with FILE)")
    parser.add_argument("--list", action="store_true", help="list the rules and exit")
    args = parser.parse_args(argv)
    if args.list:
        print(list_rules(args.type))
        return state.EXIT_OK
    if args.file:
        return _standalone(args)

    cfg = state.config()
    run = state.read_run(cfg)
    model_file, model_type = run.get("MODEL_FILE", ""), run.get("MODEL_TYPE", "")
    if not model_file or not model_type:
        raise state.TweakopsError(f"{state.run_env_path(cfg)} has no MODEL_FILE/MODEL_TYPE; run make detect first")
    if not rules_for(model_type):
        raise state.TweakopsError(f"no tweak rules for model type {model_type!r}; supported: cnn, rnn, mlp, sklearn")
    checkout_file = Path(cfg["CHECKOUT_DIR"]) / model_file
    best_file = state.state_dir(cfg) / "best" / Path(model_file).name
    source_file = best_file if best_file.is_file() else checkout_file
    try:
        source = read_source(source_file)
    except UnicodeDecodeError:
        raise state.TweakopsError(f"{source_file} is not UTF-8 text; save it as UTF-8") from None
    except OSError:
        raise state.TweakopsError(f"{source_file} is missing; run make fetch (and make detect) first") from None
    try:
        cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise state.TweakopsError(f"{source_file}:{exc.raw_line}: does not parse; fix the source") from None

    history = state.read_history(cfg)
    stop = cap_reached(cfg, run, history)
    if stop:
        state.info(f"tweak: {stop}")
        return state.EXIT_NO_TWEAK_LEFT
    parent = best_attempt(run, history)
    number = state.counter(cfg) + 1
    check = buildcheck.check if cfg["BUILD_CHECK"] else None
    result = tweak_checkout(cfg, run, source, history, parent, Context(number), check)
    if result is None:
        state.info(f"tweak: no tweak left for attempt {parent}: every {model_type} rule was tried "
                   f"on it or gives a source already trained")
        return state.EXIT_NO_TWEAK_LEFT

    attempts = [r.get("attempt") for r in history if isinstance(r.get("attempt"), int)]
    current = int(run["ATTEMPT"]) if str(run.get("ATTEMPT", "")).isdigit() else 0
    next_attempt = max([current, *attempts]) + 1
    state.bump_counter(cfg)
    # ATTEMPT stays the last trained one: train.py numbers the next attempt (the same max + 1)
    state.update_run(cfg, TWEAK=result.label, TWEAK_RULE=result.rule.id, TWEAK_PARENT=parent, STATUS="tweaked")
    sys.stdout.write(unified_diff(source, result.source, model_file))
    state.banner("tweak", f"attempt {next_attempt}: {result.label} (rule {result.rule.id}, "
                          f"from attempt {parent}, tweak #{number})")
    return state.EXIT_OK


def tweak_checkout(cfg: dict, run: dict, source: str, history: list[dict], parent: int,
                   context: Context, check: Callable[[dict, dict], str | None] | None) -> Tweak | None:
    """Write the next tweak of `source` (the best, attempt `parent`) into the checkout and
    return it, or None when none is left. A candidate `check` says does not build is
    put back (the checkout holds `source` again), recorded in the history as
    outcome build-failed with attempt null, so neither it nor its rule on this parent
    comes back, and the next candidate is tried: no training and no attempt spent."""
    model_file = run["MODEL_FILE"]
    checkout_file = Path(cfg["CHECKOUT_DIR"]) / model_file
    while True:
        result = choose(source, run["MODEL_TYPE"], history, parent, context)
        if result is None:
            return None
        state.atomic_write(checkout_file, result.source)
        try:
            needed = check is not None and result.rule.id not in BUILDS_AS_BEFORE
            reason = check(cfg, run) if needed else None
        except BaseException:
            state.atomic_write(checkout_file, source)
            raise
        if reason is None:
            return result
        state.atomic_write(checkout_file, source)
        record = {"attempt": None, "outcome": BUILD_FAILED, "tweak": result.label, "rule": result.rule.id,
                  "parent": parent, "source_hash": state.source_hash(result.source),
                  "diff": unified_diff(source, result.source, model_file), "reason": reason,
                  "run": run.get("RUN_ID"), "commit": run.get("COMMIT", ""), "started_at": state.now_iso()}
        state.append_history(cfg, record)
        history.append(record)
        state.info(f"tweak: {result.label} (rule {result.rule.id}) does not build, discarded "
                   f"without training: {reason}")


if __name__ == "__main__":
    state.main(main)
