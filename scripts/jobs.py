"""What one attempt runs: the runner Job for the current run.

A helper module shared by train.py (the attempt) and buildcheck.py (the build check
of the checkout, without a training); not a stage.

  job_for(cfg, run, attempt)   runners.Job for the checkout's MODEL_FILE: its type and
                               runtime (run.env MODEL_TYPE, MODEL_RUNTIME), the dataset
                               it reads (checked first), the model repository's own
                               requirements.txt
  data_dir_for(cfg, checkout, source)  DATA_DIR as the training reads it, checked; None for
                               a script that reads its own data (no DATA_DIR at all)

Data rules: a script that reads DATA_DIR, or a DATA_DIR the user set, is checked
(dataset.check: missing, empty, one class, corrupt image, a link leaving it: exit 2);
a script that never mentions DATA_DIR with DATA_DIR left at its default needs none.
"""

from __future__ import annotations

from pathlib import Path

import dataset
import runners
import runtimes
import state


def data_dir_for(cfg: dict, checkout: Path, source: str, announce: bool = True) -> Path | None:
    data = Path(cfg["DATA_DIR"])
    if dataset.reads_data_dir(source) or dataset.repo_reads_data_dir(checkout) or not dataset.is_default(cfg):
        summary = dataset.check(data, mounted=cfg["RUNNER"] == "docker")
        if announce:
            state.info(f"dataset: {dataset.describe(data, summary)}")
        return data
    return None  # the script reads its own data


def job_for(cfg: dict, run: dict, attempt: int, reference: Path | None = None,
            announce: bool = True) -> runners.Job:
    checkout = Path(cfg["CHECKOUT_DIR"])
    model_file = run["MODEL_FILE"]
    source = state.read_source(checkout / model_file)
    return runners.Job(
        attempt=attempt, model_file=model_file, model_type=run["MODEL_TYPE"], checkout=checkout,
        data_dir=data_dir_for(cfg, checkout, source, announce), state_dir=state.state_dir(cfg),
        image=run.get("IMAGE", ""), seed=cfg["SEED"], reference=reference,
        runtime=runtimes.runtime_of(run["MODEL_TYPE"], run.get("MODEL_RUNTIME", "")),
        requirements=runtimes.find_requirements(checkout, model_file))
