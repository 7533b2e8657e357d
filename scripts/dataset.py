"""The user's dataset: the pre-flight check of what the training will read (a helper, not a stage).

make_data.py and train.py call it; it never writes anything.

  check(data_dir)          walk DATA_DIR as the training will, links followed; one
                           clear line (exit 2) for a missing, empty or unusable dataset,
                           else a summary {"files", "images", "classes"}
  describe(data_dir, s)    that summary as one line for the log
  reads_data_dir(source)   whether a training script refers to DATA_DIR at all
  repo_reads_data_dir(d)   the same for every .py file of a checkout
  is_default(cfg)          DATA_DIR is the default data/digits (not set by the user)

What check refuses, each as one `error:` line naming the path and the fix:
  - DATA_DIR missing, not a directory, or with no file (hidden files do not count);
  - an image (.png .jpg .jpeg .bmp .gif) Pillow cannot open and verify;
  - a class-per-folder image dataset with a single class folder;
  - a link (file or folder) whose target is outside DATA_DIR, or broken: the Docker
    runner mounts DATA_DIR alone, so the training could not read it there — copy the
    data in instead;
  - with mounted=True (the Docker runner, DATA_DIR seen at /data), a link inside
    DATA_DIR written as an absolute path or climbing out of DATA_DIR and back: it
    does not resolve in the container (make it relative: `ln -sr`).
Links inside DATA_DIR are followed and what they point to is checked; a link back to
a folder above it (a loop) is walked once. Hidden files and folders are skipped, as
Keras's image_dataset_from_directory skips them.

Cost: Pillow's verify reads the chunk structure without decoding the pixels, about
0.1 ms per small PNG (the 1,797 example digits in well under a second).

Reads:  DATA_DIR (through the caller's cfg)
Writes: nothing
Exit:   raises state.TweakopsError (exit 2) for the cases above

    $ make data DATA_DIR=~/datasets/flowers      # checks it and prints the summary
"""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import state

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}  # what Keras's image loaders read
MARKER = ".tweakops-digits"  # written by make_data.py into the generated example dataset
SET_IT = "set DATA_DIR to the folder that holds your dataset"


def is_default(cfg: dict) -> bool:
    """DATA_DIR is the configured default (state.DEFAULTS), i.e. the example's place."""
    default = state.ROOT / str(state.DEFAULTS["DATA_DIR"])
    return os.path.normpath(cfg["DATA_DIR"]) == os.path.normpath(default)


def _is_default_path(data_dir: Path) -> bool:
    return is_default({"DATA_DIR": str(Path(data_dir).absolute())})


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check(data_dir: Path, *, mounted: bool = False) -> dict:
    """Check everything the training may read under DATA_DIR; return a summary.

    Raises state.TweakopsError (exit 2) with one line naming the path and the fix.
    mounted: the training sees DATA_DIR mounted elsewhere (Docker), so a link inside it
    must be relative and stay inside it to resolve there.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        fix = ("run make data to generate the example digits, or " + SET_IT) if _is_default_path(data_dir) else SET_IT
        raise state.TweakopsError(f"DATA_DIR {data_dir} does not exist; {fix}")
    if not data_dir.is_dir():
        raise state.TweakopsError(f"DATA_DIR {data_dir} is not a directory; {SET_IT}")
    root = os.path.realpath(data_dir)

    files = 0
    images: list[tuple[str, tuple[int, int]]] = []  # (path, (device, inode)) of each image
    top_dirs: list[str] = []
    top_files: list[str] = []
    image_tops: set[str] = set()  # top-level folders with an image somewhere below
    direct_images: set[str] = set()  # top-level folders with an image directly inside
    # the real paths of each walked folder and of its ancestors: a link to one of them
    # is a loop, walked once (os.walk with followlinks would go round it forever)
    chain: dict[str, frozenset[str]] = {str(data_dir): frozenset([root])}

    def unreadable(exc: OSError) -> None:
        raise state.TweakopsError(
            f"{exc.filename} cannot be read ({exc.strerror}); fix its permissions or remove it")

    for dirpath, dirnames, filenames in os.walk(data_dir, followlinks=True, onerror=unreadable):
        ancestors = chain.pop(dirpath)
        real_parent = os.path.realpath(dirpath)
        at_top = dirpath == str(data_dir)
        keep = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if os.path.islink(path):
                _check_link(path, real, root, real_parent, mounted)
                if real in ancestors:
                    continue  # a loop: that folder is already being walked
            keep.append(name)
            chain[path] = ancestors | {real}
        dirnames[:] = keep
        if at_top:
            top_dirs = list(keep)
        rel = os.path.relpath(dirpath, data_dir)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    if not os.path.exists(path):
                        raise state.TweakopsError(
                            f"{path} is a broken link (to {os.readlink(path)}); fix or remove it")
                    _check_link(path, os.path.realpath(path), root, real_parent, mounted)
                st = os.stat(path)
            except OSError as exc:
                unreadable(exc)
            if not stat.S_ISREG(st.st_mode):
                raise state.TweakopsError(f"{path} is not a regular file; remove it from DATA_DIR")
            if not os.access(path, os.R_OK):
                raise state.TweakopsError(f"{path} cannot be read (permission denied); fix its permissions")
            files += 1
            if at_top:
                top_files.append(name)
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                images.append((path, (st.st_dev, st.st_ino)))
                if rel != ".":
                    image_tops.add(rel.split(os.sep)[0])
                    if os.sep not in rel:
                        direct_images.add(rel)

    if not files:
        fix = ("remove it to have make data generate the example digits, or put your dataset in it"
               if _is_default_path(data_dir) else f"put your dataset in it, or {SET_IT}")
        raise state.TweakopsError(f"DATA_DIR {data_dir} is empty (no file); {fix}")
    _verify_images(images)

    # class per folder: images in folders and nothing but folders at the top level
    classes = [d for d in top_dirs if d in image_tops] if not top_files else []
    if not top_files and len(top_dirs) == 1 and top_dirs[0] in direct_images:
        raise state.TweakopsError(
            f"only one class folder ({top_dirs[0]}) in DATA_DIR {data_dir}; a classifier needs at least two "
            "(one folder of images per class)")
    return {"files": files, "images": len(images), "classes": classes}


def _check_link(path: str, real: str, root: str, real_parent: str, mounted: bool) -> None:
    target = os.readlink(path)
    if not _inside(real, root):
        raise state.TweakopsError(
            f"{path} is a link to {real}, outside DATA_DIR; copy the data into DATA_DIR instead "
            "(the training sees DATA_DIR only)")
    if mounted:
        # resolved in the container, where DATA_DIR is /data: the link's own text must
        # lead to the same place from inside DATA_DIR
        rel_parent = os.path.relpath(real_parent, root)
        lexical = os.path.normpath(os.path.join(rel_parent, target))
        if os.path.isabs(target) or lexical == ".." or lexical.startswith(".." + os.sep):
            raise state.TweakopsError(
                f"{path} links to {target}, which does not resolve where the Docker runner mounts DATA_DIR "
                "(/data); make it a relative link inside DATA_DIR (ln -sr) or copy the data in")


def _verify_images(images: list[tuple[str, tuple[int, int]]]) -> None:
    if not images:
        return
    from PIL import Image, UnidentifiedImageError

    done: set[tuple[int, int]] = set()  # a file reached through two links is verified once
    for path, inode in images:
        if inode in done:
            continue
        done.add(inode)
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise state.TweakopsError(
                f"{path} is not a readable image ({exc.__class__.__name__}); fix or remove it") from None


def describe(data_dir: Path, summary: dict) -> str:
    """The summary as one line: `/x (1797 files, 1797 images, 10 class folders: 0, 1, …)`."""
    what = f"{summary['files']} files, {summary['images']} images"
    classes = summary["classes"]
    if classes:
        shown = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
        what += f", {len(classes)} class folders: {shown}"
    return f"{data_dir} ({what})"


def reads_data_dir(source: str) -> bool:
    """Whether a script refers to DATA_DIR: the string "DATA_DIR" anywhere in its code
    (os.environ["DATA_DIR"], os.getenv("DATA_DIR", …), environ.get). A comment or a
    variable named DATA_DIR does not count. Unparseable: True (check the data anyway)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return True
    return any(isinstance(node, ast.Constant) and node.value == "DATA_DIR" for node in ast.walk(tree))


def repo_reads_data_dir(checkout: Path) -> bool:
    """Whether any .py file of the checkout (hidden folders aside) refers to DATA_DIR:
    the entry script may read it through a module of its own (data.py)."""
    for dirpath, dirnames, filenames in os.walk(checkout):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("__pycache__", "venv")]
        for name in filenames:
            if name.endswith(".py"):
                try:
                    source = Path(dirpath, name).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                if "DATA_DIR" in source and reads_data_dir(source):
                    return True
    return False
