"""The logs job: bundle a run's logs, history, report and best source into one archive.

Jenkins archives the path this prints (the seed's "job for logs"). Only files inside
STATE_DIR go in; a symbolic link is stored as a link, never followed out of STATE_DIR.

Reads:  STATE_DIR/logs/, history.jsonl, run.env, report/, best/
Writes: STATE_DIR/archives/tweakops-logs-<time>.tar.gz; prints its path on stdout
Exit:   0 written; 2 nothing to bundle

    $ make logs
"""

from __future__ import annotations

import datetime as dt
import tarfile

import state

PARTS = ("logs", "history.jsonl", "run.env", "report", "best", "metrics")


def main(argv=None) -> int:
    cfg = state.config()
    sd = state.state_dir(cfg)
    present = [sd / name for name in PARTS if (sd / name).exists() or (sd / name).is_symlink()]
    if not present:
        raise state.TweakopsError(f"nothing to bundle in {sd}; run make pipeline first")
    archive = sd / "archives" / f"tweakops-logs-{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.tmp")
    with tarfile.open(tmp, "w:gz", dereference=False) as tar:  # links stay links
        for path in present:
            tar.add(path, arcname=str(path.relative_to(sd)), recursive=True)
    tmp.rename(archive)
    state.info(f"bundled {', '.join(p.name for p in present)}")
    print(archive)
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
