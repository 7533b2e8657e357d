"""Make the dataset ready: generate the example digits, or check the user's own dataset.

Where DATA_DIR is the default (data/digits) and absent, scikit-learn's 1,797 8x8
digits (they ship inside scikit-learn: no download) are written there, upsampled to
28x28 grayscale PNGs in DATA_DIR/<class>/<n>.png — the class-per-folder layout
`keras.utils.image_dataset_from_directory` reads — built in a temp folder and renamed
into place, with a hidden marker file; a second run finds the marker and does nothing.

Any other DATA_DIR is the user's dataset, and so is the default path holding data
without the marker: it is never written to, only checked (scripts/dataset.py: missing,
empty, an unreadable image, a single class folder, a link leaving DATA_DIR are one line,
exit 2) and summed up in one line. `--to PATH` writes the example dataset to any new
(or empty) folder, for tests and benchmarks.

Reads:  DATA_DIR (default data/digits), RUNNER (docker: links must resolve under /data)
Writes: the example dataset only: DATA_DIR/0..9/*.png (default DATA_DIR) or PATH/ (--to)
Exit:   0 ready; 2 the user's dataset is missing or unusable, or --to PATH holds other data

    $ make data
    $ make pipeline DATA_DIR=~/datasets/flowers      # checked here, never written to
    $ python scripts/make_data.py --to /tmp/digits   # the example dataset anywhere
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import dataset
import state

SIZE = 28  # pixels; the example CNN reads 28x28 grayscale


def write_digits(target: Path) -> int:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    target.mkdir(parents=True)
    for label in range(10):
        (target / str(label)).mkdir()
    for n, (image, label) in enumerate(zip(digits.images, digits.target)):
        pixels = (image * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").resize((SIZE, SIZE), Image.BILINEAR).save(target / str(label) / f"{n:04d}.png")
    return len(digits.images)


def write_example(target: Path) -> None:
    """The example dataset at `target`: built beside it and renamed, so a crash never
    leaves half a dataset; an existing complete one is kept."""
    if (target / dataset.MARKER).exists():
        state.info(f"dataset ready: {target} (the example digits)")
        return
    if target.is_symlink() or target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise state.TweakopsError(
            f"{target} exists and is not the example dataset; make_data.py --to writes only a new or empty folder")
    state.banner("data", f"writing scikit-learn digits as {SIZE}x{SIZE} PNGs to {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=target.parent))
    try:
        count = write_digits(tmp / "digits")
        (tmp / "digits" / dataset.MARKER).write_text(f"{count} images\n")
        if target.exists():
            target.rmdir()  # empty (checked above)
        (tmp / "digits").rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state.info(f"dataset ready: {target} ({count} images, 10 classes)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", metavar="PATH", type=Path,
                        help="write the example dataset to PATH (a new or empty folder) and nothing else")
    args = parser.parse_args(argv)
    if args.to is not None:
        write_example(args.to.expanduser().absolute())
        return state.EXIT_OK

    cfg = state.config()
    data_dir = Path(cfg["DATA_DIR"])
    if (data_dir / dataset.MARKER).exists():
        state.info(f"dataset ready: {data_dir} (the example digits)")
        return state.EXIT_OK
    if dataset.is_default(cfg) and not data_dir.exists() and not data_dir.is_symlink():
        write_example(data_dir)
        return state.EXIT_OK
    # the user's dataset: read, never written
    summary = dataset.check(data_dir, mounted=cfg["RUNNER"] == "docker")
    state.info(f"dataset ready: {dataset.describe(data_dir, summary)}")
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
