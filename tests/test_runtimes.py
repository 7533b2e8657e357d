"""Runtimes: the environment a job runs in, and the model repository's own requirements.

Real installs from PyPI into real derived environments (pandas, the issue's case: not
in the .venv), real harness runs through the runners, a real derived image where an
engine answers (marked docker; skipped with the reason elsewhere).
"""

import os
import subprocess
import time

import pytest

from conftest import PYTHON, SCRIPTS

import runners  # noqa: E402  (conftest puts scripts/ on sys.path)
import runtimes  # noqa: E402
import state  # noqa: E402

PROBE = """import os, sys
print("probe:", os.environ.get("TWEAKOPS_RUNTIME"), os.environ.get("TF_USE_LEGACY_KERAS"),
      os.environ.get("DATA_DIR"), os.path.isdir("/data"))
try:
    import pandas
    print("probe: pandas", pandas.__version__, pandas.__file__)
except ImportError:
    print("probe: no pandas")
import numpy
print("probe: numpy", numpy.__version__)
"""


def runtimes_script(*args, cache, **env):
    return subprocess.run([PYTHON, str(SCRIPTS / "runtimes.py"), *args], capture_output=True, text=True,
                          env={**os.environ, "TWEAKOPS_ENV_FILE": os.devnull,
                               "TWEAKOPS_RUNTIME_CACHE": str(cache), **env}, timeout=900)


def job_for(tmp_path, source=PROBE, requirements=None, **fields):
    checkout = tmp_path / "checkout"
    (checkout / "src").mkdir(parents=True, exist_ok=True)
    (checkout / "src" / "model.py").write_text(source)
    req = None
    if requirements is not None:
        req = checkout / "requirements.txt"
        req.write_text(requirements)
    fields = {"model_type": "cnn", "data_dir": None, **fields}
    return runners.Job(attempt=1, model_file="src/model.py", checkout=checkout, state_dir=tmp_path / "state",
                       requirements=req, **fields)


def probe_lines(output):
    return [line for line in output.splitlines() if line.startswith("probe:")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One derived-environment cache for the module: pandas is installed once."""
    return tmp_path_factory.mktemp("runtime-cache")


# --- no install needed ------------------------------------------------------------------

def test_the_nearest_requirements_file_from_the_model_up_to_the_checkout_root(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "model.py").write_text("")
    assert runtimes.find_requirements(tmp_path, "a/b/model.py") is None
    (tmp_path / "requirements.txt").write_text("pandas\n")
    assert runtimes.find_requirements(tmp_path, "a/b/model.py") == tmp_path / "requirements.txt"
    (tmp_path / "a" / "requirements.txt").write_text("pillow\n")
    assert runtimes.find_requirements(tmp_path, "a/b/model.py") == tmp_path / "a" / "requirements.txt"
    # never above the checkout root
    assert runtimes.find_requirements(tmp_path / "a" / "b", "model.py") is None


def test_what_the_runtime_has_is_left_out_and_nothing_it_has_moves(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# an old project\nnumpy==1.19.5\ntensorflow==2.4.0\nKeras>=2.3  # Keras 2 era\n"
                   "scikit-learn\npandas>=1.0\nopencv-python ; sys_platform == 'win32'\n\n")
    pins = {"numpy": "2.4.6", "tensorflow-cpu": "2.21.0", "keras": "3.15.1", "scikit-learn": "1.9.1"}
    keep, notes = runtimes.plan(req, pins, "keras2")
    assert keep == ["pandas>=1.0"]
    assert notes == [
        "numpy==1.19.5: the runtime keeps numpy 2.4.6 (TensorFlow and the runtime's other packages are built against it)",
        "tensorflow==2.4.0: served by the keras2 runtime's TensorFlow 2.21.0",
        "Keras>=2.3: served by the keras2 runtime's TensorFlow 2.21.0",
    ]


def test_the_local_runner_sets_the_keras2_runtime_and_no_data_dir_when_the_script_reads_none(tmp_path):
    runner = runners.get("local", state.config(os.devnull, {}))
    job = job_for(tmp_path, runtime="keras2")
    code, output = runner.run_sync(job, {"TWEAKOPS_BUILD_CHECK": "1"}, timeout=120)
    assert code == 0, output
    assert probe_lines(output)[0] == "probe: keras2 1 None False"
    job = job_for(tmp_path, model_type="sklearn", data_dir=tmp_path)
    env = runner.env(job)
    assert env["TWEAKOPS_RUNTIME"] == "sklearn" and "TF_USE_LEGACY_KERAS" not in env
    assert env["DATA_DIR"] == str(tmp_path)
    assert runner.env(job_for(tmp_path))["TWEAKOPS_RUNTIME"] == "keras3"


def test_run_sync_returns_the_exit_code_and_the_output_and_kills_past_its_timeout(tmp_path):
    runner = runners.get("local", state.config(os.devnull, {}))
    code, output = runner.run_sync(job_for(tmp_path, "print('to stdout')\nimport sys\n"
                                                     "print('to stderr', file=sys.stderr)\nsys.exit(7)\n",
                                           model_type="sklearn"), {}, timeout=60)
    assert code == 7 and "to stdout" in output and "to stderr" in output
    started = time.time()
    code, output = runner.run_sync(job_for(tmp_path, "import time\nprint('sleeping', flush=True)\n"
                                                     "time.sleep(60)\n", model_type="sklearn"), {}, timeout=3)
    assert code == runners.EXIT_KILLED and time.time() - started < 30
    assert "sleeping" in output and "killed after 3s" in output
    assert not any((tmp_path / "state" / "logs").glob("attempt-*.log"))   # run_sync writes no attempt log


# --- real installs from PyPI ------------------------------------------------------------------

def test_a_requirement_is_installed_once_into_a_derived_env_then_cached(tmp_path, cache):
    req = tmp_path / "requirements.txt"
    req.write_text("pandas\nnumpy\n")
    started = time.time()
    first = runtimes_script("local", str(req), "--runtime", "keras3", cache=cache)
    installed = time.time() - started
    assert first.returncode == 0, first.stderr
    python = first.stdout.strip()
    assert python.startswith(str(cache / "envs")) and "installing pandas from" in first.stderr
    started = time.time()
    second = runtimes_script("local", str(req), "--runtime", "keras3", cache=cache)
    hit = time.time() - started
    assert second.returncode == 0 and second.stdout.strip() == python
    assert "already installed" in second.stderr and "installing" not in second.stderr
    print(f"derived env: installed in {installed:.1f}s, cache hit in {hit:.2f}s")
    # pandas is in the derived env only; numpy, TensorFlow and scikit-learn come from the .venv, unmoved
    out = subprocess.run([python, "-c", "import pandas, numpy, sklearn, tensorflow; "
                                        "print(pandas.__file__); print(numpy.__version__, numpy.__file__)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pandas_file, numpy_line = out.stdout.splitlines()[-2:]
    assert pandas_file.startswith(str(cache / "envs"))
    import numpy
    assert numpy_line == f"{numpy.__version__} {numpy.__file__}"
    assert subprocess.run([PYTHON, "-c", "import pandas"], capture_output=True).returncode != 0


def test_the_runner_runs_the_derived_env_when_the_job_has_requirements(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(runtimes, "ENVS", cache / "envs")
    runner = runners.get("local", state.config(os.devnull, {}))
    job = job_for(tmp_path, requirements="pandas\nnumpy\n", runtime="keras3")
    code, output = runner.run_sync(job, {}, timeout=180)
    assert code == 0, output
    lines = probe_lines(output)
    assert lines[1].startswith("probe: pandas ") and str(cache / "envs") in lines[1]
    import numpy
    assert lines[2] == f"probe: numpy {numpy.__version__}"


def test_a_requirement_that_cannot_be_installed_is_one_line_and_exit_2(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("no-such-package-xyz==1\n")
    result = runtimes_script("local", str(req), cache=tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {req}: cannot install no-such-package-xyz==1: Could not find a version that satisfies the "
        "requirement no-such-package-xyz==1 (from versions: none) (no such package or version on the index); "
        "fix or remove that line in the model repository")
    assert not any((tmp_path / "cache" / "envs").glob("*/bin"))  # nothing half made is kept


def test_a_bad_requirement_stops_the_runner_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "ENVS", tmp_path / "envs")
    runner = runners.get("local", state.config(os.devnull, {}))
    job = job_for(tmp_path, requirements="no-such-package-xyz==1\n", model_type="sklearn")
    with pytest.raises(state.TweakopsError) as failed:
        runner.start(job)
    assert failed.value.code == 2 and "no-such-package-xyz==1" in str(failed.value)
    assert not job.log.exists()


# --- Docker: a derived image ------------------------------------------------------------------

@pytest.mark.docker
@pytest.mark.slow
def test_a_derived_image_is_built_once_without_network_and_the_runner_uses_it(tmp_path, docker_image, monkeypatch):
    image = docker_image("keras")
    monkeypatch.setattr(runtimes, "REQ_WHEELS", tmp_path / "req-wheels")
    job = job_for(tmp_path, requirements=f"pandas\n# {tmp_path.name}: a fresh hash per run\n", runtime="keras2")
    started = time.time()
    tag = runtimes.docker_image(job.requirements, "keras2", image)
    built = time.time() - started
    assert tag.startswith(image.split(":")[0] + "-req:")
    started = time.time()
    assert runtimes.docker_image(job.requirements, "keras2", image) == tag
    hit = time.time() - started
    size = lambda ref: int(subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", ref],
                                          capture_output=True, text=True, check=True).stdout)
    added = size(tag) - size(image)
    print(f"derived image: built in {built:.0f}s, cache hit in {hit:.2f}s, +{added / 1e6:.0f} MB")
    assert 0 < added < 150e6  # only pandas: no second numpy or TensorFlow
    try:
        runner = runners.get("docker", {**state.config(os.devnull, {}), "STATE_DIR": str(tmp_path / "state")})
        code, output = runner.run_sync(job, {"TWEAKOPS_BUILD_CHECK": "1"}, timeout=300)
        assert code == 0, output
        lines = probe_lines(output)
        assert lines[0] == "probe: keras2 1 None False"   # no DATA_DIR, no /data mount
        assert lines[1].startswith("probe: pandas ") and "/opt/venv/" in lines[1]
        import numpy
        assert lines[2] == f"probe: numpy {numpy.__version__}"
        assert not job.log.exists()  # a check is not an attempt: no attempt log
        # the check's container is thrown away and never takes the training container's name
        names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                               text=True, check=True).stdout.split()
        assert not any(name.startswith("tweakops-cnn-check") for name in names)
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)
