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
           (DecisionTreeClassifier → RandomForestClassifier, import added)

The rules understand the ways scripts are written: `Sequential([...])` lists,
`model.add(...)`, the functional API (`x = layers.Conv2D(...)(x)`), positional and
keyword arguments, values held in constants (`FILTERS = 32 ... Conv2D(FILTERS, 3)`
changes the constant), `tf.keras.layers.X`, `keras.layers.X`, `layers.X`, bare
imports (a new layer class is added to the `from ... import` line) and old aliases
(`Convolution2D`). Where the script names its layers, new layers are named
`tweak_<kind>_<n>` with n the tweak counter, so names stay unique. A rule that does
not apply changes nothing; a result that does not compile is never written.

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

Reads:  run.env MODEL_FILE (relative to CHECKOUT_DIR), MODEL_TYPE, ATTEMPT, BEST_ATTEMPT;
        STATE_DIR/best/<basename of MODEL_FILE> (else the checkout file); history.jsonl;
        tweak_count
Writes: the checkout's MODEL_FILE (atomically), tweak_count + 1, run.env TWEAK (label),
        TWEAK_RULE (rule id), TWEAK_PARENT (best attempt), STATUS=tweaked (ATTEMPT is
        left to train.py, which numbers the attempt it runs);
        the unified diff against the best on stdout, one banner line on stderr
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

import state

# ---------------------------------------------------------------------------
# knobs of the rules
HIDDEN_UNITS = 64        # width of a new Dense layer when there is none to copy
DROPOUT_RATE = 0.3       # rate of a new Dropout layer
MAX_FILTERS = 512        # filters x2 stops here
MAX_UNITS = 1024         # units x2 stops here
MAX_EPOCHS = 200         # epochs stop growing here
FAILED_GAIN = -0.10      # score of a failed attempt (it did not even train)
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


class _Collect(cst.CSTVisitor):
    """One walk: every call (in source order), parents, single assignments, bodies."""

    def __init__(self, script: Script):
        self.s = script
        self.stack: list[cst.CSTNode] = []

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
                    s.bindings.setdefault(target.target.value, []).append(node.value)
                else:
                    for name in _names_in(target.target):
                        s.bindings.setdefault(name, []).append(None)
        elif isinstance(node, cst.AnnAssign) and isinstance(node.target, cst.Name):
            s.bindings.setdefault(node.target.value, []).append(node.value)
        elif isinstance(node, (cst.AugAssign, cst.For, cst.WithItem, cst.Param)):
            target = {cst.AugAssign: "target", cst.For: "target", cst.WithItem: "asname",
                      cst.Param: "name"}[type(node)]
            for name in _names_in(getattr(node, target)):
                s.bindings.setdefault(name, []).append(None)   # not a constant
        elif isinstance(node, cst.ImportFrom):
            s.imports_from.append(node)
        elif isinstance(node, cst.SimpleString):
            s.strings.append(node)
        elif isinstance(node, (cst.Module, cst.IndentedBlock)):
            s.bodies.append(node)
        return True

    def on_leave(self, original_node):
        self.stack.pop()


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

    def resolve(self, expr):
        """Follow a name to the one value it is ever given (a module constant)."""
        for _ in range(5):
            if not isinstance(expr, cst.Name):
                return expr
            values = self.bindings.get(expr.value, [])
            if len(values) != 1 or values[0] is None:
                return expr
            expr = values[0]
        return expr

    def numbers(self, expr) -> list[cst.Integer | cst.Float]:
        """The number literals an argument stands for: itself, its constant, a tuple's items."""
        expr = self.resolve(expr)
        if isinstance(expr, (cst.Integer, cst.Float)):
            return [expr]
        if isinstance(expr, (cst.Tuple, cst.List)):
            out = []
            for el in expr.elements:
                found = self.numbers(el.value)
                if len(found) != 1:
                    return []
                out += found
            return out
        return []

    def number(self, expr) -> cst.Integer | cst.Float | None:
        """The one number literal an argument stands for (itself or its constant), else None."""
        expr = self.resolve(expr) if expr is not None else None
        return expr if isinstance(expr, (cst.Integer, cst.Float)) else None

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

    def ensure_import(self, module: str, cls: str, after: cst.ImportFrom | None = None) -> str:
        """Make `cls` importable by its bare name; returns the name to use."""
        for imp in self.imports_from:
            if imp.module is not None and not imp.relative and not isinstance(imp.names, cst.ImportStar):
                for alias in imp.names:
                    if self.code(alias.name) == cls:
                        return alias.asname.name.value if alias.asname else cls
        if (module, cls) in self._imported:
            return cls
        self._imported.add((module, cls))
        same = [imp for imp in self.imports_from if imp.module is not None and not imp.relative
                and self.code(imp.module) == module and not isinstance(imp.names, cst.ImportStar)]
        if same:
            def add_alias(updated: cst.ImportFrom) -> cst.ImportFrom:
                return updated.with_changes(names=insert_item(
                    updated.names, len(updated.names), cst.ImportAlias(cst.Name(cls)),
                    updated.lpar.whitespace_after if updated.lpar else None))
            self.edit(same[0], add_alias)
            return cls
        stmt = cst.parse_statement(f"from {module} import {cls}\n")
        anchor = self.parent.get(id(after)) if after is not None else None
        if anchor is not None:
            body = self.parent[id(anchor)]
            self._insert(body, list(body.body).index(anchor) + 1, stmt)
        else:
            body = self.module
            last_import = [i for i, s in enumerate(body.body) if isinstance(s, cst.SimpleStatementLine)
                           and isinstance(s.body[0], (cst.Import, cst.ImportFrom))]
            self._insert(body, last_import[-1] + 1 if last_import else 0, stmt)
        return cls

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
# the registry: one place, in priority order (the prior of the chooser)

@dataclass(frozen=True)
class Rule:
    id: str                     # stable, recorded in run.env TWEAK_RULE and history `rule`
    label: str                  # short human label (the rule may add detail: "epochs 1→3")
    types: tuple[str, ...]      # model types it applies to
    fn: Callable[[Script], str | None] = field(repr=False)  # edits the script; label or None
    doc: str = ""


REGISTRY: dict[str, Rule] = {}
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


# -- Keras: training --------------------------------------------------------

def next_epochs(n: int) -> int:
    return n + max(2, n // 2)


@rule("epochs", "epochs", *KERAS)
def more_epochs(s: Script) -> str | None:
    """Train longer: epochs 1→3, 2→4, 10→15 (a literal or its constant; added when fit() has none)."""
    models = s.compiled_models()
    label = None
    for call in s.method_calls("fit", "fit_generator"):
        a = s.arg(call, 3, "epochs")
        if a is None:
            # fit() without epochs trains one; only on a compiled Keras model, not a scaler
            if s.code(call.func.value) not in models or any(x.star for x in call.args):
                continue
            s.replace(call, s.with_kwarg(call, "epochs", str(next_epochs(1))))
            label = label or f"epochs 1→{next_epochs(1)}"
            continue
        literal = s.number(a.value)
        if literal is None or not isinstance(s.value(literal), int) or s.value(literal) >= MAX_EPOCHS:
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
        literal = s.number(getattr(s.arg(call, 0, "filters"), "value", None))
        if literal is not None and isinstance(s.value(literal), int) and s.value(literal) < MAX_FILTERS:
            s.set_number(literal, s.value(literal) * 2)
            changed = True
    return "filters x2" if changed else None


KERNEL_STEP = {3: 5, 5: 7}


@rule("kernel", "kernel", "cnn")
def bigger_kernel(s: Script) -> str | None:
    """A bigger kernel: 3→5 (5→7), in ints and tuples alike."""
    label = None
    for call in s.layers(CONV | DEPTHWISE):
        a = s.arg(call, 0 if class_name(call) in DEPTHWISE else 1, "kernel_size")
        for literal in s.numbers(a.value) if a is not None else []:
            if s.value(literal) in KERNEL_STEP:
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
        if chain[i].cls in POOL | {"BatchNormalization", "Dropout", "Activation", "SpatialDropout2D"}:
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
        literal = s.number(getattr(s.arg(call, 0, "units"), "value", None))
        if literal is not None and isinstance(s.value(literal), int) and s.value(literal) < MAX_UNITS:
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
        literal = s.number(getattr(s.arg(call, 0, "units"), "value", None))
        if literal is not None and isinstance(s.value(literal), int) and s.value(literal) < MAX_UNITS:
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
        name = s.ensure_import(module, new_cls, after=imported[1] if imported else None)
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
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))


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
        if rid is None or record.get("outcome") in ("baseline", "cached"):
            continue
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


def ranked(model_type: str, history: list[dict]) -> list[Rule]:
    """The rules for `model_type`, best first: mean gain, then fewer tries, then registry order."""
    rules = rules_for(model_type)
    score = scores(history)
    order = {r.id: i for i, r in enumerate(rules)}
    return sorted(rules, key=lambda r: (-score.get(r.id, (0.0, 0))[0], score.get(r.id, (0.0, 0))[1], order[r.id]))


def choose(source: str, model_type: str, history: list[dict], parent: int | None,
           context: Context | None = None) -> Tweak | None:
    """The next tweak of `source` (the best so far, attempt `parent`), or None when none is left."""
    seen = {r.get("source_hash") for r in history if r.get("source_hash")} | {state.source_hash(source)}
    tried_here = {rule_of(r) for r in history if parent is not None and r.get("parent") == parent}
    for r in ranked(model_type, history):
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
        source = path.read_text(encoding="utf-8")
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
    tweaks = sum(1 for r in history if r.get("run") == run.get("RUN_ID") and r.get("tweak") not in (None, "baseline"))
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
        source = source_file.read_text(encoding="utf-8")
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
    result = choose(source, model_type, history, parent, Context(number))
    if result is None:
        state.info(f"tweak: no tweak left for attempt {parent}: every {model_type} rule was tried "
                   f"on it or gives a source already trained")
        return state.EXIT_NO_TWEAK_LEFT

    attempts = [r.get("attempt") for r in history if isinstance(r.get("attempt"), int)]
    current = int(run["ATTEMPT"]) if str(run.get("ATTEMPT", "")).isdigit() else 0
    next_attempt = max([current, *attempts]) + 1
    state.atomic_write(checkout_file, result.source)
    state.bump_counter(cfg)
    # ATTEMPT stays the last trained one: train.py numbers the next attempt (the same max + 1)
    state.update_run(cfg, TWEAK=result.label, TWEAK_RULE=result.rule.id, TWEAK_PARENT=parent, STATUS="tweaked")
    sys.stdout.write(unified_diff(source, result.source, model_file))
    state.banner("tweak", f"attempt {next_attempt}: {result.label} (rule {result.rule.id}, "
                          f"from attempt {parent}, tweak #{number})")
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
