"""The benchmark's datasets, made from what the installed packages ship (no download).

  digits/   scikit-learn's 1,797 8x8 digits as 28x28 grayscale PNGs, one folder per class
            (the layout `keras.utils.image_dataset_from_directory` reads; as scripts/make_data.py)
  shifted/  the harder image task: digits upsampled to 28x28 with random shifts (±5 px),
            rotations (±30°), a random stroke scale and pixel noise (sd 0.12); train/ 500 images,
            test/ 400 images, a fixed held-out set (seed 0). BENCH_DATASET=fashion_mnist
            fills it from Keras' own Fashion-MNIST loader instead (it downloads; 500/400 images).
  tabular/  digits.npz: X (1797, 64) in 0..16, y; the scripts split it with
            train_test_split(test_size=0.25, random_state=0, stratify=y)
  waves/    waves.npz: a synthetic sequence task, 4 wave shapes (sine, square, triangle,
            sawtooth) of random frequency, phase and amplitude with noise, 40 steps x 1;
            x_train (800), x_test (400), generated from seed 0

Every dataset is written once (a `.ready` marker) and is the same on every run and machine.

    $ .venv/bin/python bench/data.py /tmp/bench-data
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SIZE = 28
SPLIT = {"test_size": 0.25, "random_state": 0}  # the tabular split every script and contender uses


def _png_folder(target: Path, images, labels) -> None:
    import numpy as np
    from PIL import Image

    for label in sorted(set(int(v) for v in labels)):
        (target / str(label)).mkdir(parents=True, exist_ok=True)
    for n, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(target / str(int(label)) / f"{n:04d}.png")


def write_digits(target: Path) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [np.asarray(Image.fromarray((im * (255.0 / 16.0)).clip(0, 255).astype(np.uint8), mode="L")
                         .resize((SIZE, SIZE), Image.BILINEAR)) for im in digits.images]
    _png_folder(target, images, digits.target)


def distort(images, rng):
    """Shift, rotate, rescale and add noise: the digits a camera rather than a scanner sees."""
    import numpy as np
    from scipy import ndimage

    out = []
    for im in images:
        big = ndimage.zoom(im.astype(float) / 16.0, SIZE / 8 * rng.uniform(0.7, 1.0), order=1)
        canvas = np.zeros((SIZE, SIZE))
        off = (SIZE - big.shape[0]) // 2
        canvas[off:off + big.shape[0], off:off + big.shape[1]] = big[:SIZE - off, :SIZE - off]
        canvas = ndimage.rotate(canvas, rng.uniform(-30, 30), reshape=False, order=1)
        canvas = ndimage.shift(canvas, rng.uniform(-5, 5, size=2), order=1)
        canvas = canvas + rng.normal(0, 0.12, canvas.shape)
        out.append((canvas.clip(0, 1) * 255).astype(np.uint8))
    return out


def write_shifted(target: Path, n_train: int = 500, n_test: int = 400) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    if os.environ.get("BENCH_DATASET", "") == "fashion_mnist":
        import keras  # downloads on first use: only where the internet is reachable

        (xtr, ytr), (xte, yte) = keras.datasets.fashion_mnist.load_data()
        tr, te = rng.choice(len(xtr), n_train, replace=False), rng.choice(len(xte), n_test, replace=False)
        _png_folder(target / "train", xtr[tr], ytr[tr])
        _png_folder(target / "test", xte[te], yte[te])
        return
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = rng.permutation(len(digits.images))
    tr, te = order[:n_train], order[n_train:n_train + n_test]
    _png_folder(target / "train", distort(digits.images[tr], rng), digits.target[tr])
    _png_folder(target / "test", distort(digits.images[te], rng), digits.target[te])


def write_tabular(target: Path) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    target.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target / "digits.npz", X=digits.data.astype("float32"), y=digits.target)


def waves(n: int, rng, steps: int = 40):
    import numpy as np

    t = np.linspace(0, 1, steps)
    y = rng.integers(0, 4, n)
    x = np.empty((n, steps, 1), dtype="float32")
    for i, label in enumerate(y):
        phase = (t * rng.uniform(1.5, 4.0) + rng.uniform(0, 1)) % 1.0
        wave = [np.sin(2 * np.pi * phase), np.sign(np.sin(2 * np.pi * phase)),
                4 * np.abs(phase - 0.5) - 1, 2 * phase - 1][label]
        x[i, :, 0] = wave * rng.uniform(0.5, 1.5) + rng.normal(0, 0.3, steps)
    return x, y


def write_waves(target: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x_train, y_train = waves(800, rng)
    x_test, y_test = waves(400, rng)
    target.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target / "waves.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


WRITERS = {"digits": write_digits, "shifted": write_shifted, "tabular": write_tabular, "waves": write_waves}


def ensure(root: Path, name: str) -> Path:
    """root/name, written once (in a temp folder, renamed into place)."""
    target = root / name
    if (target / ".ready").exists():
        return target
    tmp = root / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    WRITERS[name](tmp)
    (tmp / ".ready").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("error: give the folder to write the datasets to: python bench/data.py /tmp/bench-data", file=sys.stderr)
        return 2
    for name in WRITERS:
        print(ensure(Path(argv[0]), name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
