"""The search: which change to try next, given what the best model so far lacks.

tweak.py asks `propose()` for the next candidate(s); this module decides, rules.py
edits. Deterministic for a given history (a rerun proposes the same thing).

1. **Diagnose the parent** (the best attempt so far): `diagnose.py` reads its learning
   curve — diverged, stuck at chance, overfit, still rising, underfit, plateau;
   scikit-learn: one class predicted, overfit or underfit (its training accuracy against
   held-out), not converged, below target.
2. **Rank the moves by the diagnosis** (`PLANS`): a move is a rule plus its step —
   `filters` (x2) or `filters:bold` (x4), `learning_rate` (back to the optimizer's usual
   value), `learning_rate:x0.1` (a log-scale step), `epochs` (to the epochs the curve's
   forecast and the remaining MAX_MINUTES allow, not +50%). The moves that fix a flaw
   come first (a Dropout(0.9) to 0.1, an l2 penalty ÷100, SGD → Adam, a learning rate
   50x off back to usual, sigmoid hidden layers → relu, a SimpleRNN → GRU: each only
   applies where the flaw is), then capacity, then the rest of the rules, so
   the space is never cut short by the plan.
   Where two or more plain flaws apply (FLAWS: a Dropout(0.9) and plain SGD on an
   underfit model; C=0.002 and gamma=0.5 on an SVC predicting one class; max_iter=2
   and C=1e-4 on a logistic regression that neither converged nor fits its training
   data), the first candidate fixes them all in one attempt.
3. **Plateaus are not dead ends**: a move tried on this parent is not tried there
   again, but a result within NOISE of its parent promotes the same rule's bold step;
   training longer that gained nothing (it continued from the parent's weights: the
   curve has flattened) sends the epochs moves to the end of that parent's plan instead;
   a capacity rule whose last step on the way to the parent gained less than WEAK_GAIN
   (filters 3→12: +0.016) has diminishing returns: the other kinds of capacity (another
   conv block, a dense layer, units) come before its next step;
   at chance, a flaw fix that left the model at chance is inconclusive, not worse (a few
   epochs can be too few for any setting to show): it is tried again trained longer;
   a scikit-learn model still predicting one class after a step of its regulariser
   went the right way too short: the same steps again on top (C 1e-4 → 0.01 → 1.0);
   once STALL moves from one parent gave nothing, or the single moves are used up,
   pairs of the plan's first moves are tried in one attempt ("filters:bold+epochs").
   "No tweak left" only when singles, bold steps and pairs are all used up.
4. Moves that hurt on this lineage (mean gain below -NOISE) go to the end, never out.
5. **Rounds**: `propose(..., k)` gives the first k distinct candidates, for runners
   that train several at once (PARALLEL); with one runner they train one by one.

Never proposes a source whose normalised hash is already in the history, nor one that
does not compile (rules.attempt checks both).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import diagnose
import rules
import state
from sourceedit import Context

NOISE = diagnose.NOISE
STALL = 3                 # moves from one parent without a gain before pairs are tried
MIN_EPOCH_STEP = 2        # "train longer" adds at least this many epochs
BUDGET_SHARE = 0.5        # an epochs move may spend at most this share of the remaining time
PAIR_FROM = 5             # pairs are made of the first this-many applicable moves of the plan
WEAK_GAIN = 3 * NOISE    # a capacity step that gained less than this had diminishing returns
FAILED_GAIN = -0.10       # gain booked for a failed attempt
STOPPED_GAIN = -0.05      # ... for one stopped early without an accuracy

# diagnosis -> moves, best first ("rule" or "rule:variant"; see VARIANTS)
_FLAWS = ["less_dropout:bold", "l2:bold", "optimizer", "learning_rate", "activation", "gated_cell"]
_CAPACITY_BOLD = ["filters:bold", "units:bold", "dense_units:bold", "conv_block", "stack_rnn",
                  "dense_layer", "bidirectional", "hidden_layer_sizes:bold", "kernel"]
_CAPACITY = ["filters", "units", "dense_units", "conv_block", "stack_rnn", "bidirectional",
             "dense_layer", "kernel"]
# scikit-learn capacity: less bias first (a projection that keeps more components, a boosting rate x10, tree
# limits back to their defaults, deeper trees, weaker regularisers, a hand-set gamma back to "scale", fewer
# neighbours), more trees last (they lower the variance, not the bias)
_SK_CAPACITY = ["n_components", "boost_rate", "tree_limits:bold", "max_depth:bold", "C:bold", "alpha:bold",
                "gamma", "n_neighbors", "var_smoothing:bold", "stronger_estimator", "max_iter", "n_estimators"]
PLANS: dict[str, list[str]] = {
    "diverged": ["learning_rate:x0.1", "optimizer", "batchnorm", "learning_rate:x0.01"],
    "stuck": ["optimizer", "learning_rate", "activation", "learning_rate:x10", "less_dropout:bold", "batchnorm",
              *_CAPACITY_BOLD, "epochs"],
    "rising": ["epochs", *_FLAWS, *_CAPACITY_BOLD],
    "underfit": [*_FLAWS, *_CAPACITY_BOLD, "epochs", "batchnorm", *_SK_CAPACITY],
    # more regularisation first (never a weaker penalty: less_dropout and l2 come in registry order, last)
    "overfit": ["dropout", "augment", "batchnorm", "stronger_estimator", "n_estimators", "gamma_step", "gamma",
                *_CAPACITY],
    "plateau": [*_FLAWS, *_CAPACITY, "batchnorm", "epochs", "learning_rate:x0.1"],
    "unknown": [],
    # a regulariser far too strong, else too little capacity (an MLP of 3 hidden units), else iterations
    "one-class": ["C:bold", "gamma_step:bold", "gamma", "hidden_layer_sizes:bold", "alpha:bold", "max_iter:bold",
                  "C", "stronger_estimator"],
    "not-converged": ["max_iter:bold", "C", "alpha", "stronger_estimator"],
    "below-target": ["stronger_estimator", "n_components", "n_estimators", "max_depth", "tree_limits", "C", "gamma",
                     "gamma_step", "hidden_layer_sizes", "criterion", "n_neighbors", "knn_weights", "alpha",
                     "max_iter"],
}
# the settings that are plainly off, by diagnosis: when two or more of them apply, the
# first candidate fixes them all at once (a Dropout(0.9) and plain SGD on an underfit
# model; C=0.002 and gamma=0.5 on an SVC that predicts one class)
FLAWS: dict[str, list[str]] = {
    "stuck": _FLAWS, "underfit": _FLAWS, "plateau": _FLAWS, "rising": [],
    "one-class": ["C:bold", "gamma_step:bold", "alpha:bold"],
}
CAPACITY_RULES = {m.split(":")[0] for m in _CAPACITY_BOLD + _CAPACITY + _SK_CAPACITY}
# a solver that stopped early on a model that cannot fit its own training data either: the
# iterations and the regulariser are both off, fixed in one attempt
FLAWS_NOT_CONVERGED_UNDERFIT = ["max_iter:bold", "C:bold", "alpha:bold"]
# rules whose step has a bold size (Context.bold): filters x4 instead of x2, C x100 instead of x10
STEPPED = {"epochs", "filters", "dense_units", "units", "less_dropout", "C", "n_estimators", "max_iter",
           "alpha", "gamma_step", "l2", "max_depth", "tree_limits", "hidden_layer_sizes", "var_smoothing"}
# variant -> the Context fields it sets
VARIANTS = {"": {}, "bold": {"bold": True}, "x0.1": {"lr_scale": 0.1}, "x0.01": {"lr_scale": 0.01},
            "x10": {"lr_scale": 10.0}}


@dataclass
class Candidate:
    move: str                 # "filters:bold", "epochs", "C:bold+gamma" (recorded as history `move`)
    rule: str                 # the rule id of its first part (run.env TWEAK_RULE)
    label: str                # what changed, for people ("filters 2→8 + epochs 3→12")
    source: str
    why: str                  # the parent's diagnosis line, and why this move
    diagnosis: str            # the diagnosis kind
    parent: int | None = None  # the attempt it starts from (tweak.py sets it)


def rule_of(record: dict) -> str | None:
    """The rule an attempt used: its `rule` field, else the first word of its `tweak`
    label (every rule's labels start with the same word: "epochs 1→3" is `epochs`)."""
    if record.get("rule") in rules.REGISTRY:
        return record["rule"]
    words = str(record.get("tweak") or "").split()
    for r in rules.REGISTRY.values():
        if words and words[0] == r.label.split()[0]:
            return r.id
    return None


def move_of(record: dict) -> str | None:
    """The move an attempt made: its `move` field, else its rule (older histories)."""
    return record.get("move") or rule_of(record)


def _accuracies(history: list[dict]) -> dict:
    return {r.get("attempt"): r.get("accuracy") for r in history
            if isinstance(r.get("accuracy"), (int, float)) and isinstance(r.get("attempt"), int)}


def gain_of(record: dict, accuracy: dict) -> float | None:
    """The accuracy gain an attempt gave over its parent (failed: FAILED_GAIN)."""
    outcome = record.get("outcome")
    if outcome in ("baseline", "cached", rules.BUILD_FAILED, "confirmation"):
        return None
    acc, parent_acc = record.get("accuracy"), accuracy.get(record.get("parent"))
    if outcome == "failed":
        return FAILED_GAIN
    if isinstance(acc, (int, float)) and parent_acc is not None:
        return acc - parent_acc
    return STOPPED_GAIN if outcome == "stopped-early" else None


def at_chance(record: dict, accuracy: dict, chance: float | None) -> bool:
    """The attempt and its parent both at chance (below diagnose.near_chance) and apart by
    less than half the width of that band (10 classes: 0.05; 4 classes: 0.09): the
    difference between two models that learnt next to nothing is noise, not a gain or a
    loss (RMSprop → Adam from 0.23 to 0.40 on 4 classes is a gain)."""
    acc, parent_acc = record.get("accuracy"), accuracy.get(record.get("parent"))
    if chance is None or not isinstance(acc, (int, float)) or parent_acc is None:
        return False
    below = diagnose.near_chance(chance)
    return acc < below and parent_acc < below and abs(acc - parent_acc) < (below - chance) / 2


def judged_gain(record: dict, accuracy: dict, chance: float | None) -> float | None:
    """gain_of, except that a gain measured between two models at chance (at_chance) is none."""
    gain = gain_of(record, accuracy)
    if gain is not None and record.get("outcome") != "failed" and at_chance(record, accuracy, chance):
        return 0.0
    return gain


def mean_gains(history: list[dict], chance: float | None = None) -> dict[str, float]:
    """move -> mean accuracy gain over its parent in past attempts (one measured between two
    models at chance, see at_chance, counts as no gain)."""
    accuracy = _accuracies(history)
    gains: dict[str, list[float]] = {}
    for record in history:
        gain = judged_gain(record, accuracy, chance)
        if gain is not None and move_of(record):
            gains.setdefault(move_of(record), []).append(gain)
    return {m: sum(g) / len(g) for m, g in gains.items()}


def plan(kind: str, applicable: list[str], history: list[dict], parent: int | None,
         chance: float | None = None) -> list[str]:
    """The single moves for a parent diagnosed `kind`, best first (see the docstring)."""
    moves = [m for m in PLANS.get(kind, []) if m.split(":")[0] in applicable]
    for rule_id in applicable:              # the rest of the rules, registry order: never cut short
        if rule_id not in moves:
            moves.append(rule_id)
    for m in list(moves):                   # every step rule also has its bold step, after it
        bold = f"{m.split(':')[0]}:bold"
        if ":" not in m and bold not in moves and m in STEPPED:
            moves.append(bold)
    accuracy = _accuracies(history)
    here = [r for r in history if parent is not None and r.get("parent") == parent]
    flattened = False
    for record in here:                     # within noise of the parent: its bold step next
        gain = gain_of(record, accuracy)
        move = move_of(record) or ""
        if gain is not None and move.split(":")[0] == "epochs" and gain <= NOISE:
            # it trained on from the parent's weights and gained nothing: the curve has
            # flattened, so training longer still comes last, not a bolder step of it
            flattened = True
        elif gain is not None and abs(gain) <= NOISE and ":" not in move and f"{move}:bold" in moves:
            moves.remove(f"{move}:bold")
            moves.insert(0, f"{move}:bold")
    if flattened:
        longer = [m for m in moves if m.split(":")[0] == "epochs"]
        moves = [m for m in moves if m not in longer] + longer
    weak = diminishing(history, parent, chance)
    others = [i for i, m in enumerate(moves) if m.split(":")[0] in CAPACITY_RULES - weak]
    if weak and others:                     # after the other kinds of capacity
        at = others[-1] + 1
        later = [m for m in moves[:at] if m.split(":")[0] in weak]
        moves = [m for m in moves[:at] if m not in later] + later + moves[at:]
    hurt = {m for m, g in mean_gains(history, chance).items() if g < -NOISE}
    return [m for m in moves if m not in hurt] + [m for m in moves if m in hurt]


def diminishing(history: list[dict], parent: int | None, chance: float | None = None) -> set[str]:
    """The capacity rules whose last step on the way to `parent` (its lineage) gained
    less than WEAK_GAIN: x2 filters again after 3→12 gave +0.016 is the same direction
    at diminishing returns, where depth (a conv block) or a dense layer has not been
    tried. A step between two models at chance counts as no gain (at_chance)."""
    accuracy = _accuracies(history)
    last: dict[str, float] = {}
    for record in lineage(history, parent):
        gain = judged_gain(record, accuracy, chance)
        if gain is None:
            continue
        for part in str(move_of(record) or "").split("+"):
            if part.split(":")[0] in CAPACITY_RULES:
                last[part.split(":")[0]] = gain
    return {rule_id for rule_id, gain in last.items() if gain < WEAK_GAIN}


def epochs_for(metrics: dict | None, facts: dict, remaining_s: float | None) -> int | None:
    """How many epochs an epochs move trains: the forecast, within the time left."""
    n = diagnose.epochs_trained(metrics)
    if n <= 0:
        return None
    want = facts.get("forecast_epochs")
    want = math.ceil(want * 1.25) if isinstance(want, int) else 2 * n
    cap = min(diagnose.FORECAST_REACH * n, rules.MAX_EPOCHS)
    spe = diagnose.seconds_per_epoch(metrics)
    if remaining_s is not None and spe:
        cap = min(cap, n + int(BUDGET_SHARE * remaining_s / spe))
    return max(n + MIN_EPOCH_STEP, min(want, cap))


def remaining_seconds(cfg: dict, run: dict) -> float | None:
    started = run.get("RUN_STARTED_AT")
    if not started:
        return None
    try:
        elapsed = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return None
    return max(0.0, cfg["MAX_MINUTES"] * 60 - elapsed)


def context_for(move: str, counter: int, epochs: int | None) -> Context:
    rule_id, _, variant = move.partition(":")
    fields = dict(VARIANTS.get(variant, {}))
    if rule_id == "epochs" and epochs:
        fields["epochs"] = epochs * (2 if variant == "bold" else 1)
    return Context(counter, **fields)


def _apply(moves: list[str], source: str, counter: int, epochs: int | None):
    """The source with every move of `moves` applied in turn, and the labels; None when
    one of them does not apply."""
    labels = []
    for move in moves:
        result = rules.attempt(move.split(":")[0], source, context_for(move, counter, epochs))
        if result is None:
            return None
        source = result.source
        labels.append(result.label)
    return source, " + ".join(merged(labels))


def merged(labels: list[str]) -> list[str]:
    """Two steps of one setting in one attempt as one change: "C 0.0001→0.01" then
    "C 0.01→1.0" is "C 0.0001→1.0"."""
    out: list[str] = []
    for label in labels:
        before, _, after = label.rpartition("→")
        for i, earlier in enumerate(out):
            start, _, end = earlier.rpartition("→")
            head = before[:-len(end)] if end and before.endswith(end) else ""
            if head.endswith(" ") and start.startswith(head):
                out[i] = f"{start}→{after}"
                break
        else:
            out.append(label)
    return out


def propose(source: str, model_type: str, history: list[dict], parent: int | None,
            metrics: dict | None, target: float, counter: int = 0, k: int = 1,
            remaining_s: float | None = None, accuracy: float | None = None) -> list[Candidate]:
    """Up to `k` candidates from `source` (the best so far, attempt `parent`), best first;
    [] when the space is used up."""
    found = diagnose.diagnose(metrics, target, accuracy)
    applicable = [r.id for r in rules.rules_for_script(model_type, source)]
    undoes = undoing_moves(history, parent)
    chance = diagnose.chance_of(metrics) if metrics else None
    singles = [m for m in plan(found.kind, applicable, history, parent, chance) if m not in undoes]
    if found.kind == "stuck" and 0 < (found.facts.get("epochs") or 0) <= diagnose.SHORT_FIT:
        singles = train_longer_after_the_step_size(singles)
    epochs = epochs_for(metrics, found.facts, remaining_s)
    seen = {r.get("source_hash") for r in history if r.get("source_hash")} | {state.source_hash(source)}
    here = [r for r in history if parent is not None and r.get("parent") == parent]
    tried = {move_of(r) for r in here}
    accuracy_of = _accuracies(history)
    gains_here = [g for r in here if (g := gain_of(r, accuracy_of)) is not None]
    stalled = len(gains_here) >= STALL and all(g <= NOISE for g in gains_here[-STALL:])

    out: list[Candidate] = []

    def consider(moves: list[str]) -> bool:
        key = "+".join(moves)
        if key in tried:
            return False
        done = _apply(moves, source, counter, epochs)
        if done is None or state.source_hash(done[0]) in seen:
            return False
        seen.add(state.source_hash(done[0]))
        why = f"{found.line} → {key}"
        out.append(Candidate(key, moves[0].split(":")[0], done[1], done[0], why, found.kind))
        return len(out) >= k

    pairs = _pairs(singles)
    fixes = [m for m in flaws(flaw_moves(found), source, counter, epochs) if m not in undoes]
    order = ([fixes] if len(fixes) >= 2 else []) + longer_at_chance(found, here, accuracy_of, chance) + \
            further_when_one_class(found, here, accuracy_of) + \
            ([[m] for m in singles] if not stalled else []) + [list(p) for p in pairs] + \
            ([[m] for m in singles] if stalled else [])
    for moves in order:
        if consider(moves):
            break
    return out


def longer_at_chance(found: diagnose.Diagnosis, here: list[dict], accuracy: dict,
                     chance: float | None) -> list[list[str]]:
    """A flaw fixed on a model stuck at chance that left it at chance is inconclusive, not
    a failure: a few epochs can be too few for any setting to show (SGD → Adam and
    SimpleRNN → GRU at 3 epochs on 40-step waves). That fix again, trained about 4x as
    long (after one or two epochs the stuck forecast, 4x; else the epochs' bold step,
    2x the plain one), before the next single move."""
    if found.kind != "stuck":
        return []
    flawed = {m.split(":")[0] for m in _FLAWS}
    longer = "epochs" if found.facts.get("forecast_epochs") else "epochs:bold"
    out = []
    for record in here:
        parts = str(move_of(record) or "").split("+")
        if parts[0] and all(p.split(":")[0] in flawed for p in parts) and \
                record.get("outcome") != "failed" and at_chance(record, accuracy, chance):
            out.append(parts + [longer])
    return out


# the steps of a one-class plan that go further the same way when repeated (C x100 again)
ONE_CLASS_STEPS = {m for m in PLANS["one-class"] + FLAWS["one-class"] + ["max_iter:bold"]
                   if m.split(":")[0] in STEPPED}


def further_when_one_class(found: diagnose.Diagnosis, here: list[dict], accuracy: dict) -> list[list[str]]:
    """A model that predicts one class and still did after a step of its regulariser
    (its accuracy unchanged, within NOISE) went the right way too short, not the wrong
    way: C 1e-4 → 0.01 (and gamma 1.0 → 0.01) is still all one class on raw pixels. The
    same steps again on top, one more round each time (C → 1.0, gamma → 1e-4), before
    the next single move; the rules' own limits end it."""
    if found.kind != "one-class":
        return []
    out = []
    for record in here:
        parts = str(move_of(record) or "").split("+")
        gain = gain_of(record, accuracy)
        if record.get("outcome") == "failed" or gain is None or abs(gain) > NOISE:
            continue
        unit = next(parts[:n] for n in range(1, len(parts) + 1)
                    if len(parts) % n == 0 and parts == parts[:n] * (len(parts) // n))
        if all(p in ONE_CLASS_STEPS for p in unit):
            out.append(parts + unit)
    return out


def train_longer_after_the_step_size(moves: list[str]) -> list[str]:
    """A model near chance after one or two epochs may just not have trained long enough:
    train longer before any capacity move, after the optimizer and learning-rate moves
    that come first (the plan for "stuck" keeps epochs last)."""
    if "epochs" not in moves:
        return moves
    rest = [m for m in moves if m != "epochs"]
    capacity = {m.split(":")[0] for m in _CAPACITY_BOLD + _CAPACITY}
    at = next((i for i, m in enumerate(rest) if m.split(":")[0] in capacity), len(rest))
    return rest[:at] + ["epochs"] + rest[at:]


def lineage(history: list[dict], parent: int | None) -> list[dict]:
    """The attempts from the baseline down to `parent`: the changes its source holds."""
    by_number = {r["attempt"]: r for r in history if isinstance(r.get("attempt"), int)}
    chain: list[dict] = []
    seen: set[int] = set()
    while parent in by_number and parent not in seen:   # a hand-edited history may loop
        seen.add(parent)
        chain.append(by_number[parent])
        parent = by_number[parent].get("parent")
    return chain[::-1]


def undoing_moves(history: list[dict], parent: int | None) -> set[str]:
    """Moves that would undo a change tweakops itself made on the way to `parent`: the
    learning rate "back to the optimizer's usual value" fixes a rate the user wrote, not
    one an earlier learning-rate step of this lineage set (0.001 x10 kept, then back
    to 0.001 is the grandparent again under another spelling)."""
    moved = {part.split(":")[0] for r in lineage(history, parent) for part in str(move_of(r) or "").split("+")}
    return {"learning_rate"} if "learning_rate" in moved else set()


def flaw_moves(found: diagnose.Diagnosis) -> list[str]:
    """The flaw fixes a diagnosis points at (FLAWS), most likely first."""
    if found.kind == "not-converged" and found.facts.get("underfit"):
        return FLAWS_NOT_CONVERGED_UNDERFIT
    if found.kind == "one-class" and found.facts.get("not_converged"):
        return FLAWS["one-class"] + ["max_iter:bold"]
    return FLAWS.get(found.kind, [])


def flaws(candidates: list[str], source: str, counter: int, epochs: int | None) -> list[str]:
    """The flaw fixes of `candidates` (flaw_moves) that apply to `source`, in order, each
    applied on top of the ones before (SGD → Adam leaves no learning rate to fix): two or
    more are made in one attempt, as a person would fix every setting that is plainly off."""
    moves: list[str] = []
    for move in candidates:
        if _apply(moves + [move], source, counter, epochs) is not None:
            moves.append(move)
    return moves


def _pairs(singles: list[str]) -> list[tuple[str, str]]:
    """Pairs of the plan's first moves (two steps of one rule never pair)."""
    head = singles[:PAIR_FROM]
    return [(a, b) for i, a in enumerate(head) for b in head[i + 1:]
            if a.split(":")[0] != b.split(":")[0]]
