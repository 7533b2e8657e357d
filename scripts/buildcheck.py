"""Build check: does the checkout's script build in the run's runtime, without training it?

The harness runs the checkout's MODEL_FILE with TWEAKOPS_BUILD_CHECK=1 through the
run's runner (so in the attempt's runtime, local or Docker): its first `fit` trains one
step and stops the script. A few seconds (mostly the TensorFlow import). A command for
people: the tweak loop needs no check before an attempt, since an attempt that fails
before its first training step is booked `build-failed` without spending a tweak
(train.py).

Reads:  run.env (MODEL_FILE, MODEL_TYPE, MODEL_RUNTIME), CHECKOUT_DIR, RUNNER, DATA_DIR
Exit:   0 builds; 4 does not build (the reason on stdout); 2 no model detected

    $ python scripts/buildcheck.py
"""

from __future__ import annotations

import jobs
import runners
import state

TIMEOUT = 180  # seconds: the import of TensorFlow plus one training step


def check(cfg: dict, run: dict) -> str | None:
    """Run the checkout's script up to its first fit and one training step.

    Keras only: a scikit-learn attempt is cheaper than a check would be.
    """
    if run.get("MODEL_TYPE") == "sklearn":
        return None
    runner = runners.get(cfg["RUNNER"], cfg)
    job = jobs.job_for(cfg, run, attempt=0, announce=False)
    code, output = runner.run_sync(job, {"TWEAKOPS_BUILD_CHECK": "1"}, TIMEOUT)
    if code == 0:
        return None
    return f"does not build (exit {code}): {state.last_real_line(output)}"


def main(argv=None) -> int:
    cfg = state.config()
    run = state.read_run(cfg)
    if not run.get("MODEL_FILE"):
        raise state.TweakopsError("no model detected yet; run make fetch detect first")
    reason = check(cfg, run)
    print(reason or "builds")
    return state.EXIT_OK if reason is None else state.EXIT_TRAINING_FAILED


if __name__ == "__main__":
    state.main(main)
