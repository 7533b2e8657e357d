"""Before publish: retrain a warm-started best source from scratch, as the user will run it.

The search starts a tweak from its parent's trained weights (WARM_START): "train
longer" continues where the parent stopped, an architecture change reuses the layers
that still fit. That makes the search fast, but the accuracy of such an attempt is
not what the published source gives when someone trains it from nothing. So when the
best attempt was warm-started and CONFIRM=1, this stage trains the best source once
more from scratch (`train.py --confirm N`, then `parse_accuracy.py`), and the history
gets that attempt with outcome `confirmation` (it never changes the best). publish.py
puts the confirmed figure in the commit's `Tweakops-Accuracy` trailer and says how far
it is from the warm-started one; with CONFIRM=0 the message says plainly that the
figure is a warm-started one.

Reads:  run.env BEST_ATTEMPT, RUN_ID; history.jsonl; CONFIRM; the best source (best/)
Writes: what train.py and parse_accuracy.py write for the confirmation attempt; the
        checkout holds the best source
Exit:   0 confirmed, nothing to confirm, or the confirmation failed (a warning: publish
        then says the figure is warm-started); 2 bad configuration

    $ make confirm
"""

from __future__ import annotations


import attempts
import state


def confirmation_of(history: list[dict], attempt: int) -> dict | None:
    """The booked from-scratch retraining of `attempt`, if there is one."""
    for record in reversed(history):
        if record.get("confirms") == attempt and record.get("outcome") == "confirmation":
            return record
    return None


def needed(cfg: dict, run: dict, history: list[dict]) -> tuple[int, dict] | None:
    """(best attempt, its record) when it was warm-started and not yet confirmed."""
    if not cfg["CONFIRM"] or not str(run.get("BEST_ATTEMPT") or "").isdigit():
        return None
    best = int(run["BEST_ATTEMPT"])
    record = next((r for r in reversed(history) if r.get("attempt") == best), None)
    if record is None or record.get("warm_from") is None or confirmation_of(history, best):
        return None
    return best, record


def main(argv=None) -> int:
    cfg = state.config()
    state.hold_run(cfg, "confirm")
    run = state.read_run(cfg)
    history = state.read_history(cfg)
    todo = needed(cfg, run, history)
    if todo is None:
        state.info("confirm: nothing to confirm (the best attempt trained from scratch, or CONFIRM=0)")
        return state.EXIT_OK
    best, record = todo
    state.banner("confirm", f"attempt {best} was warm-started from attempt {record['warm_from']}: "
                            "training its source from scratch once")
    attempts.revert_to_best(cfg, run)   # the checkout holds the best source
    code = state.run_stage("train", "--confirm", str(best))
    if code == state.EXIT_OK:
        code = state.run_stage("parse_accuracy")
    if code not in (state.EXIT_OK, state.EXIT_BELOW_TARGET):
        # publish still goes ahead; its message says the figure is a warm-started one
        state.warn(f"confirm: the from-scratch training of attempt {best} did not finish (exit {code}); "
                   "publishing with the warm-started figure, said so in the commit message")
        return state.EXIT_OK
    done = confirmation_of(state.read_history(cfg), best)
    if done and isinstance(done.get("accuracy"), (int, float)) and isinstance(record.get("accuracy"), (int, float)):
        state.info(f"confirm: from scratch {done['accuracy']:.4f}, warm-started {record['accuracy']:.4f} "
                   f"({done['accuracy'] - record['accuracy']:+.4f})")
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
