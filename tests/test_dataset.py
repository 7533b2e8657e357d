"""scripts/dataset.py: the pre-flight check of DATA_DIR, on real files, PNGs and links."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import dataset  # noqa: E402
import state  # noqa: E402


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The example digits, written by make_data.py --to."""
    target = tmp_path_factory.mktemp("example") / "digits"
    env = {**os.environ, "TWEAKOPS_ENV_FILE": os.devnull}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_data.py"), "--to", str(target)],
                   env=env, check=True, capture_output=True)
    return target


def png(path: Path, shade: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), shade).save(path)
    return path


def two_classes(root: Path, per_class: int = 3) -> Path:
    for label in ("cats", "dogs"):
        for n in range(per_class):
            png(root / label / f"{n}.png", 40 * n)
    return root


def refused(data: Path, **kw) -> str:
    with pytest.raises(state.TweakopsError) as info:
        dataset.check(data, **kw)
    assert info.value.code == state.EXIT_BAD_INPUT
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_example_digits_pass_with_a_summary(example):
    started = time.perf_counter()
    summary = dataset.check(example)
    took = time.perf_counter() - started
    assert summary == {"files": 1797, "images": 1797, "classes": [str(n) for n in range(10)]}
    assert took < 5, f"checking 1797 PNGs took {took:.2f}s"
    assert dataset.describe(example, summary) == (
        f"{example} (1797 files, 1797 images, 10 class folders: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)")


def test_a_missing_data_dir_names_the_path(tmp_path):
    assert refused(tmp_path / "nodata") == (
        f"DATA_DIR {tmp_path / 'nodata'} does not exist; set DATA_DIR to the folder that holds your dataset")


def test_a_file_is_not_a_data_dir(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    assert refused(tmp_path / "data.csv") == (
        f"DATA_DIR {tmp_path / 'data.csv'} is not a directory; set DATA_DIR to the folder that holds your dataset")


def test_empty_means_no_file_hidden_files_and_empty_folders_aside(tmp_path):
    data = tmp_path / "data"
    (data / "cats").mkdir(parents=True)
    (data / "dogs").mkdir()
    (data / ".DS_Store").write_text("x")
    png(data / ".cache" / "0.png")
    assert refused(data) == (
        f"DATA_DIR {data} is empty (no file); put your dataset in it, "
        "or set DATA_DIR to the folder that holds your dataset")


def test_a_corrupt_png_is_named(tmp_path):
    data = two_classes(tmp_path / "data")
    (data / "dogs" / "1.png").write_bytes(b"not a png")
    assert refused(data) == f"{data / 'dogs' / '1.png'} is not a readable image (UnidentifiedImageError); fix or remove it"


def test_a_truncated_png_is_named(tmp_path):
    data = two_classes(tmp_path / "data")
    whole = (data / "cats" / "2.png").read_bytes()
    (data / "cats" / "2.png").write_bytes(whole[: len(whole) // 2])
    message = refused(data)
    assert message.startswith(f"{data / 'cats' / '2.png'} is not a readable image (")
    assert message.endswith("); fix or remove it")


def test_a_png_with_a_damaged_byte_is_named(tmp_path):
    data = two_classes(tmp_path / "data")
    raw = bytearray((data / "dogs" / "0.png").read_bytes())
    raw[raw.index(b"IDAT") + 6] ^= 0xFF                       # the pixel data, not the header
    (data / "dogs" / "0.png").write_bytes(bytes(raw))
    assert refused(data) == f"{data / 'dogs' / '0.png'} is not a readable image (SyntaxError); fix or remove it"


def test_other_files_beside_images_are_counted_not_decoded(tmp_path):
    data = two_classes(tmp_path / "data")
    (data / "cats" / "README.txt").write_text("cats from the shelter\n")
    assert dataset.check(data) == {"files": 7, "images": 6, "classes": ["cats", "dogs"]}


def test_a_symlinked_class_folder_inside_is_followed_and_its_corrupt_image_found(tmp_path):
    data = tmp_path / "data"
    png(data / "cats" / "0.png")
    png(data / ".pool" / "dogs" / "0.png")           # hidden: read only through the link
    (data / ".pool" / "dogs" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (data / "dogs").symlink_to(".pool/dogs")
    assert refused(data) == f"{data / 'dogs' / '1.png'} is not a readable image (UnidentifiedImageError); fix or remove it"
    (data / ".pool" / "dogs" / "1.png").unlink()
    assert dataset.check(data) == {"files": 2, "images": 2, "classes": ["cats", "dogs"]}


def test_a_symlinked_file_inside_is_followed(tmp_path):
    data = two_classes(tmp_path / "data")
    (data / "dogs" / "same.png").symlink_to("../cats/0.png")
    assert dataset.check(data)["images"] == 7
    (data / "cats" / "0.png").write_bytes(b"")
    assert refused(data).startswith(f"{data / 'cats' / '0.png'} is not a readable image")


def test_a_folder_link_leaving_data_dir_is_refused(tmp_path):
    data = tmp_path / "data"
    png(data / "cats" / "0.png")
    png(tmp_path / "elsewhere" / "dogs" / "0.png")
    (data / "dogs").symlink_to(tmp_path / "elsewhere" / "dogs")
    assert refused(data) == (
        f"{data / 'dogs'} is a link to {tmp_path / 'elsewhere' / 'dogs'}, outside DATA_DIR; "
        "copy the data into DATA_DIR instead (the training sees DATA_DIR only)")


def test_a_file_link_leaving_data_dir_is_refused(tmp_path):
    data = two_classes(tmp_path / "data")
    png(tmp_path / "outside.png")
    (data / "dogs" / "9.png").symlink_to("../../outside.png")
    assert refused(data) == (
        f"{data / 'dogs' / '9.png'} is a link to {tmp_path / 'outside.png'}, outside DATA_DIR; "
        "copy the data into DATA_DIR instead (the training sees DATA_DIR only)")


def test_a_broken_link_is_refused(tmp_path):
    data = two_classes(tmp_path / "data")
    (data / "dogs" / "9.png").symlink_to("gone.png")
    assert refused(data) == f"{data / 'dogs' / '9.png'} is a broken link (to gone.png); fix or remove it"


def test_a_link_loop_is_walked_once(tmp_path):
    data = two_classes(tmp_path / "data")
    (data / "cats" / "again").symlink_to("..")                # back to DATA_DIR
    (data / "dogs" / "x").mkdir()
    (data / "dogs" / "x" / "y").symlink_to("../../dogs")       # back to its grandparent
    assert dataset.check(data) == {"files": 6, "images": 6, "classes": ["cats", "dogs"]}


def test_a_data_dir_that_is_itself_a_link_is_fine(tmp_path):
    two_classes(tmp_path / "real")
    (tmp_path / "data").symlink_to(tmp_path / "real")
    assert dataset.check(tmp_path / "data")["classes"] == ["cats", "dogs"]


def test_under_docker_a_link_must_resolve_from_inside_data_dir(tmp_path):
    data = two_classes(tmp_path / "data")
    (data / "birds").symlink_to(data / "cats")                   # absolute: /data in the container has no such path
    assert dataset.check(data)["classes"] == ["birds", "cats", "dogs"]   # fine for the local runner
    assert refused(data, mounted=True) == (
        f"{data / 'birds'} links to {data / 'cats'}, which does not resolve where the Docker runner mounts "
        "DATA_DIR (/data); make it a relative link inside DATA_DIR (ln -sr) or copy the data in")
    (data / "birds").unlink()
    (data / "birds").symlink_to("../data/cats")                  # climbs out of DATA_DIR and back
    assert refused(data, mounted=True).startswith(f"{data / 'birds'} links to ../data/cats, which does not resolve")
    (data / "birds").unlink()
    (data / "birds").symlink_to("cats")
    assert dataset.check(data, mounted=True)["classes"] == ["birds", "cats", "dogs"]


def test_one_class_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    for n in range(3):
        png(data / "cats" / f"{n}.png")
    assert refused(data) == (
        f"only one class folder (cats) in DATA_DIR {data}; a classifier needs at least two "
        "(one folder of images per class)")


def test_one_folder_of_splits_or_with_a_label_file_is_not_one_class(tmp_path):
    splits = two_classes(tmp_path / "splits" / "train")      # DATA_DIR/train/<class>/
    assert dataset.check(tmp_path / "splits") == {"files": 6, "images": 6, "classes": ["train"]}
    labelled = tmp_path / "labelled"
    png(labelled / "images" / "0.png")
    (labelled / "labels.csv").write_text("file,label\n0.png,cat\n")
    assert dataset.check(labelled) == {"files": 2, "images": 1, "classes": []}
    assert splits.is_dir()


def test_a_csv_only_dataset_passes(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "iris.csv").write_text("a,b,label\n1,2,x\n")
    assert dataset.check(tmp_path / "data") == {"files": 1, "images": 0, "classes": []}


@pytest.mark.parametrize("source", [
    'import os\ndata = os.environ["DATA_DIR"]\n',
    'import os\ndata = os.environ.get("DATA_DIR", "data/digits")\n',
    'import os\ndata = os.getenv("DATA_DIR")\n',
    'from os import environ\nroot = environ.get("DATA_DIR")\n',
    'import os\nKEY = "DATA_DIR"\ndata = os.environ[KEY]\n',
    "def broken(:\n",                                            # cannot tell: check the data
])
def test_scripts_that_read_data_dir(source):
    assert dataset.reads_data_dir(source) is True


@pytest.mark.parametrize("source", [
    'import pandas as pd\ndf = pd.read_csv("data/heart.csv")\n',
    '# set DATA_DIR if you like\nDATA_DIR = "data/"\nimport pandas as pd\ndf = pd.read_csv(DATA_DIR + "x.csv")\n',
    'from sklearn.datasets import load_iris\nX, y = load_iris(return_X_y=True)\n',
])
def test_scripts_that_read_their_own_data(source):
    assert dataset.reads_data_dir(source) is False


def test_a_repository_reading_data_dir_through_its_own_module(tmp_path):
    (tmp_path / "model.py").write_text("from data import load\nX, y = load()\n")
    assert dataset.repo_reads_data_dir(tmp_path) is False
    (tmp_path / "data.py").write_text('import os\ndef load():\n    return os.environ["DATA_DIR"], None\n')
    assert dataset.repo_reads_data_dir(tmp_path) is True


def test_is_default_is_the_configured_default():
    assert dataset.is_default(state.config(os.devnull, {}))
    assert dataset.is_default(state.config(os.devnull, {"DATA_DIR": "./data/digits"}))
    assert not dataset.is_default(state.config(os.devnull, {"DATA_DIR": "/srv/flowers"}))
