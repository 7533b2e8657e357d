"""The training images: pins, size, hardening, cached rebuilds, a real registry round trip.

Images are built locally without pulling (conftest.py's docker_image fixture); the
registry is Debian's docker-registry serving on 127.0.0.1. Without an engine the
tests that need one skip with the reason.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import PYTHON, ROOT, SCRIPTS

needs_engine = pytest.mark.docker
LIMITS_MB = {"keras": 1700, "sklearn": 400}


def pins(path):
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[re.sub(r"\[.*\]", "", name).lower()] = version
    return out


def images_script(*args, **env):
    return subprocess.run([PYTHON, str(SCRIPTS / "images.py"), *args], capture_output=True, text=True,
                          env={**os.environ, "TWEAKOPS_ENV_FILE": os.devnull, **env}, timeout=1800)


def in_image(image, command, *options):
    result = subprocess.run(["docker", "run", "--rm", "--network", "none", *options, image, "sh", "-c", command],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_images_pin_what_the_project_pins():
    project = pins(ROOT / "requirements.txt")
    constraints = pins(ROOT / "docker" / "constraints.txt")
    for variant in ("keras", "sklearn", "gpu"):
        image = pins(ROOT / "docker" / f"requirements-{variant}.txt")
        assert image, variant
        for name, version in image.items():
            expected = project.get(name) or project.get(f"{name}-cpu") or constraints.get(name)
            assert version == expected, f"{variant}: {name}=={version}, the project pins {expected}"


def test_the_keras2_runtime_is_pinned_alike_in_the_project_and_the_images():
    project = pins(ROOT / "requirements-nodeps.txt")
    assert set(project) == {"tf_keras", "keras-preprocessing"}
    for variant in ("keras", "gpu"):
        assert pins(ROOT / "docker" / f"requirements-{variant}-nodeps.txt") == project, variant
    assert "scikit-learn" in pins(ROOT / "docker" / "requirements-keras.txt")


def test_every_runtime_pins_numpy_and_the_pins_are_the_venvs():
    """constraints.txt (local runtimes, every pip install beside TensorFlow) and
    docker/constraints.txt (the images) pin what the .venv runs, numpy first of all."""
    from importlib.metadata import distributions

    def canonical(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    venv = {canonical(d.metadata["Name"]): d.version for d in distributions()}
    local = {canonical(k): v for k, v in pins(ROOT / "constraints.txt").items()}
    images = {canonical(k): v for k, v in pins(ROOT / "docker" / "constraints.txt").items()}
    assert local["numpy"] == images["numpy"] == venv["numpy"]
    for name, version in local.items():
        assert images.get(name) == version, f"constraints.txt pins {name}=={version}, docker/ {images.get(name)}"
    for name, version in images.items():
        if name in ("setuptools", "wheel"):  # the images' own installer tools, not the .venv's
            continue
        assert venv.get(name) == version, f"docker/constraints.txt pins {name}=={version}, the .venv has {venv.get(name)}"


def test_the_build_context_leaves_the_venv_and_the_rest_of_the_checkout_out():
    lines = [l for l in (ROOT / ".dockerignore").read_text().splitlines() if l and not l.startswith("#")]
    assert lines[0] == "*" and all(l.startswith("!docker/") or l.startswith("!build/wheels") for l in lines[1:])


@needs_engine
@pytest.mark.parametrize("variant", ["sklearn", "keras"])
def test_an_image_is_small_runs_as_uid_1000_and_has_no_pip_compiler_or_cache(docker_image, variant):
    image = docker_image(variant)
    size = int(subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image],
                              capture_output=True, text=True, check=True).stdout)
    assert size < LIMITS_MB[variant] * 1e6, f"{image} is {size / 1e6:.0f} MB"
    framework = "sklearn" if variant == "sklearn" else "tensorflow"
    out = in_image(image, f"id -u; id -g; python --version; "
                          f"python -c 'import {framework}, PIL; print({framework}.__version__, PIL.__version__)'")
    project = pins(ROOT / "requirements.txt")
    expected = project["scikit-learn"] if variant == "sklearn" else project["tensorflow-cpu"]
    uid, gid, python, versions = out.splitlines()
    assert (uid, gid) == ("1000", "1000")
    assert python.startswith("Python 3.11.")
    assert versions == f"{expected} {project['pillow']}"
    # looked at as root: no pip, no compiler, no wheels or caches left behind, no apt lists
    leftovers = in_image(image, "command -v pip pip3 gcc cc; ls -d /root/.cache /home/*/.cache /tmp/* 2>/dev/null; "
                                "find /opt/venv -name '*.whl' -o -type d -name pip; ls /var/lib/apt/lists",
                         "--user", "0")
    assert leftovers == ""


@needs_engine
def test_the_keras_image_carries_keras2_and_scikit_learn(docker_image):
    image = docker_image("keras")
    out = in_image(image, "python -c 'import sklearn, keras_preprocessing, tf_keras, keras, numpy, tensorflow as tf; "
                          "print(sklearn.__version__, tf_keras.__version__, keras.__version__, numpy.__version__, "
                          "tf.keras.__name__)'", "--env", "TF_USE_LEGACY_KERAS=1")
    project = {**pins(ROOT / "requirements.txt"), **pins(ROOT / "requirements-nodeps.txt"),
               **pins(ROOT / "constraints.txt")}
    assert out.split() == [project["scikit-learn"], project["tf_keras"], pins(ROOT / "docker" / "constraints.txt")["keras"],
                           project["numpy"], "tf_keras.api._v2.keras"]


@needs_engine
def test_images_check_prints_each_size_against_its_limit(docker_image):
    docker_image("sklearn")
    docker_image("keras")
    result = images_script("check")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert rows["sklearn"][2:] == [rows["sklearn"][2], "MB", "400", "MB", "ok"]
    assert int(rows["keras"][2]) < LIMITS_MB["keras"] and rows["keras"][-1] == "ok"


@needs_engine
def test_a_second_build_with_nothing_changed_is_a_no_op(docker_image):
    image = docker_image("sklearn")
    before = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                            capture_output=True, text=True, check=True).stdout
    result = images_script("build", "sklearn")
    assert result.returncode == 0, result.stderr
    assert "base: tweakops/base:bookworm is there" in result.stderr
    assert "is up to date" in result.stderr and "Step 1/" not in result.stderr
    after = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                           capture_output=True, text=True, check=True).stdout
    assert before == after


@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry serving on 127.0.0.1 (a real registry, storage in tmp_path)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (make system-deps installs it as root)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "registry.log", "wb"))
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"docker-registry did not come up: {(tmp_path / 'registry.log').read_text()[-500:]}")
            time.sleep(0.2)
    yield address
    proc.terminate()
    proc.wait(timeout=10)


@needs_engine
def test_push_and_pull_back_through_a_registry_on_localhost(docker_image, registry):
    image = docker_image("sklearn")
    result = images_script("push", "sklearn", DOCKER_REGISTRY=registry)
    assert result.returncode == 0, result.stderr
    remote = f"{registry}/{image}"
    assert result.stdout.split() == [remote]
    name, tag = image.split(":")
    tags = json.load(urllib.request.urlopen(f"http://{registry}/v2/{name}/tags/list", timeout=10))
    assert tags == {"name": name, "tags": [tag]}
    # every layer the registry lists is there and is what its digest says
    request = urllib.request.Request(f"http://{registry}/v2/{name}/manifests/{tag}", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    manifest = json.load(urllib.request.urlopen(request, timeout=10))
    assert len(manifest["layers"]) >= 2
    import hashlib
    smallest = min(manifest["layers"], key=lambda layer: layer["size"])
    blob = urllib.request.urlopen(f"http://{registry}/v2/{name}/blobs/{smallest['digest']}", timeout=60).read()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == smallest["digest"]

    # an agent pulls it back: the image it gets is the one that was pushed
    local_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                              capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["docker", "rmi", remote], capture_output=True, check=True)
    result = images_script("pull", "sklearn", DOCKER_REGISTRY=registry)
    assert result.returncode == 0, result.stderr
    pulled_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", remote],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert pulled_id == local_id
    subprocess.run(["docker", "rmi", remote], capture_output=True)


def test_push_without_a_registry_is_one_clear_line():
    result = images_script("push", DOCKER_REGISTRY="")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: DOCKER_REGISTRY is not set; e.g. make images-push DOCKER_REGISTRY=127.0.0.1:5000"


def test_system_deps_warns_and_goes_on_when_it_cannot_install():
    if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("dpkg-query") is None:
        pytest.skip("needs root (to drop to another user with setpriv) on Debian")
    if not all(os.access(p, os.R_OK | os.X_OK) or p.is_file() for p in ROOT.parents):
        pytest.skip("the checkout is not readable by other users")
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:  # /tmp: readable by nobody
        f.write("# a comment\ncoreutils\nno-such-package-tweakops  # not in Debian\n")
    packages = f.name
    os.chmod(packages, 0o644)
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             "make", "-s", "system-deps", f"SYSTEM_PACKAGES={packages}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    os.unlink(packages)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ("warning: system packages missing: no-such-package-tweakops; install them "
                                     "as root (make system-deps); the tests that need them skip")
