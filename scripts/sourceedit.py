"""The source editing under the tweak rules: a script parsed into a concrete syntax
tree (libcst), what it holds, and the edits one rule collects.

A rule (scripts/rules.py) reads a Script and collects edits; `Script.render()` applies
them in one pass and prints everything else back byte for byte, so comments and
formatting survive and the diff a person reviews shows only the change. No sed, no
regular expressions on source, no line numbers. Line endings stay as they are (a CRLF
script stays CRLF; unified_diff shows only the change).

A Script understands the ways scripts are written: `Sequential([...])` lists,
`model.add(...)`, the functional API (`x = layers.Conv2D(...)(x)`), positional and
keyword arguments, values held in constants (`FILTERS = 32 ... Conv2D(FILTERS, 3)`
changes the constant), `tf.keras.layers.X`, `keras.layers.X`, `layers.X`, bare
imports (a new layer class is added to the `from ... import` line) and old aliases
(`Convolution2D`). A value is followed to where it is set: a module constant, a
function parameter (its call-site argument or its default: `train(model, EPOCHS)`,
`def build_model(filters=8)`) or the list a `for` loop walks, an argparse option's
default (`args.epochs`), a key of a dict literal (`CONFIG["units"]`, or keyword
arguments passed as `**params` from `params = {...}` / `dict(...)`), an environment
variable's default (`int(os.environ.get("EPOCHS", "3"))`, `float(os.getenv("LR",
1e-3))`: what runs, as tweakops passes an attempt only allow-listed variables and
TRAIN_ENV's; not followed where this process's environment sets the variable); the
edit is made there (a string default stays a string: "3" → "5"). A dict assigned to
by key anywhere (`CONFIG["units"] = 8`) is not followed.
Where the script names its layers, new layers are named `tweak_<kind>_<n>` with n the
tweak counter (Context.counter), so names stay unique.

Map sizes: maps_fit and map_after compute the spatial map sizes where the source
gives them (the input shape, the kernels, strides and padding of the conv/pool chain),
so a bigger kernel or another conv block never makes a map of size 0.

Context is what a rule may need besides the source: the counter for new layer names
and the step sizes the chooser asks for (bold, epochs, lr_scale); every default keeps
the rules' plain step.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import libcst as cst

# ---------------------------------------------------------------------------
# layer classes, by the last name of the call (`layers.Conv2D` -> Conv2D)
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


# how scripts read a setting from the environment: os.environ.get("EPOCHS", "3")
ENV_READS = {"os.environ.get", "environ.get", "os.getenv", "getenv"}


def _numeric(text: str, cast: type) -> bool:
    """Does int(text) / float(text) run and give a finite number?"""
    try:
        return math.isfinite(cast(text))
    except ValueError:
        return False


# ---------------------------------------------------------------------------
# the script being edited: what it holds, and the edits collected by one rule

@dataclass
class Context:
    """What a rule may need besides the source: `counter` names new layers
    (tweak_conv_<counter>); the rest are step sizes the chooser may ask for, each
    default the rule's plain step.

    bold: a bigger step (filters, units, n_estimators x4 instead of x2; C x100 instead
        of x10; max_iter x20 instead of x5; alpha, gamma, l2 ÷100 instead of ÷10;
        dropout rates to 0.1 instead of halved; epochs 10→20 instead of 10→15).
    epochs: the epochs rule sets the fit's epochs to exactly this (capped at the
        rule's maximum) instead of its own next step; bold does not change it.
    lr_scale: the learning_rate rule multiplies every learning rate by this (a log
        step: 10, 0.316, ...), instead of putting a rate that is far off back to the
        optimizer's usual value.
    """
    counter: int = 0
    bold: bool = False
    epochs: int | None = None
    lr_scale: float | None = None

    def __post_init__(self):
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"Context.epochs must be 1 or more, not {self.epochs}")
        if self.lr_scale is not None and not self.lr_scale > 0:
            raise ValueError(f"Context.lr_scale must be above 0, not {self.lr_scale}")


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
    if isinstance(node, cst.Subscript):     # CONFIG["units"] = 8: CONFIG is not a constant
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
        self.changed: dict[int, object] = {}   # id of a literal -> its new value (edited once)
        self.numeric_strings: dict[int, type] = {}   # id of a "3" read by int()/float() -> that type
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

    def arg(self, call: cst.Call, pos: int | None, keyword: str) -> cst.Arg | cst.DictElement | None:
        """The argument given by keyword (also a key of a `**params` dict), else the
        positional one at `pos`. Either way its `.value` is the value expression."""
        for a in call.args:
            if a.keyword is not None and a.keyword.value == keyword:
                return a
        for a in call.args:
            if a.star == "**":
                found = self.dict_entry(self.resolve(a.value), keyword)
                if found is not None:
                    return found
        n = 0
        for a in call.args:
            if a.star or a.keyword is not None:
                return None     # after *args or a keyword the positions are unknown
            if n == pos:
                return a
            n += 1
        return None

    @staticmethod
    def dict_entry(holder, key: str) -> cst.DictElement | cst.Arg | None:
        """The entry `key` of a dict literal (`{"units": 4}`) or a `dict(units=4)` call."""
        if isinstance(holder, cst.Dict):
            for el in holder.elements:
                if isinstance(el, cst.DictElement) and isinstance(el.key, cst.SimpleString) \
                        and el.key.evaluated_value == key:
                    return el
        elif isinstance(holder, cst.Call) and isinstance(holder.func, cst.Name) and holder.func.value == "dict":
            for a in holder.args:
                if a.keyword is not None and a.keyword.value == key:
                    return a
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
        if isinstance(expr, cst.Call):
            default = self.env_default(expr)
            return self.leaves(default, depth + 1) if default is not None else [expr]
        if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name):
            default = self.option_default(expr)
            return self.leaves(default, depth + 1) if default is not None else [expr]
        if isinstance(expr, cst.Subscript) and len(expr.slice) == 1 \
                and isinstance(expr.slice[0].slice, cst.Index) \
                and isinstance(expr.slice[0].slice.value, cst.SimpleString):
            entry = self.dict_entry(self.resolve(expr.value), expr.slice[0].slice.value.evaluated_value)
            return self.leaves(entry.value, depth + 1) if entry is not None else [expr]
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

    def env_default(self, call: cst.Call):
        """`int(os.environ.get("EPOCHS", "3"))`, `float(os.getenv("LR", 1e-3))`,
        `os.environ.get("UNITS", 64)`: the default, which is what the script runs with
        under tweakops (its runners pass an attempt only the allow-listed variables and
        TRAIN_ENV's); a string default counts as a number only under int() or float().
        None for any other call, and where this process's environment sets the variable
        (it may reach the script: the default would not be what runs)."""
        cast = None
        if isinstance(call.func, cst.Name) and call.func.value in ("int", "float") and len(call.args) == 1 \
                and call.args[0].keyword is None and call.args[0].star == "":
            cast = int if call.func.value == "int" else float
            arg = call.args[0].value
            inner = arg if isinstance(arg, cst.Call) else self.resolve(arg)
            if isinstance(inner, (cst.Integer, cst.Float)):   # int(RAW), RAW = os.environ.get("N", 3)
                return inner
            if not isinstance(inner, cst.Call):
                return None
            call = inner
        if self.code(call.func) not in ENV_READS or len(call.args) != 2 \
                or any(a.keyword is not None or a.star for a in call.args):
            return None
        name, default = call.args[0].value, self.resolve(call.args[1].value)
        if not isinstance(name, cst.SimpleString) or name.evaluated_value in os.environ:
            return None
        if isinstance(default, (cst.Integer, cst.Float)):
            return default
        if cast is not None and isinstance(default, cst.SimpleString) and _numeric(default.evaluated_value, cast):
            self.numeric_strings[id(default)] = cast
            return default
        return None

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
            if self.is_number(leaf):
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
        return found if found and all(self.is_number(x) for x in found) else []

    def is_number(self, leaf) -> bool:
        """A number literal, or an environment default's "3" read by int()/float()."""
        return isinstance(leaf, (cst.Integer, cst.Float)) or id(leaf) in self.numeric_strings

    def number(self, expr) -> cst.Integer | cst.Float | None:
        """The one number literal an argument stands for (itself or its constant), else None."""
        found = self.scalars(expr)
        return found[0] if len(found) == 1 else None

    def value(self, literal: cst.Integer | cst.Float | cst.SimpleString):
        """A number literal's value; an environment default's "3" under int() is 3."""
        if isinstance(literal, cst.SimpleString):
            return self.numeric_strings.get(id(literal), float)(literal.evaluated_value)
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
        if id(literal) in self.changed:
            return old, self.changed[id(literal)]
        if isinstance(literal, cst.SimpleString) and self.numeric_strings.get(id(literal)) is int:
            new_value = int(new_value)   # int("0.5") would not run: an int stays an int
        self.changed[id(literal)] = new_value
        text = repr(new_value) if isinstance(new_value, float) else str(new_value)
        if isinstance(literal, cst.SimpleString):   # an environment default: still a string
            self.edit(literal, lambda updated: updated.with_changes(
                value=f"{updated.prefix}{updated.quote}{text}{updated.quote}"))
            return old, new_value
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
        if existing is not None and any(a is existing for a in call.args):
            args = [a.with_changes(value=new_value) if a is existing else a for a in call.args]
            return call.with_changes(args=args)
        if existing is not None:    # a key of its **params dict: changed there
            self.replace(existing.value, new_value)
            return call
        return call.with_changes(args=insert_item(call.args, len(call.args), self.kwarg(name, value_code),
                                                  call.whitespace_before_args))

    def without_kwargs(self, call: cst.Call, names: set[str]) -> cst.Call:
        args = [a for a in call.args if a.keyword is None or a.keyword.value not in names]
        if len(args) == len(call.args):
            return call
        if args:
            args[-1] = args[-1].with_changes(comma=call.args[-1].comma)
        return call.with_changes(args=args)

    def insert(self, slot: Slot, layer: cst.BaseExpression, after: bool = True, target: str | None = None) -> bool:
        """Insert a layer into the model right after (or before) `slot`, in the slot's style.
        Functional: `name = Layer(...)(name)`, or `target = Layer(...)(name)` where given
        (the caller then feeds `target` on)."""
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
                targets=[cst.AssignTarget(cst.Name(target or name))],
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
# does not, the edit stands and its attempt decides (one that fails before its first
# training step is booked build-failed, no tweak spent: train.py).

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
    value = changed.get(id(literal), s.changed.get(id(literal), s.value(literal)))
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
# output

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

