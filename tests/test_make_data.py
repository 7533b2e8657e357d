"""scripts/make_data.py (`make data`): the example digits only at the default and absent
DATA_DIR; the user's dataset checked, never written to.

The scripts run as subprocesses from a copy of scripts/ in a temp folder, so the
default DATA_DIR (<root>/data/digits) is a temp path, never the repository's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import state  # noqa: E402


class Sandbox:
    def __init__(self, root: Path):
        self.root = root
        (root / "scripts").mkdir(parents=True)
        for name in ("state.py", "dataset.py", "make_data.py"):
            shutil.copy(ROOT / "scripts" / name, root / "scripts" / name)
        self.default = root / "data" / "digits"
        self.env = {k: v for k, v in os.environ.items() if k not in state.DEFAULTS}
        self.env.update(TWEAKOPS_ENV_FILE=os.devnull, STATE_DIR=str(root / "state"), NO_COLOR="1")

    def make_data(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(self.root / "scripts" / "make_data.py"), *args],
                              cwd=self.root, env={**self.env, **env}, capture_output=True, text=True, timeout=120)


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path / "tweakops")


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under folder: file bytes, link targets, folders (mtimes too)."""
    out: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            out[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
        out[rel + "@mtime"] = str(path.lstat().st_mtime_ns)
    return out


def user_pngs(root: Path, classes=("cats", "dogs"), per_class: int = 4) -> Path:
    for label in classes:
        (root / label).mkdir(parents=True)
        for n in range(per_class):
            Image.new("RGB", (16, 16), (30 * n, 60, 90)).save(root / label / f"{Path(label).name}{n}.png")
    return root


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_default_and_absent_data_dir_gets_the_example_digits(sandbox):
    result = sandbox.make_data()
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == f"dataset ready: {sandbox.default} (1797 images, 10 classes)"
    assert sorted(p.name for p in sandbox.default.iterdir()) == [".tweakops-digits", *map(str, range(10))]
    assert len(list(sandbox.default.rglob("*.png"))) == 1797
    assert not [p for p in sandbox.default.parent.iterdir() if p.name.startswith(".digits-")]  # no temp left
    again = sandbox.make_data()
    assert again.returncode == 0
    assert again.stderr.strip() == f"dataset ready: {sandbox.default} (the example digits)"


def test_the_users_data_dir_is_checked_and_left_byte_identical(sandbox, tmp_path):
    data = user_pngs(tmp_path / "my pngs")
    before = snapshot(data)
    result = sandbox.make_data(DATA_DIR=str(data))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"dataset ready: {data} (8 files, 8 images, 2 class folders: cats, dogs)"
    assert snapshot(data) == before
    assert not sandbox.default.exists()                      # no example written either


def test_a_missing_user_data_dir_is_one_line_and_stays_missing(sandbox, tmp_path):
    result = sandbox.make_data(DATA_DIR=str(tmp_path / "nodata"))
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: DATA_DIR {tmp_path / 'nodata'} does not exist; set DATA_DIR to the folder that holds your dataset")
    assert not (tmp_path / "nodata").exists()
    assert (sandbox.root / "state" / "exit_code").read_text() == "2\n"


def test_an_empty_user_data_dir_is_one_line_and_stays_empty(sandbox, tmp_path):
    (tmp_path / "empty").mkdir()
    result = sandbox.make_data(DATA_DIR=str(tmp_path / "empty"))
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: DATA_DIR {tmp_path / 'empty'} is empty (no file); put your dataset in it, "
        "or set DATA_DIR to the folder that holds your dataset")
    assert list((tmp_path / "empty").iterdir()) == []


def test_the_users_data_at_the_default_path_is_theirs(sandbox):
    user_pngs(sandbox.default, classes=("a", "b", "c"), per_class=2)
    before = snapshot(sandbox.default)
    result = sandbox.make_data()
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"dataset ready: {sandbox.default} (6 files, 6 images, 3 class folders: a, b, c)"
    assert snapshot(sandbox.default) == before


def test_an_empty_folder_at_the_default_path_is_not_filled(sandbox):
    sandbox.default.mkdir(parents=True)
    result = sandbox.make_data()
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: DATA_DIR {sandbox.default} is empty (no file); remove it to have make data "
        "generate the example digits, or put your dataset in it")
    assert list(sandbox.default.iterdir()) == []


def test_a_corrupt_image_in_a_linked_class_folder_stops_make_data(sandbox, tmp_path):
    data = user_pngs(tmp_path / "data", classes=("cats", ".store/dogs"))
    (data / ".store" / "dogs" / "dogs2.png").write_bytes(b"GIF89a not really")
    (data / "dogs").symlink_to(".store/dogs")
    result = sandbox.make_data(DATA_DIR=str(data))
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: {data / 'dogs' / 'dogs2.png'} is not a readable image (UnidentifiedImageError); fix or remove it")


def test_a_link_leaving_the_users_data_dir_is_refused(sandbox, tmp_path):
    data = user_pngs(tmp_path / "data", classes=("cats",))
    user_pngs(tmp_path / "elsewhere", classes=("dogs",))
    (data / "dogs").symlink_to(tmp_path / "elsewhere" / "dogs")
    result = sandbox.make_data(DATA_DIR=str(data))
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: {data / 'dogs'} is a link to {tmp_path / 'elsewhere' / 'dogs'}, outside DATA_DIR; "
        "copy the data into DATA_DIR instead (the training sees DATA_DIR only)")


def test_an_absolute_link_is_refused_for_the_docker_runner_only(sandbox, tmp_path):
    data = user_pngs(tmp_path / "data")
    (data / "birds").symlink_to(data / "cats")
    assert sandbox.make_data(DATA_DIR=str(data), RUNNER="local").returncode == 0
    result = sandbox.make_data(DATA_DIR=str(data), RUNNER="docker")
    assert result.returncode == 2
    assert "does not resolve where the Docker runner mounts DATA_DIR (/data)" in error_line(result)


def test_one_class_folder_is_refused(sandbox, tmp_path):
    data = user_pngs(tmp_path / "data", classes=("cats",))
    result = sandbox.make_data(DATA_DIR=str(data))
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: only one class folder (cats) in DATA_DIR {data}; a classifier needs at least two "
        "(one folder of images per class)")


def test_to_writes_the_example_anywhere_and_only_there(sandbox, tmp_path):
    target = tmp_path / "bench" / "digits"
    result = sandbox.make_data("--to", str(target), DATA_DIR=str(tmp_path / "ignored"))
    assert result.returncode == 0, result.stderr
    assert len(list(target.rglob("*.png"))) == 1797 and (target / ".tweakops-digits").is_file()
    assert not (tmp_path / "ignored").exists() and not sandbox.default.exists()
    again = sandbox.make_data("--to", str(target))
    assert again.returncode == 0 and again.stderr.strip() == f"dataset ready: {target} (the example digits)"


def test_to_never_overwrites_other_data(sandbox, tmp_path):
    data = user_pngs(tmp_path / "data")
    before = snapshot(data)
    result = sandbox.make_data("--to", str(data))
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: {data} exists and is not the example dataset; make_data.py --to writes only a new or empty folder")
    assert snapshot(data) == before


def test_the_missing_default_says_make_data_generates_it(sandbox):
    code = ("import sys, state, dataset\n"
            "state.main(lambda argv: dataset.check(state.ROOT / 'data' / 'digits') and 0)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=sandbox.root / "scripts", env=sandbox.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: DATA_DIR {sandbox.default} does not exist; run make data to generate the example digits, "
        "or set DATA_DIR to the folder that holds your dataset")
