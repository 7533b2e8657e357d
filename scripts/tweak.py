"""Job 4: tweak the model's own source, one small readable change per attempt.

Starts from the best source so far, picks the next tweak rule for the model type (the
rules: scripts/rules.py; the source editing under them: scripts/sourceedit.py) and
writes the rewritten entry script into the checkout.

A candidate that does not build is found by its own attempt, not by a run before it:
the harness flags a failure before the first training step ended and train.py books it
`build-failed` (attempt null, no MAX_TWEAKS tweak spent), so the same source never comes
back and its move is not retried on that parent.

What to change next is search.py's answer (deterministic given history.jsonl and the
metrics files, so a rerun picks the same): it diagnoses the parent's learning curve
(diagnose.py) and ranks the moves by it; never a source already in the history, never
a move already tried on the same parent. With PARALLEL=k it proposes a round of k
candidates: the first is written now, the rest wait in STATE_DIR/round.json and the next
runs of tweak.py take them in order (same parent), until the round is used up.

MAX_MINUTES: no tweak starts once it is over, nor when the time left is below this
run's shortest attempt (its start-up and one epoch); train.py hands the end of it to
the harness, which stops a fit there and keeps its best epoch.

Reads:  run.env MODEL_FILE (relative to CHECKOUT_DIR), MODEL_TYPE, ATTEMPT, BEST_ATTEMPT,
        RUN_ID, RUN_STARTED_AT; STATE_DIR/best/<basename of MODEL_FILE> (else the checkout
        file); the parent's metrics file; round.json; PARALLEL, MAX_MINUTES, TARGET_ACCURACY;
        history.jsonl; tweak_count
Writes: the checkout's MODEL_FILE (atomically), tweak_count + 1, run.env TWEAK (label),
        TWEAK_RULE (rule id), TWEAK_MOVE (rule and step), TWEAK_WHY (diagnosis → move),
        TWEAK_DIAGNOSIS, TWEAK_PARENT (the attempt it starts from), STATUS=tweaked
        (ATTEMPT is left to train.py, which numbers the attempt it runs); round.json
        (PARALLEL > 1); the unified diff against the best on stdout, the banner and
        the why line on stderr
Exit:   0 a tweak was written; 2 no rules for the model type, file missing or unparsable;
        8 no tweak left (every move — single, bold, paired — tried on this parent or
        already trained; the time or tweak cap reached; with FILE --rule: the rule does
        not apply)

    $ make tweak
    $ python scripts/tweak.py --list                          # the rules per type
    $ python scripts/tweak.py models/cnn/model.py --rule filters   # print a diff, write nothing
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import libcst as cst

import attempts
import diagnose
import search
import state
from rules import BUILD_FAILED, REGISTRY, attempt, list_rules, rules_for, rules_for_script
from sourceedit import Context, read_source, unified_diff

# ---------------------------------------------------------------------------
# which attempt the tweak starts from

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
    try:
        context = Context(args.counter, bold=args.bold, epochs=args.epochs, lr_scale=args.lr_scale)
    except ValueError as exc:
        raise state.TweakopsError(str(exc)) from None
    if args.rule:
        result = attempt(args.rule, source, context)
        if result is None:
            state.info(f"tweak: {args.rule} does not apply to {path}")
            return state.EXIT_NO_TWEAK_LEFT
    else:
        if not rules_for(model_type):
            raise state.TweakopsError(f"no tweak rules for model type {model_type!r}; use cnn, rnn, mlp or sklearn")
        found = search.propose(source, model_type, [], None, None, 1.0, counter=args.counter)
        if not found:
            state.info(f"tweak: no rule applies to {path}")
            return state.EXIT_NO_TWEAK_LEFT
        result = found[0]
    state.banner("tweak", f"{result.label} ({result.rule if isinstance(result, search.Candidate) else result.rule.id})")
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
    tweaks = sum(1 for r in attempts.this_run(run, history) if r.get("tweak") not in (None, "baseline")
                 and r.get("outcome") != BUILD_FAILED)   # discarded before training: no tweak spent
    if tweaks >= cfg["MAX_TWEAKS"]:
        return f"MAX_TWEAKS={cfg['MAX_TWEAKS']} tweaks tried in this run"
    remaining = search.remaining_seconds(cfg, run)
    if remaining is not None:
        if remaining <= 0:
            return f"MAX_MINUTES={cfg['MAX_MINUTES']} reached"
        floor = shortest_attempt(cfg, run, history)
        if floor is not None and remaining < floor:
            return (f"MAX_MINUTES={cfg['MAX_MINUTES']}: {remaining:.0f}s left, and an attempt of this run "
                    f"needs at least {floor:.0f}s (start-up and one epoch): not starting one")
    return None


def shortest_attempt(cfg: dict, run: dict, history: list[dict]) -> float | None:
    """The least an attempt of this run takes: its start-up (duration outside the fit)
    plus one epoch, the smallest seen in this run; None before any attempt trained."""
    sd = state.state_dir(cfg)
    floors = []
    for record in attempts.this_run(run, history):
        if not isinstance(record.get("duration"), (int, float)) \
                or not record.get("metrics") or record.get("outcome") == attempts.FAILED_OUTCOME:
            continue
        metrics = diagnose.load(sd / record["metrics"])
        epochs = [e.get("time") or 0 for e in (metrics or {}).get("epochs") or []]
        per_epoch = diagnose.seconds_per_epoch(metrics) or 0
        floors.append(max(0.0, record["duration"] - sum(epochs)) + per_epoch)
    return min(floors) if floors else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Tweak the model source (Job 4).")
    parser.add_argument("file", nargs="?", help="tweak this file and print the diff (writes nothing)")
    parser.add_argument("--rule", help="the rule to apply (with FILE)")
    parser.add_argument("--type", choices=sorted({t for r in REGISTRY.values() for t in r.types}),
                        help="model type (with FILE or --list)")
    parser.add_argument("--counter", type=int, default=0, help="number used in new layer names (with FILE)")
    parser.add_argument("--bold", action="store_true", help="take the rule's bigger step (with FILE)")
    parser.add_argument("--epochs", type=int, help="the epochs rule sets exactly this many (with FILE)")
    parser.add_argument("--lr-scale", type=float,
                        help="the learning_rate rule multiplies the rates by this (with FILE)")
    parser.add_argument("--list", action="store_true", help="list the rules and exit")
    args = parser.parse_args(argv)
    if args.list:
        print(list_rules(args.type))
        return state.EXIT_OK
    if args.file:
        return _standalone(args)

    cfg = state.config()
    state.hold_run(cfg, "tweak")
    run = state.read_run(cfg)
    model_file, model_type = run.get("MODEL_FILE", ""), run.get("MODEL_TYPE", "")
    if not model_file or not model_type:
        raise state.TweakopsError(f"{state.run_env_path(cfg)} has no MODEL_FILE/MODEL_TYPE; run make detect first")
    if not rules_for(model_type):
        raise state.TweakopsError(f"no tweak rules for model type {model_type!r}; supported: cnn, rnn, mlp, sklearn")
    checkout_file = attempts.model_path(cfg, model_file)
    best_file = attempts.best_source(cfg, model_file)
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
    result = tweak_checkout(cfg, run, source, history, parent, number)
    if result is None:
        if not any(attempt(r.id, source) for r in rules_for_script(model_type, source)):
            state.info(f"tweak: no tweak left: no {model_type} rule applies to {model_file} (none of the "
                       f"settings the rules change is in it: python scripts/tweak.py --list shows them); "
                       f"tune it by hand and push again")
        else:
            state.info(f"tweak: no tweak left for attempt {parent}: every {model_type} move (single, bold "
                       f"and paired) was tried on it or gives a source already trained")
        return state.EXIT_NO_TWEAK_LEFT

    next_attempt = attempts.next_number(cfg, history)
    state.bump_counter(cfg)
    # ATTEMPT stays the last trained one: train.py numbers the next attempt (the same max + 1)
    state.update_run(cfg, TWEAK=result.label, TWEAK_RULE=result.rule, TWEAK_MOVE=result.move,
                     TWEAK_WHY=result.why, TWEAK_DIAGNOSIS=result.diagnosis, TWEAK_PARENT=result.parent,
                     STATUS=attempts.TWEAKED)
    sys.stdout.write(unified_diff(source, result.source, model_file))
    state.banner("tweak", f"attempt {next_attempt}: {result.label} (move {result.move}, from attempt "
                          f"{result.parent}, tweak #{number})")
    state.info(f"tweak: why: {result.why}")
    return state.EXIT_OK


def parent_facts(cfg: dict, history: list[dict], parent: int) -> tuple[dict | None, float | None]:
    """The parent's metrics file and accuracy: what the diagnosis reads."""
    record = next((r for r in reversed(history) if r.get("attempt") == parent), {})
    metrics = diagnose.load(state.state_dir(cfg) / record["metrics"]) if record.get("metrics") else None
    accuracy = record.get("accuracy") if isinstance(record.get("accuracy"), (int, float)) else None
    return metrics, accuracy


# ---------------------------------------------------------------------------
# rounds: PARALLEL candidates proposed at once, trained one after another here

def round_path(cfg: dict) -> Path:
    return state.state_dir(cfg) / "round.json"


def next_in_round(cfg: dict, run: dict, history: list[dict]) -> search.Candidate | None:
    """The next candidate left in this run's round (PARALLEL > 1), or None."""
    path = round_path(cfg)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("run") != run.get("RUN_ID"):
        return None
    seen = {r.get("source_hash") for r in history}
    queue = data.get("candidates") or []
    while queue:
        candidate = search.Candidate(**queue.pop(0))
        if state.source_hash(candidate.source) not in seen:
            state.atomic_write(path, json.dumps({**data, "candidates": queue}) + "\n")
            return candidate
    path.unlink(missing_ok=True)
    return None


def propose(cfg: dict, run: dict, source: str, history: list[dict], parent: int,
            counter: int) -> search.Candidate | None:
    """The next candidate: the rest of this round first, else a new round of PARALLEL."""
    queued = next_in_round(cfg, run, history)
    if queued is not None:
        return queued
    metrics, accuracy = parent_facts(cfg, history, parent)
    found = search.propose(source, run["MODEL_TYPE"], history, parent, metrics, cfg["TARGET_ACCURACY"],
                           counter=counter, k=max(1, cfg["PARALLEL"]),
                           remaining_s=search.remaining_seconds(cfg, run), accuracy=accuracy)
    for candidate in found:
        candidate.parent = parent
    if len(found) > 1:
        state.atomic_write(round_path(cfg), json.dumps(
            {"run": run.get("RUN_ID"), "parent": parent,
             "candidates": [dataclasses.asdict(c) for c in found[1:]]}) + "\n")
    return found[0] if found else None


def tweak_checkout(cfg: dict, run: dict, source: str, history: list[dict], parent: int,
                   counter: int) -> search.Candidate | None:
    """Write the next candidate from `source` (the best, attempt `parent`) into the
    checkout and return it, or None when none is left."""
    result = propose(cfg, run, source, history, parent, counter)
    if result is not None:
        state.atomic_write(Path(cfg["CHECKOUT_DIR"]) / run["MODEL_FILE"], result.source)
    return result


if __name__ == "__main__":
    state.main(main)
