"""Run make targets as one Jenkins shell step, exiting with the stage's own exit code.

Every tweakops job's shell step is this script followed by make targets:

  $ python3 scripts/jenkins_step.py train accuracy          # job 3
  $ python3 scripts/jenkins_step.py --on-exit 8=publish tweak train accuracy publish   # job 4

Why not plain `make train accuracy`: GNU make exits 2 whenever a recipe fails, whatever
the recipe returned, so Jenkins could never see "below target" (3), which the job's
`unstable-return: 3` turns into UNSTABLE, and UNSTABLE is what starts the tweak job.
This runs the targets one at a time in order, as make would (it stops at the first that
fails), and exits with the code that target's script returned: make reports it on
stderr as `make: *** [Makefile:N: target] Error C`.

Options:
  --on-exit CODE=TARGET[,TARGET...]  when a target exits CODE, run these targets
      instead of the remaining ones and finish with their result (job 4: tweak exits 8
      when no tweak is left; then it publishes the best source so far and succeeds).
  --artifacts DIR  the targets' stdout lines that name existing files or folders are
      copied into DIR (relative to WORKSPACE, emptied first): Jenkins archives only
      from the workspace, and the logs bundle and report live in STATE_DIR.
  -C DIR  the tweakops directory (default: the one this script is in).

Reads: nothing itself; each target reads .env and STATE_DIR as usual. WORKSPACE (set by
Jenkins) for --artifacts. Runs with any python3 (stdlib only): the targets set up .venv.
Exit codes: the failing target's own code (0 when all succeed); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import state

ROOT = state.ROOT

# make's report of a failed recipe; the word "Error" may be translated, the shape is not.
# The first such line is the innermost make (a sub-make's failure is reported twice).
_FAILED_RECIPE = re.compile(r"\*\*\* \[[^\]\n]*\] \D*?(\d+)")


def _parse_on_exit(values: list[str]) -> dict[int, list[str]]:
    rules = {}
    for value in values:
        code, sep, targets = value.partition("=")
        if not sep or not code.strip().isdigit() or not targets.strip():
            raise state.TweakopsError(f"--on-exit {value!r}: write CODE=TARGET[,TARGET], e.g. --on-exit 8=publish")
        rules[int(code)] = [t for t in targets.split(",") if t]
    return rules


def _forward(stream, sink, keep: list[bytes]) -> None:
    """Copy a child's stream to ours as it comes (progress lines too), keeping a copy."""
    for chunk in iter(lambda: stream.read1(65536), b""):
        sink.write(chunk)
        sink.flush()
        keep.append(chunk)


def run_target(directory: Path, target: str, capture_stdout: bool) -> tuple[int, str]:
    """Run `make -C directory target`; return (the recipe's own exit code, its stdout)."""
    proc = subprocess.Popen(
        ["make", "-C", str(directory), "--no-print-directory", target],
        stdout=subprocess.PIPE if capture_stdout else None,
        stderr=subprocess.PIPE,
    )
    err: list[bytes] = []
    out: list[bytes] = []
    threads = [threading.Thread(target=_forward, args=(proc.stderr, sys.stderr.buffer, err))]
    if capture_stdout:
        threads.append(threading.Thread(target=_forward, args=(proc.stdout, sys.stdout.buffer, out)))
    for t in threads:
        t.start()
    rc = proc.wait()
    for t in threads:
        t.join()
    stdout = b"".join(out).decode("utf-8", "replace")
    if rc == 0:
        return 0, stdout
    match = _FAILED_RECIPE.search(b"".join(err).decode("utf-8", "replace"))
    # no recipe line: make itself failed (no such target, bad Makefile): its own code
    return (int(match.group(1)) if match else rc), stdout


def collect(paths_text: str, base: Path, dest: Path) -> list[Path]:
    """Copy the existing files/folders named on the lines of paths_text (relative: to base) into dest."""
    copied = []
    for line in paths_text.splitlines():
        if not line.strip():
            continue
        src = base / line.strip()  # an absolute line stays as it is
        if not src.exists():
            continue
        target = dest / src.name
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)
        copied.append(target)
    return copied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    parser.add_argument("--on-exit", action="append", default=[], metavar="CODE=TARGETS")
    parser.add_argument("--artifacts", metavar="DIR")
    parser.add_argument("-C", dest="directory", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    on_exit = _parse_on_exit(args.on_exit)

    dest = None
    if args.artifacts:
        dest = Path(os.environ.get("WORKSPACE") or os.getcwd()) / args.artifacts
        shutil.rmtree(dest, ignore_errors=True)  # the workspace outlives builds
        dest.mkdir(parents=True)

    printed = []
    queue = list(args.targets)
    while queue:
        target = queue.pop(0)
        code, stdout = run_target(args.directory, target, capture_stdout=dest is not None)
        printed.append(stdout)
        if code == 0:
            continue
        if code in on_exit:
            queue = list(on_exit.pop(code))
            print(f"==> {target} exited {code}: running {' '.join(queue)} instead", file=sys.stderr, flush=True)
            continue
        print(f"==> make {target} failed with exit code {code}", file=sys.stderr, flush=True)
        return code
    if dest is not None:
        for path in collect("\n".join(printed), args.directory, dest):
            print(f"==> artifact: {path}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    state.main(main)
