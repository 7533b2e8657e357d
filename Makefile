# tweakops — push model code, train it, tweak it until it meets the target, publish, notify.
#
#   make pipeline   the whole loop on the embedded default (no configuration needed)
#   make test       the test suite
#   make help       every target
#
# Configuration: .env (see .env.example) < environment < make VAR=value.

.DEFAULT_GOAL := help
SHELL := /bin/bash
# Every variable reaches the scripts (make VAR=value overrides the environment).
.EXPORT_ALL_VARIABLES:

VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PY := $(PYTHON) -u
SYSTEM_PYTHON ?= python3
PIP_FLAGS ?= --quiet
PYTEST_ARGS ?=
# Debian packages make test needs (make system-deps installs the missing ones as root)
SYSTEM_PACKAGES ?= system-packages.txt
# Image variants for make wheels/images/images-push (empty: keras sklearn; gpu on request)
VARIANTS ?=
# Configuration keys (TARGET_ACCURACY, DATA_DIR, ...) are never given defaults here:
# scripts/state.py holds them, so that .env is not shadowed by an exported default.

##@ Set-up

## Create .venv and install the pinned requirements (re-run when requirements change)
.PHONY: setup
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-nodeps.txt constraints.txt
	@test -x $(PYTHON) || $(SYSTEM_PYTHON) -m venv $(VENV)
	@echo "==> installing requirements into $(VENV) (first time: ~2 min)" >&2
	@$(PYTHON) -m pip install $(PIP_FLAGS) --disable-pip-version-check -r requirements-dev.txt -c constraints.txt 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
	@$(PYTHON) -m pip install $(PIP_FLAGS) --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
	@$(PYTHON) -c "import tensorflow, sklearn, libcst, requests, tf_keras, keras_preprocessing" 2>/dev/null || { echo "error: the requirements did not install; run make setup PIP_FLAGS= to see why" >&2; exit 2; }
	@touch $@

## Generate the example dataset (scikit-learn's digits as PNGs in DATA_DIR)
.PHONY: data
data: setup
	@$(PY) scripts/make_data.py

## Create the local bare repository (MODEL_REPO) holding the bundled example (EXAMPLE=cnn|rnn|sklearn)
.PHONY: remote
remote: setup
	@$(PY) scripts/make_remote.py

##@ Pipeline stages (each reads what the previous one left in STATE_DIR)

## Job 1: clone or fast-forward MODEL_REPO at MODEL_BRANCH into CHECKOUT_DIR
.PHONY: fetch
fetch: setup
	@$(PY) scripts/fetch.py

## Job 2: tell a Keras CNN / RNN / MLP and a scikit-learn script apart
.PHONY: detect
detect: setup
	@$(PY) scripts/detect_type.py

## Jobs 2-3: train the checked-out model with the runner (RUNNER=local|docker|auto)
.PHONY: train
train: setup
	@$(PY) scripts/train.py

## Job 3: read the accuracy (exit 0 = target met, 3 = below target)
.PHONY: accuracy
accuracy: setup
	@$(PY) scripts/parse_accuracy.py

## The whole loop on the embedded default (or on .env): fetch, detect, train, accuracy, tweak… publish, report, notify (WAIT=1: queue behind a run that holds STATE_DIR)
.PHONY: pipeline
pipeline: setup data remote
	@$(PY) scripts/pipeline.py $(if $(filter 1,$(WAIT)),--wait)

##@ Tweak, publish, notify

## Job 4: rewrite the best source with the next tweak rule (exit 8 = no tweak left)
.PHONY: tweak
tweak: setup
	@$(PY) scripts/tweak.py
## Before publish: retrain a warm-started best source from scratch (CONFIRM=1), for an honest figure
.PHONY: confirm
confirm: setup
	@$(PY) scripts/confirm.py
## End of Job 4: confirm, then commit the best source (one file, accuracy trailers) and push it to PUBLISH_BRANCH
.PHONY: publish
publish: setup
	@$(PY) scripts/confirm.py
	@$(PY) scripts/publish.py

## Job 5: tell the developer (SMTP e-mail, webhook; always a copy in STATE_DIR/notifications/)
.PHONY: notify
notify: setup
	@$(PY) scripts/notify.py

##@ Watchdog

## Job 6 (cron): restart a dead or hung training from its checkpoint (safe every minute)
.PHONY: watchdog
watchdog: setup
	@$(PY) scripts/watchdog.py

## Show the current run: attempt, status, heartbeat, epoch reached, accuracy, watchdog actions
.PHONY: status
status: setup
	@$(PY) scripts/status.py

## Add the crontab line that runs make watchdog every minute (idempotent; output in STATE_DIR/logs/cron.log)
.PHONY: cron-install
cron-install: setup
	@$(PY) scripts/watchdog.py --cron install

## Remove that crontab line (other crontab lines are kept)
.PHONY: cron-remove
cron-remove: setup
	@$(PY) scripts/watchdog.py --cron remove

##@ Report and logs

## Write STATE_DIR/report/ (index.html with the accuracy plot, summary.md); prints the page's path
.PHONY: report
report: setup
	@$(PY) scripts/report.py

## Bundle logs, history, report and best source into STATE_DIR/archives/; prints the archive's path
.PHONY: logs
logs: setup
	@$(PY) scripts/logs.py

## Render the report in headless chromium (STATE_DIR/report/screenshot.png) and check it is not blank
.PHONY: report-check
report-check: setup
	@$(PY) scripts/report.py --check

##@ Containers

## Install the Debian packages listed in SYSTEM_PACKAGES that are missing (as root; else a warning)
.PHONY: system-deps
system-deps:
	@missing=$$(sed -e 's/#.*//' $(SYSTEM_PACKAGES) | xargs -n1 2>/dev/null | while read -r pkg; do \
	    dpkg-query -W -f='$${Status}\n' "$$pkg" 2>/dev/null | grep -q 'ok installed' || echo "$$pkg"; done | xargs); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "warning: system packages missing: $$missing; install them as root (make system-deps); the tests that need them skip" >&2; \
	  exit 0; fi; \
	echo "==> installing system packages: $$missing" >&2; \
	log=$$(mktemp); \
	if DEBIAN_FRONTEND=noninteractive apt-get update -q >$$log 2>&1 && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >>$$log 2>&1; then rm -f $$log; \
	else echo "warning: apt-get could not install $$missing ($$(tail -n1 $$log)); the tests that need them skip" >&2; rm -f $$log; fi

## Start a Docker engine of our own (dockerd, data root in build/docker) unless one answers
.PHONY: engine-start
engine-start: setup
	@$(PY) scripts/engine.py start

## Stop the engine make engine-start started (never another one)
.PHONY: engine-stop
engine-stop: setup
	@$(PY) scripts/engine.py stop

## Make the local Debian base image BASE_IMAGE (debootstrap + docker import; no Docker Hub)
.PHONY: base-image
base-image: setup
	@$(PY) scripts/images.py base

## Download the images' wheels into build/wheels/ (the one step that needs PyPI)
.PHONY: wheels
wheels: setup
	@$(PY) scripts/images.py wheels $(VARIANTS)

## Build the keras and sklearn images without pulling anything (VARIANTS=gpu for the CUDA one)
.PHONY: images
images: setup
	@$(PY) scripts/images.py build $(VARIANTS)

## Print the images' sizes against their limits (keras 1.7 GB, sklearn 400 MB)
.PHONY: images-check
images-check: setup
	@$(PY) scripts/images.py check

## Tag and push the built images to DOCKER_REGISTRY
.PHONY: images-push
images-push: setup
	@$(PY) scripts/images.py push $(VARIANTS)

## Pull the images from DOCKER_REGISTRY and tag them as IMAGE_KERAS/IMAGE_SKLEARN
.PHONY: images-pull
images-pull: setup
	@$(PY) scripts/images.py pull $(VARIANTS)

##@ Jenkins

## Render the Jenkins jobs (jenkins/*.yaml, filled in from the configuration) to XML in build/jenkins/
.PHONY: jenkins-jobs
jenkins-jobs: setup
	@$(PY) scripts/jenkins_jobs.py render

## Create or update the jobs and their view on JENKINS_URL (as JENKINS_USER with JENKINS_TOKEN)
.PHONY: jenkins-deploy
jenkins-deploy: setup
	@$(PY) scripts/jenkins_jobs.py deploy

## Install the git hook into a model repository: make hooks REPO=path (bare: post-receive starts job 1; else post-commit pushes)
.PHONY: hooks
hooks: setup
	@$(PY) scripts/git_hook.py install "$(REPO)"

##@ Benchmark

# the tuners the benchmark races against: never in the runtime or the images
$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	@echo "==> installing the benchmark's contenders (requirements-bench.txt)" >&2
	@$(PYTHON) -m pip install $(PIP_FLAGS) --disable-pip-version-check -r requirements-bench.txt -c constraints.txt 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
	@$(PYTHON) -c "import keras_tuner, optuna" 2>/dev/null || { echo "error: the benchmark requirements did not install; run make bench PIP_FLAGS= to see why" >&2; exit 2; }
	@touch $@

## Race tweakops against KerasTuner and Optuna on the weak-model suite (bench/README.md; 25-38 min measured on 2 cores)
.PHONY: bench
bench: setup $(VENV)/.bench-installed
	@$(PY) bench/run.py $(BENCH_ARGS)

## The benchmark's harness on a tiny budget (a smoke run; make test runs it too)
.PHONY: bench-quick
bench-quick: setup $(VENV)/.bench-installed
	@$(PY) bench/run.py --quick $(BENCH_ARGS)

##@ Quality

## Run the test suite (sets itself up; slow end-to-end tests included)
.PHONY: test
test: setup system-deps $(VENV)/.bench-installed
	@$(PYTHON) -m pytest $(PYTEST_ARGS)

## Run the fast tests only (skips the ones marked slow)
.PHONY: test-fast
test-fast: setup
	@$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

## Remove state, checkout, generated data and the local remote (keeps .venv and .env)
.PHONY: clean
clean: engine-stop
	rm -rf state checkout remote data build

## List the targets
.PHONY: help
help:
	@awk 'BEGIN {FS = ":.*"} \
	  /^##@/ {printf "\n\033[1m%s\033[0m\n", substr($$0, 5); next} \
	  /^## / {desc = substr($$0, 4); next} \
	  /^[a-zA-Z0-9_-]+:/ && desc {printf "  \033[36m%-16s\033[0m %s\n", $$1, desc; desc = ""}' $(MAKEFILE_LIST)
