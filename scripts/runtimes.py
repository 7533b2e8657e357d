"""The runtime an attempt runs in, with the model repository's own requirements added.

Runtimes (detect_type.py records MODEL_RUNTIME; the runners pass TWEAKOPS_RUNTIME):
  keras3   TensorFlow 2.21 + Keras 3: the .venv locally, the keras image in Docker
  keras2   the same TensorFlow with tf_keras (Keras 2) beside it, TF_USE_LEGACY_KERAS=1
  sklearn  scikit-learn: the .venv locally, the sklearn image in Docker

A `requirements.txt` in the model repository (the nearest one, from the model file's
folder up to the checkout root) is installed into the runtime the attempt uses, once:
cached by a hash of (the file, the runtime's pins, the runtime, the base it derives from).

  local    a derived environment build/envs/<hash16>/: a venv of the .venv's base
           interpreter whose .pth file adds the .venv's site-packages behind its own,
           so pip sees what the .venv has, keeps it, and installs only what is missing.
  docker   a derived image tweakops/<variant>-req:<hash12>, FROM the runtime image,
           built with --network none from wheels `pip download`ed on this machine into
           build/req-wheels/<hash16>/ (the images have no pip: the derived image's
           builder stage makes a throw-away installer, like docker/Dockerfile does);
           the layer holds only the files the install added.

Nothing the runtime has may move: every distribution it holds is a constraint (pip -c),
so `pip install -U pandas` cannot upgrade numpy past what TensorFlow was built for.
A line asking for something the runtime already has is left out with one note when
the runtime's version does not satisfy it (an old `numpy==1.19.5`: the runtime keeps
2.4.6), and the TensorFlow/Keras family (`tensorflow`, `keras`, ...) in a Keras
runtime is served by the runtime's own TensorFlow, never a second one.

Reads:  the model repository's requirements.txt, constraints.txt, the .venv's and the
        image's package lists; TWEAKOPS_RUNTIME_CACHE (default build/: where envs go)
Writes: build/envs/<hash16>/, build/req-wheels/<hash16>/, tweakops/<variant>-req:<hash12>
Exit:   2 a requirement that cannot be installed (one line naming it and pip's reason);
        5 no Docker engine, the derived image did not build

    $ python scripts/runtimes.py local models/pandas/requirements.txt --runtime keras3
    $ python scripts/runtimes.py docker models/pandas/requirements.txt --image tweakops/keras:latest
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from contextlib import contextmanager
from pathlib import Path

import dockercli
import state
import worker

RUNTIMES = ("keras2", "keras3", "sklearn")
# Where derived environments and wheels are cached; TWEAKOPS_RUNTIME_CACHE moves it
# (the tests give each test its own, to see a first install and a cache hit).
BUILD = Path(os.environ.get("TWEAKOPS_RUNTIME_CACHE") or state.ROOT / "build")
ENVS = BUILD / "envs"
REQ_WHEELS = BUILD / "req-wheels"
CONSTRAINTS = state.ROOT / "constraints.txt"
DOCKERFILE = state.ROOT / "docker" / "Dockerfile.requirements"
READY = ".tweakops-ready"        # written last: an environment without it is half made
PIP_TIMEOUT = 1800               # seconds for one pip install / download
# Served by a Keras runtime's own TensorFlow: a second TensorFlow would be 572 MB and
# clash with tensorflow-cpu in the same site-packages.
TF_FAMILY = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
             "tensorflow-aarch64", "tf-nightly", "tf-nightly-cpu", "tf-nightly-gpu", "keras", "tf-keras",
             "keras-preprocessing", "keras-applications"}


def runtime_of(model_type: str, runtime: str = "") -> str:
    """The runtime a job runs in: the recorded one, else keras3 (Keras types) or sklearn."""
    if runtime:
        if runtime not in RUNTIMES:
            raise state.TweakopsError(f"MODEL_RUNTIME={runtime!r} is unknown; use {', '.join(RUNTIMES)} "
                                      "(make detect records it)")
        return runtime
    return "sklearn" if model_type == "sklearn" else "keras3"


def find_requirements(checkout: Path, model_file: str) -> Path | None:
    """The nearest requirements.txt from the model file's folder up to the checkout root."""
    root = Path(checkout).resolve()
    folder = (root / model_file).parent.resolve()
    while True:
        candidate = folder / "requirements.txt"
        if candidate.is_file():
            return candidate
        if folder == root or root not in folder.parents:
            return None
        folder = folder.parent


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------
# what a requirements file asks for, against what the runtime has

def plan(requirements: Path, pins: dict[str, str], runtime: str) -> tuple[list[str], list[str]]:
    """(lines pip installs, notes on the lines left out) for `requirements` in a runtime
    that holds `pins` (canonical name -> version)."""
    from packaging.requirements import InvalidRequirement, Requirement

    keep, notes = [], []
    for raw in requirements.read_text(errors="replace").splitlines():
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith(("-r ", "-c ", "--requirement", "--constraint")):
            option, _, target = line.partition(" ")
            target = target.strip()
            path = Path(target) if Path(target).is_absolute() else requirements.parent / target
            keep.append(f"{option} {path}")
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            keep.append(line)  # a URL, an option pip knows: pip says what it makes of it
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonical(req.name)
        if name in TF_FAMILY:
            served = (f"served by the {runtime} runtime's TensorFlow {pins.get('tensorflow-cpu', '')}".rstrip()
                      if runtime != "sklearn" else "TensorFlow comes with the keras2/keras3 runtimes only")
            notes.append(f"{line}: {served}")
            continue
        if name in pins and not req.extras:
            if not req.specifier.contains(pins[name], prereleases=True):
                notes.append(f"{line}: the runtime keeps {req.name} {pins[name]} (TensorFlow and the "
                             "runtime's other packages are built against it)")
            continue
        keep.append(line)
    return keep, notes


def pins_text(pins: dict[str, str]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def venv_pins() -> dict[str, str]:
    """Every distribution the .venv (this interpreter) holds, at its version."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            pins.setdefault(canonical(name), dist.version)
    for tool in ("pip", "setuptools", "wheel"):  # the installer's own, never a runtime's
        pins.pop(tool, None)
    return pins


def digest(requirements: Path, runtime: str, base: str, pins: str = "") -> str:
    h = hashlib.sha256()
    for part in (requirements.read_bytes(), CONSTRAINTS.read_bytes() if CONSTRAINTS.exists() else b"",
                 pins.encode(), runtime.encode(), base.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def install_env() -> dict[str, str]:
    """pip's environment for a model repository's requirements: this one without
    tweakops' configuration and credentials (a package's build code runs under it)."""
    return {k: v for k, v in os.environ.items()
            if k not in state.DEFAULTS and not worker.CREDENTIAL_NAME.search(k)}


def pip_failure(requirements: Path, stderr: str, keep: list[str], wheels_only: bool = False) -> state.TweakopsError:
    """One line: the requirement pip could not install and pip's reason."""
    errors = [line[len("ERROR: "):].strip() for line in stderr.splitlines() if line.startswith("ERROR: ")]
    errors = [e for e in errors if not e.startswith("ResolutionImpossible")] or \
        [line.strip() for line in stderr.strip().splitlines()[-1:]] or ["(no message)"]
    reason = errors[0]
    named = re.search(r"(?:requirement|for|install) ([A-Za-z0-9][A-Za-z0-9._\-\[\]]*(?:[<>=!~]=?[^\s,;)]+)?)", reason)
    what = named.group(1) if named else ", ".join(keep)
    if "conflicting dependencies" in reason or "conflict" in stderr:
        reason += " (it clashes with a package the runtime pins)"
    if "Could not find a version" in reason or "No matching distribution" in reason:
        reason += " (no such package or version on the index" + (
            ", or it has no wheel for the image's Python 3.11 on Linux)" if wheels_only else ")")
    return state.TweakopsError(f"{requirements}: cannot install {what}: {reason[:300]}; "
                               "fix or remove that line in the model repository", state.EXIT_BAD_INPUT)


@contextmanager
def locked(path: Path):
    """One builder at a time per environment (two attempts, train and the watchdog)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# local: a derived environment

def base_interpreter() -> str:
    """The interpreter the .venv was made from (a venv of a venv would lose the .venv)."""
    base = getattr(sys, "_base_executable", "") or ""
    if base and Path(base).exists() and Path(base).resolve() != Path(sys.executable).resolve():
        return base
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.base_prefix) / "bin" / version, Path(sys.base_prefix) / "bin" / "python3"):
        if candidate.exists():
            return str(candidate)
    return sys.executable


def local_python(requirements: Path, runtime: str) -> str:
    """The python of the derived environment for `requirements` (made once, then cached)."""
    requirements = Path(requirements).resolve()
    pins = venv_pins()
    key = digest(requirements, runtime, f"{sys.executable} {sys.version}", pins_text(pins))
    env_dir = ENVS / key[:16]
    python = env_dir / "bin" / "python"
    if (env_dir / READY).exists():
        state.info(f"runtime: {requirements.name} already installed in {env_dir} (cached)")
        return str(python)
    keep, notes = plan(requirements, pins, runtime)
    for note in notes:
        state.info(f"runtime: left out {note}")
    if not keep:
        state.info(f"runtime: the {runtime} runtime has everything {requirements} asks for")
        return sys.executable
    with locked(ENVS / f"{key[:16]}.lock"):
        if (env_dir / READY).exists():
            return str(python)
        shutil.rmtree(env_dir, ignore_errors=True)
        started = time.time()
        state.info(f"runtime: installing {', '.join(keep)} from {requirements} into {env_dir} (once)")
        subprocess.run([base_interpreter(), "-m", "venv", "--without-pip", str(env_dir)], check=True,
                       capture_output=True)
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        # after its own site-packages: what the derived env installs comes first; `import
        # site` so the .venv's own .pth files apply too
        base_site = sysconfig.get_paths()["purelib"]
        (site / "_tweakops_runtime.pth").write_text(f"import site; site.addsitedir({base_site!r})\n")
        (env_dir / "requirements.txt").write_text("".join(f"{line}\n" for line in keep))
        (env_dir / "constraints.txt").write_text(pins_text(pins))
        try:
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                 "--no-warn-script-location", "-r", str(env_dir / "requirements.txt"),
                 "-c", str(env_dir / "constraints.txt"), "-c", str(CONSTRAINTS)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                env=install_env())
        except subprocess.TimeoutExpired:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise state.TweakopsError(f"{requirements}: pip did not finish in {PIP_TIMEOUT}s; is PyPI reachable?",
                                      state.EXIT_BAD_INPUT) from None
        if proc.returncode != 0:
            shutil.rmtree(env_dir, ignore_errors=True)  # a network blip must not stick
            raise pip_failure(requirements, proc.stderr, keep)
        (env_dir / READY).write_text(f"{requirements}\n")
        state.info(f"runtime: installed in {time.time() - started:.1f}s")
    return str(python)


# ---------------------------------------------------------------------------
# docker: a derived image

def image_pins(image: str) -> dict[str, str]:
    """Every distribution the image's /opt/venv holds, asked of the image itself."""
    code = ("import importlib.metadata as m\n"
            "for d in m.distributions():\n    print(d.metadata['Name'], d.version)\n")
    proc = dockercli.docker_cli("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", code,
                              what=f"listing the packages of {image}")
    pins = {}
    for line in proc.stdout.splitlines():
        name, _, version = line.partition(" ")
        if name and version:
            pins.setdefault(canonical(name), version.strip())
    return pins


def derived_tag(image: str, key: str) -> str:
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repo}-req:{key[:12]}"


def docker_image(requirements: Path, runtime: str, image: str) -> str:
    """The derived image of `image` with `requirements` installed (built once, then cached)."""
    import images
    requirements = Path(requirements).resolve()
    base_id = dockercli.docker_cli("image", "inspect", "--format", "{{.Id}}", image, check=False).stdout.strip()
    if not base_id:
        raise state.TweakopsError(f"image {image} is missing; build it with make images", state.EXIT_RUNNER_FAILED)
    key = digest(requirements, runtime, base_id)
    tag = derived_tag(image, key)
    if dockercli.image_present(tag):
        state.info(f"runtime: {requirements.name} already installed in {tag} (cached)")
        return tag
    with locked(REQ_WHEELS / f"{key[:16]}.lock"):
        if dockercli.image_present(tag):
            return tag
        pins = image_pins(image)
        keep, notes = plan(requirements, pins, runtime)
        for note in notes:
            state.info(f"runtime: left out {note}")
        if not keep:
            state.info(f"runtime: {image} has everything {requirements} asks for")
            dockercli.docker_cli("tag", image, tag)
            return tag
        started = time.time()
        work = REQ_WHEELS / key[:16]
        shutil.rmtree(work, ignore_errors=True)
        (work / "wheels").mkdir(parents=True)
        (work / "requirements.txt").write_text("".join(f"{line}\n" for line in keep))
        (work / "constraints.txt").write_text(pins_text(pins))
        shutil.copy(DOCKERFILE, work / "Dockerfile")
        state.info(f"runtime: downloading the wheels of {', '.join(keep)} for {image} into {work}")
        platforms = [arg for p in images.PIP_PLATFORMS for arg in ("--platform", p)]
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
             "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *platforms,
             "--dest", str(work / "wheels"), "-r", str(work / "requirements.txt"),
             "-c", str(work / "constraints.txt")],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PIP_TIMEOUT)
        if proc.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise pip_failure(requirements, proc.stderr, keep, wheels_only=True)
        state.info(f"runtime: building {tag} FROM {image} (no network)")
        build = subprocess.run(
            ["docker", "build", "--network", "none", "--tag", tag, "--build-arg", f"RUNTIME_IMAGE={image}",
             "--label", f"tweakops.requirements={requirements}", "--label", f"tweakops.runtime={runtime}",
             str(work)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"},
            timeout=PIP_TIMEOUT)
        if build.returncode != 0:
            tail = [line for line in (build.stdout + build.stderr).splitlines() if line.strip()]
            if any("ERROR: " in line for line in tail):
                raise pip_failure(requirements, "\n".join(l[l.index("ERROR: "):] for l in tail if "ERROR: " in l),
                                  keep)
            raise state.TweakopsError(f"docker build of {tag} failed: {(tail or ['(no output)'])[-1][:200]}",
                                      state.EXIT_RUNNER_FAILED)
        shutil.rmtree(work / "wheels", ignore_errors=True)  # the image has them; pip's cache keeps a copy
        dockercli.docker_cli("image", "prune", "--force", "--filter", "dangling=true", check=False)
        state.info(f"runtime: built {tag} in {time.time() - started:.0f}s")
    return tag


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("where", choices=("local", "docker"))
    parser.add_argument("requirements", type=Path)
    parser.add_argument("--runtime", default="keras3", choices=RUNTIMES)
    parser.add_argument("--image", default="", help="the runtime image (docker; default IMAGE_KERAS/IMAGE_SKLEARN)")
    args = parser.parse_args(argv)
    if not args.requirements.is_file():
        raise state.TweakopsError(f"{args.requirements} does not exist; give the model repository's requirements.txt")
    if args.where == "local":
        print(local_python(args.requirements, args.runtime))
    else:
        cfg = state.config()
        image = args.image or cfg["IMAGE_SKLEARN" if args.runtime == "sklearn" else "IMAGE_KERAS"]
        print(docker_image(args.requirements, args.runtime, image))
    return state.EXIT_OK


if __name__ == "__main__":
    state.main(main)
