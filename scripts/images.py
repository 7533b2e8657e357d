"""Build, size-check, push and pull the training images, without Docker Hub if need be.

  base     BASE_IMAGE when it is the local Debian base (tweakops/base:bookworm):
           debootstrap a minimal bookworm with python3 + python3-venv, trim docs,
           locales and apt lists, `docker import` it. The root file system is kept as
           build/base/bookworm.tar, so a wiped engine re-imports it in seconds.
  wheels   `pip download` every wheel an image needs, for the image's Python (CPython
           3.11, manylinux x86_64), into build/wheels/<variant>/ (skipped when present
           and the requirement files did not change).
  build    the images (default keras and sklearn; gpu on request) from docker/Dockerfile
           with --network none and pip --no-index: nothing is pulled or downloaded. The
           build context is exactly the files the image needs (hard-linked into build/context/), so
           the 2 GB .venv or another variant's wheels never travel. An image whose
           inputs (Dockerfile, pins, wheels, base) did not change is not rebuilt.
  check    print each image's size against its limit (keras 1.7 GB, sklearn 400 MB)
  push     tag each built image as DOCKER_REGISTRY/<image> and push it
  pull     pull DOCKER_REGISTRY/<image> and tag it as the image the runner uses

Reads:  BASE_IMAGE, DEBIAN_MIRROR, IMAGE_KERAS, IMAGE_SKLEARN, IMAGE_GPU, DOCKER_REGISTRY,
        docker/Dockerfile, docker/requirements-<variant>[-nodeps].txt, docker/constraints.txt
Writes: build/base/bookworm.tar, build/wheels/<variant>/, images in the Docker engine;
        stdout: sizes (check), pushed references (push)
Exit:   0 done; 1 an image over its size limit; 2 bad input; 5 no engine, a build failed;
        6 a push or pull failed

    $ make base-image wheels images images-check
    $ make images-push DOCKER_REGISTRY=127.0.0.1:5000
    $ python scripts/images.py build gpu
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dockercli
import state

DOCKER_DIR = state.ROOT / "docker"
BUILD = state.ROOT / "build"
BASE_DIR = BUILD / "base"
WHEELS = BUILD / "wheels"
LOCAL_BASE = "tweakops/base:bookworm"     # the base `make base-image` makes
SUITE = "bookworm"                        # Debian 12: Python 3.11, like the project's .venv
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
# What trimming the base removes: documentation, translations, apt's lists and caches.
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
        "usr/share/lintian", "var/cache/apt", "var/lib/apt/lists", "var/log")

# The keras image's limit was 1.5 GB while it held TensorFlow + Keras 3 alone (1398 MB).
# It now carries both Keras runtimes and scikit-learn, measured at 1566 MB: SciPy 111 MB
# and scikit-learn 35 MB (most Keras scripts use train_test_split: without them they fail
# at import) and tf_keras 18 MB (Keras 2 scripts; the alternative, a second TensorFlow
# 2.12 image, is 1.8 GB on its own). TensorFlow itself is 1003 MB of it. 1.7 GB keeps
# ~130 MB of headroom for patch releases, and still fails a build that doubles anything.
VARIANTS = {  # variant -> (config key of its tag, size limit in bytes; None = no limit)
    "keras": ("IMAGE_KERAS", 1_700_000_000),
    "sklearn": ("IMAGE_SKLEARN", 400_000_000),
    "gpu": ("IMAGE_GPU", None),
}
DEFAULT_VARIANTS = ("keras", "sklearn")  # the gpu image is ~5 GB of CUDA wheels: on request

# The image's Python: CPython 3.11 on glibc 2.36 (bookworm), x86_64. pip takes only the
# platform tags it is given, so list every manylinux level that glibc runs.
PIP_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def tag_of(cfg: dict, variant: str) -> str:
    return cfg[VARIANTS[variant][0]]


def image_id(ref: str) -> str | None:
    proc = dockercli.docker_cli("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def need_engine() -> None:
    if dockercli.engine_version() is None:
        raise state.TweakopsError("no Docker engine answers; run make engine-start (as root) or start dockerd",
                                  state.EXIT_RUNNER_FAILED)


# ---------------------------------------------------------------------------
# base

def base(cfg: dict, force: bool = False) -> None:
    ref = cfg["BASE_IMAGE"]
    if ref != LOCAL_BASE:
        state.info(f"base: BASE_IMAGE={ref} is not the local base; docker build pulls it if missing")
        return
    need_engine()
    if image_id(ref) and not force:
        state.info(f"base: {ref} is there")
        return
    started = time.time()
    tarball = BASE_DIR / f"{SUITE}.tar"
    if force or not tarball.exists():
        debootstrap(cfg, tarball)
    dockercli.docker_cli("import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]',
                       "--message", f"debootstrap {SUITE} + {BASE_PACKAGES}", str(tarball), ref,
                       what=f"docker import of {tarball}")
    state.info(f"base: {ref} imported in {time.time() - started:.0f}s ({tarball.stat().st_size / 1e6:.0f} MB)")


def debootstrap(cfg: dict, tarball: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise state.TweakopsError("debootstrap is not installed; run make system-deps as root, "
                                  "or build on Docker Hub's base: make images BASE_IMAGE=python:3.11-slim")
    if os.geteuid() != 0:
        raise state.TweakopsError("debootstrap needs root; run make base-image as root, "
                                  "or build on Docker Hub's base: make images BASE_IMAGE=python:3.11-slim")
    rootfs = BASE_DIR / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    log = BASE_DIR / "debootstrap.log"
    state.info(f"base: debootstrap {SUITE} from {cfg['DEBIAN_MIRROR']} (~1 min; log {log})")
    with open(log, "wb") as out:
        proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE,
                               str(rootfs), cfg["DEBIAN_MIRROR"]], stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        last = (log.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise state.TweakopsError(f"debootstrap failed: {last[:200]}; see {log}", state.EXIT_RUNNER_FAILED)
    for rel in TRIM:
        target = rootfs / rel
        if target.is_dir():
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (rootfs / "etc/apt/sources.list").write_text(f"deb {cfg['DEBIAN_MIRROR']} {SUITE} main\n")
    tmp = tarball.with_suffix(".tmp")
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tmp), "."], check=True)
    os.replace(tmp, tarball)
    shutil.rmtree(rootfs)


# ---------------------------------------------------------------------------
# wheels

def requirement_files(variant: str) -> list[Path]:
    """requirements-<variant>.txt, constraints.txt, and requirements-<variant>-nodeps.txt
    (installed with --no-deps: tf_keras) where the variant has one."""
    files = [DOCKER_DIR / f"requirements-{variant}.txt", DOCKER_DIR / "constraints.txt"]
    nodeps = DOCKER_DIR / f"requirements-{variant}-nodeps.txt"
    return files + [nodeps] if nodeps.exists() else files


def wheels(cfg: dict, variant: str, force: bool = False) -> Path:
    dest = WHEELS / variant
    stamp = dest / ".requirements.sha256"
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in requirement_files(variant))).hexdigest()
    if not force and stamp.exists() and stamp.read_text().strip() == digest:
        state.info(f"wheels: {dest} is up to date ({len(list(dest.glob('*.whl')))} wheels)")
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    state.info(f"wheels: downloading the {variant} image's wheels into {dest}")
    started = time.time()
    platforms = [arg for p in PIP_PLATFORMS for arg in ("--platform", p)]
    req, constraints, *nodeps = requirement_files(variant)
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *platforms,
                "--dest", str(dest)]
    proc = subprocess.run([*download, "-r", str(req), "-c", str(constraints)], capture_output=True, text=True)
    for extra in nodeps if proc.returncode == 0 else []:
        proc = subprocess.run([*download, "--no-deps", "-r", str(extra)], capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or ["(no message)"]
        raise state.TweakopsError(f"pip download failed: {errors[-1][:200]}; make wheels needs PyPI "
                                  f"(or copy build/wheels/ from a machine that reaches it)", state.EXIT_FAILURE)
    stamp.write_text(digest + "\n")
    size = sum(p.stat().st_size for p in dest.glob("*.whl"))
    state.info(f"wheels: {len(list(dest.glob('*.whl')))} wheels, {size / 1e6:.0f} MB in {time.time() - started:.0f}s")
    return dest


# ---------------------------------------------------------------------------
# build

def context_files(variant: str) -> list[tuple[Path, str]]:
    """(host path, path in the build context) of exactly what the Dockerfile copies."""
    files = [(DOCKER_DIR / "Dockerfile", "docker/Dockerfile")]
    files += [(p, f"docker/{p.name}") for p in requirement_files(variant)]
    files += [(p, f"build/wheels/{variant}/{p.name}") for p in sorted((WHEELS / variant).glob("*.whl"))]
    return files


def make_context(variant: str) -> Path:
    """build/context/<variant>/: hard links to exactly the files the image needs."""
    context = BUILD / "context" / variant
    shutil.rmtree(context, ignore_errors=True)
    for path, name in context_files(variant):
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system: copy
            shutil.copy2(path, target)
    return context


def inputs_digest(cfg: dict, variant: str) -> str:
    """What the image is made of: a changed pin, wheel, Dockerfile or base rebuilds it."""
    h = hashlib.sha256()
    for path, name in context_files(variant):
        h.update(name.encode())
        h.update(path.read_bytes() if not name.endswith(".whl") else str(path.stat().st_size).encode())
    h.update((image_id(cfg["BASE_IMAGE"]) or cfg["BASE_IMAGE"]).encode())
    return h.hexdigest()[:16]


def build(cfg: dict, variant: str, force: bool = False) -> None:
    need_engine()
    base(cfg)
    wheels(cfg, variant)
    ref = tag_of(cfg, variant)
    digest = inputs_digest(cfg, variant)
    if not force and image_id(ref):
        label = dockercli.docker_cli("image", "inspect", "--format", '{{index .Config.Labels "tweakops.inputs"}}',
                                   ref).stdout.strip()
        if label == digest:
            state.info(f"images: {ref} is up to date")
            return
    state.info(f"images: building {ref} on {cfg['BASE_IMAGE']} (no network, wheels from {WHEELS / variant})")
    started = time.time()
    context = make_context(variant)
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: Debian's docker.io has no buildx
    proc = subprocess.run(
        ["docker", "build", "--network", "none", "--file", str(context / "docker/Dockerfile"), "--tag", ref,
         "--build-arg", f"BASE_IMAGE={cfg['BASE_IMAGE']}", "--build-arg", f"VARIANT={variant}",
         "--label", f"tweakops.inputs={digest}", str(context)],
        stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr, env=env)
    shutil.rmtree(context, ignore_errors=True)
    if proc.returncode != 0:
        raise state.TweakopsError(f"docker build of {ref} failed (exit {proc.returncode}); see the output above",
                                  state.EXIT_RUNNER_FAILED)
    state.info(f"images: built {ref} in {time.time() - started:.0f}s ({image_size(ref) / 1e6:.0f} MB)")
    dockercli.docker_cli("image", "prune", "--force", "--filter", "dangling=true", check=False)


def image_size(ref: str) -> int:
    return int(dockercli.docker_cli("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def check(cfg: dict) -> int:
    need_engine()
    rows, over = [], []
    for variant, (_, limit) in VARIANTS.items():
        ref = tag_of(cfg, variant)
        if image_id(ref) is None:
            rows.append([variant, ref, "missing", f"{limit / 1e6:.0f} MB" if limit else "-", "make images"])
            continue
        size = image_size(ref)
        ok = limit is None or size <= limit
        if not ok:
            over.append(ref)
        rows.append([variant, ref, f"{size / 1e6:.0f} MB", f"{limit / 1e6:.0f} MB" if limit else "-",
                     "ok" if ok else "OVER"])
    print(state.table(rows, ["variant", "image", "size", "limit", "verdict"]))
    if over:
        raise state.TweakopsError(f"over the size limit: {', '.join(over)}", state.EXIT_FAILURE)
    return state.EXIT_OK


# ---------------------------------------------------------------------------
# registry

def registry(cfg: dict) -> str:
    reg = cfg["DOCKER_REGISTRY"].rstrip("/")
    if not reg:
        raise state.TweakopsError("DOCKER_REGISTRY is not set; e.g. make images-push DOCKER_REGISTRY=127.0.0.1:5000")
    return reg


def push(cfg: dict, variants: list[str]) -> int:
    reg = registry(cfg)
    need_engine()
    pushed = 0
    for variant in variants:
        ref = tag_of(cfg, variant)
        if image_id(ref) is None:
            if variant in DEFAULT_VARIANTS:
                raise state.TweakopsError(f"{ref} is not built; run make images first")
            continue
        remote = f"{reg}/{ref}"
        dockercli.docker_cli("tag", ref, remote)
        state.info(f"images: pushing {remote}")
        dockercli.docker_cli("push", remote, what=f"docker push {remote}", code=state.EXIT_PUBLISH_FAILED,
                           timeout=1800)
        print(remote)
        pushed += 1
    return state.EXIT_OK


def pull(cfg: dict, variants: list[str]) -> int:
    reg = registry(cfg)
    need_engine()
    for variant in variants:
        ref = tag_of(cfg, variant)
        remote = f"{reg}/{ref}"
        state.info(f"images: pulling {remote}")
        dockercli.docker_cli("pull", remote, what=f"docker pull {remote}", code=state.EXIT_PUBLISH_FAILED,
                           timeout=1800)
        dockercli.docker_cli("tag", remote, ref)
        print(ref)
    return state.EXIT_OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("base", "wheels", "build", "check", "push", "pull"))
    parser.add_argument("variants", nargs="*", help=f"{', '.join(VARIANTS)} (default: {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--force", action="store_true", help="rebuild / re-download even when up to date")
    args = parser.parse_args(argv)
    cfg = state.config()
    variants = list(dict.fromkeys(args.variants)) or list(DEFAULT_VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise state.TweakopsError(f"unknown image variant {unknown[0]!r}; use {', '.join(VARIANTS)}")
    if args.command == "base":
        base(cfg, force=args.force)
    elif args.command == "wheels":
        for variant in variants:
            wheels(cfg, variant, force=args.force)
    elif args.command == "build":
        for variant in variants:
            build(cfg, variant, force=args.force)
    elif args.command == "check":
        return check(cfg)
    elif args.command == "push":
        return push(cfg, variants)
    elif args.command == "pull":
        return pull(cfg, variants)
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
