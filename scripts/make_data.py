"""Generate the example dataset: scikit-learn's digits as PNG files, one folder per class.

The 1,797 8x8 digit images ship inside scikit-learn (no download). They are upsampled
to 28x28 grayscale PNGs in DATA_DIR/<class>/<n>.png — the class-per-folder layout
`keras.utils.image_dataset_from_directory` reads. Idempotent: an existing complete
dataset is kept; a new one is built in a temp folder and renamed into place.

Reads:  DATA_DIR (default data/digits)
Writes: DATA_DIR/0..9/*.png
Exit:   0 done, 2 DATA_DIR exists but is not this dataset

    $ make data
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

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


def main(argv=None) -> int:
    cfg = state.config()
    data_dir = Path(cfg["DATA_DIR"])
    marker = data_dir / ".tweakops-digits"
    if marker.exists():
        state.info(f"dataset ready: {data_dir}")
        return state.EXIT_OK
    if data_dir.exists() and any(data_dir.iterdir()):
        raise state.TweakopsError(
            f"DATA_DIR {data_dir} exists and is not the generated example dataset; "
            "point DATA_DIR elsewhere or remove it")
    state.banner("data", f"writing scikit-learn digits as {SIZE}x{SIZE} PNGs to {data_dir}")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=data_dir.parent))
    try:
        count = write_digits(tmp / "digits")
        (tmp / "digits" / ".tweakops-digits").write_text(f"{count} images\n")
        if data_dir.exists():
            data_dir.rmdir()
        (tmp / "digits").rename(data_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state.info(f"dataset ready: {data_dir} ({count} images, 10 classes)")
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
