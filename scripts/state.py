"""The one shared helper: configuration, exit codes, errors and the state files.

Every script in scripts/ imports this module; none re-implements what it does.

  config()            typed configuration: DEFAULTS < .env < environment
  read_env/write_env  KEY=value files (dotenv syntax, never executed), atomic
  update_run(**kv)    merge keys into STATE_DIR/run.env under the lock
  counter()/bump()    STATE_DIR/tweak_count
  append_history()    one JSON line per attempt in STATE_DIR/history.jsonl
  main(fn)            run a script's main, turning TweakopsError into one line

The override order is the one the Makefile gives: defaults, then `.env` (copied from
`.env.example`), then the environment, then `make VAR=value` (make exports it).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------
# Exit codes (Jenkins reads them; docs/architecture.md)
EXIT_OK = 0
EXIT_FAILURE = 1          # unexpected: a bug, or a failure the watchdog may retry
EXIT_BAD_INPUT = 2        # bad input or configuration: one clear line
EXIT_BELOW_TARGET = 3     # accuracy below TARGET_ACCURACY (Jenkins: UNSTABLE)
EXIT_TRAINING_FAILED = 4  # the user's script failed
EXIT_RUNNER_FAILED = 5    # engine down, image missing, OOM-killed, cannot start
EXIT_PUBLISH_FAILED = 6   # commit or push failed
EXIT_NOTIFY_FAILED = 7    # SMTP or webhook failed
EXIT_NO_TWEAK_LEFT = 8    # tweak: every rule has been tried
EXIT_NO_CHANGE = 9        # fetch --if-changed: the remote head did not move
EXIT_BUSY = 10            # another run holds this STATE_DIR (pipeline --wait queues instead)

# ---------------------------------------------------------------------------
# Configuration: one block of defaults, grouped by topic. Type is the default's type
# (str, int, float, bool); "" means "not set".
DEFAULTS: dict[str, object] = {
    # the model
    "MODEL_REPO": "",                   # URL or path of the model's git repository; "" = remote/<EXAMPLE>.git
    "MODEL_BRANCH": "main",             # branch to fetch
    "MODEL_FILE": "",                   # entry script in the repo; "" = find it
    "EXAMPLE": "cnn",                   # bundled example that seeds the local remote: cnn, rnn, sklearn
    "CHECKOUT_DIR": "checkout",         # where the model repository is checked out
    # data and state
    "DATA_DIR": "data/digits",          # dataset directory, mounted read-only in containers
    "STATE_DIR": "state",               # run.env, counter, history, logs, checkpoints
    # training
    "RUNNER": "local",                  # local, docker, auto
    "SEED": 42,                         # fixed seed: the same source gives comparable accuracy
    "IMAGE_KERAS": "tweakops/keras:latest",      # image for cnn, rnn, mlp
    "IMAGE_SKLEARN": "tweakops/sklearn:latest",  # image for sklearn
    "IMAGE_GPU": "tweakops/keras-gpu:latest",    # image for cnn, rnn, mlp when GPUS is set
    "TRAIN_MEMORY": "4g",               # memory one attempt may use (docker --memory; watched locally)
    "TRAIN_CPUS": "2",                  # docker --cpus
    "TRAIN_TIMEOUT": 1800,              # seconds one attempt may run before it is stopped; 0 = no limit
    "TRAIN_ENV": "",                    # names of environment variables the model's script may see (comma-separated)
    "GPUS": "",                         # docker --gpus value ("all") on GPU agents
    "TF_CPP_MIN_LOG_LEVEL": "2",        # quiet TensorFlow's C++ log (never the script's output)
    "WARM_WORKER": True,                # local runner: attempts fork from a worker that imported TensorFlow once
    "WARM_START": True,                 # "train longer" continues from the parent's weights instead of epoch 0
    "WARM_LAYERS": False,               # an architecture change starts from the parent's matching layers too
    "CONFIRM": True,                    # retrain a warm-started winner from scratch before publishing it
    # the tweak loop
    "TARGET_ACCURACY": 0.80,            # 0 < target <= 1
    "MAX_TWEAKS": 10,                   # tweaks tried before giving up
    "MAX_MINUTES": 60,                  # wall-clock cap of the loop, held inside an attempt too
    "PARALLEL": 1,                      # candidates the search proposes per round (trained one after another here)
    # watchdog
    "HEARTBEAT_TIMEOUT": 300,           # seconds without a heartbeat before a run counts as hung
    "MAX_RESTARTS": 3,                  # restarts of one attempt before it is marked failed
    "RESTART_BACKOFF": 30,              # seconds before the first restart, doubled for each next one
    # publish
    "PUBLISH_BRANCH": "",               # "" = MODEL_BRANCH
    "GIT_AUTHOR_NAME": "tweakops",
    "GIT_AUTHOR_EMAIL": "tweakops@localhost",
    # notify
    "SMTP_HOST": "",                    # "" = write the message to STATE_DIR/notifications/
    "SMTP_PORT": 25,
    "SMTP_USER": "",
    "SMTP_PASSWORD": "",
    "SMTP_STARTTLS": False,
    "SMTP_SSL": False,
    "MAIL_FROM": "tweakops@localhost",
    "MAIL_TO": "",                      # comma-separated
    "NOTIFY_WEBHOOK_URL": "",           # Slack-compatible webhook
    "NOTIFY_TIMEOUT": 15,               # seconds each of the webhook's 3 tries waits for an answer
    # jenkins and registry
    "JENKINS_URL": "",
    "JENKINS_USER": "",
    "JENKINS_TOKEN": "",
    "JENKINS_LABEL": "",                # node label the jobs run on (docker, gpu); "" = any node
    "JENKINS_TWEAKOPS_HOME": "",        # tweakops on the Jenkins agents; "" = this directory
    "JENKINS_BUILD_TOKEN": "",          # job 1's remote build token (hooks); "" = generated in build/secrets/
    "JENKINS_GIT_CREDENTIALS": "",      # Jenkins credentials id for MODEL_REPO; "" = none needed
    "DOCKER_REGISTRY": "",              # host[:port] that make images-push/images-pull use
    # images (make images)
    "BASE_IMAGE": "tweakops/base:bookworm",  # the local Debian base (make base-image); python:3.11-slim with Docker Hub
    "DEBIAN_MIRROR": "http://deb.debian.org/debian",  # where debootstrap gets the base's packages
    # output
    "DEBUG": False,                     # print tracebacks
}

# Keras reports accuracies as float32: 280/400 is 0.699999988, which must meet a target of 0.70
ACCURACY_TOLERANCE = 1e-6


def meets(accuracy: float | None, target: float) -> bool:
    """An accuracy at or above the target, up to float32 rounding (ACCURACY_TOLERANCE)."""
    return accuracy is not None and accuracy >= target - ACCURACY_TOLERANCE


EXAMPLES = ("cnn", "rnn", "sklearn")  # bundled example models in models/


class TweakopsError(Exception):
    """An error a user can act on: printed as one line, exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# dotenv files

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote(value: str) -> str:
    if value == "" or re.fullmatch(r"[A-Za-z0-9_./:@%+,=-]+", value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("$", "\\$").replace("`", "\\`")
    return f'"{escaped}"'


def _unquote(raw: str, where: str) -> str:
    raw = raw.strip()
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise TweakopsError(f"{where}: unterminated quoted value; write KEY=\"value\"")
        out, i, body = [], 0, raw[1:-1]
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                out.append("\n" if nxt == "n" else nxt)
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)
    if raw.startswith("'"):
        if len(raw) < 2 or not raw.endswith("'"):
            raise TweakopsError(f"{where}: unterminated quoted value; write KEY='value'")
        return raw[1:-1]
    # unquoted: an inline comment starts at " #"
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


def read_env(path: str | os.PathLike) -> dict[str, str]:
    """Parse a dotenv file; a missing file is an empty dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, raw = line.partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            raise TweakopsError(f"{path}:{n}: expected KEY=value, got {line[:60]!r}")
        values[key] = _unquote(raw, f"{path}:{n}")
    return values


def format_env(values: dict[str, object]) -> str:
    lines = []
    for key, value in values.items():
        if not _KEY_RE.match(key):
            raise ValueError(f"bad key {key!r}")
        lines.append(f"{key}={_quote(_str(value))}")
    return "\n".join(lines) + "\n"


def _str(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def read_source(path: str | os.PathLike) -> str:
    """A model source as it is on disk: line endings kept (read_text would turn CRLF
    into LF, and a one-line tweak into a whole-file diff)."""
    return Path(path).read_bytes().decode("utf-8")


def atomic_write(path: str | os.PathLike, text: str | bytes) -> None:
    """Write to a temp file beside `path`, fsync, rename: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp's 0600 would hide reports from others
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_env(path: str | os.PathLike, values: dict[str, object]) -> None:
    atomic_write(path, format_env(values))


# ---------------------------------------------------------------------------
# configuration

def _coerce(key: str, raw: str, default: object) -> object:
    raw = raw.strip()
    if isinstance(default, bool):
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise TweakopsError(f"{key}={raw!r} is not a boolean; use 1 or 0")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise TweakopsError(f"{key}={raw!r} is not a whole number; e.g. {key}={default}") from None
    if isinstance(default, float):
        try:
            return float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
        except ValueError:
            raise TweakopsError(f"{key}={raw!r} is not a number; e.g. {key}={default}") from None
    return raw


def config(env_file: str | os.PathLike | None = None, environ: dict | None = None) -> dict:
    """Typed configuration: DEFAULTS < .env < environment."""
    environ = os.environ if environ is None else environ
    env_file = Path(env_file or environ.get("TWEAKOPS_ENV_FILE") or ROOT / ".env")
    from_file = read_env(env_file)
    for key in from_file:
        if key not in DEFAULTS:
            raise TweakopsError(f"{env_file}: unknown key {key}; see .env.example for the keys")
    cfg: dict[str, object] = {}
    for key, default in DEFAULTS.items():
        raw = environ.get(key)
        if raw is None:
            raw = from_file.get(key)
        cfg[key] = default if raw is None else _coerce(key, raw, default)
    target = cfg["TARGET_ACCURACY"]
    if not 0 < target <= 1:
        raise TweakopsError(f"TARGET_ACCURACY={target} is out of range; use a fraction in (0, 1], e.g. 0.80")
    for key in ("MAX_TWEAKS", "MAX_MINUTES", "HEARTBEAT_TIMEOUT", "MAX_RESTARTS"):
        if cfg[key] < 0:
            raise TweakopsError(f"{key}={cfg[key]} must not be negative; use 0 or more, e.g. {key}={DEFAULTS[key]}")
    if cfg["NOTIFY_TIMEOUT"] <= 0:
        raise TweakopsError(f"NOTIFY_TIMEOUT={cfg['NOTIFY_TIMEOUT']} must be positive; use seconds, e.g. NOTIFY_TIMEOUT=15")
    if cfg["RUNNER"] not in ("local", "docker", "auto"):
        raise TweakopsError(f"RUNNER={cfg['RUNNER']!r} is unknown; use local, docker or auto")
    for key in ("STATE_DIR", "DATA_DIR", "CHECKOUT_DIR"):
        cfg[key] = str(_abspath(cfg[key]))
    if not cfg["MODEL_REPO"]:
        if cfg["EXAMPLE"] not in EXAMPLES:
            raise TweakopsError(f"EXAMPLE={cfg['EXAMPLE']!r} is unknown; use one of {', '.join(EXAMPLES)}")
        cfg["MODEL_REPO"] = f"remote/{cfg['EXAMPLE']}.git"
    if "://" not in cfg["MODEL_REPO"] and not re.match(r"^[\w.-]+@[\w.-]+:", cfg["MODEL_REPO"]):
        cfg["MODEL_REPO"] = str(_abspath(cfg["MODEL_REPO"]))
    return cfg


def _abspath(p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else ROOT / path


# ---------------------------------------------------------------------------
# STATE_DIR

def state_dir(cfg: dict) -> Path:
    path = Path(cfg["STATE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


_HELD: dict[str, int] = {}   # lock files this process holds (re-entrant: a nested locked() is free)
LOCK_PATIENCE = 60.0         # seconds a stage waits for a short STATE_DIR lock before it says who holds it


def _owner_line(what: str = "") -> str:
    pid = os.getpid()
    return json.dumps({"pid": pid, "start": process_start_time(pid), "since": now_iso(), "what": what or _me()})


def _me() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"


def process_start_time(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (/proc), against PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has finished
        return None
    return fields[19]


def lock_holder(path: Path) -> str:
    """Who wrote the lock file last (pid, what, since): for the "held by" line."""
    owner = _read_owner(path)
    if not owner.get("pid"):
        return "an unknown process"
    return f"pid {owner['pid']} ({owner.get('what') or '?'}, since {owner.get('since') or '?'})"


@contextlib.contextmanager
def locked(cfg: dict, name: str = "lock", blocking: bool = True, patience: float | None = None):
    """Hold an fcntl lock on STATE_DIR/<name>. Yields True, or False when non-blocking and busy.

    Re-entrant within a process. A blocking caller waits at most `patience` seconds
    (LOCK_PATIENCE), saying once after two who holds the lock, then exits 10 (EXIT_BUSY)
    naming the holder: a stopped leftover process never blocks a stage silently.
    """
    path = state_dir(cfg) / name
    key = str(path)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield True
        finally:
            _HELD[key] -= 1
        return
    patience = LOCK_PATIENCE if patience is None else patience
    with open(path, "a+") as f:
        waited, said = 0.0, False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking:
                    yield False
                    return
                if waited >= patience:
                    raise TweakopsError(f"{path} is held by {lock_holder(path)} for over {patience:.0f}s; "
                                        "stop that process (or wait for it) and run again", EXIT_BUSY) from None
                if waited >= 2 and not said:
                    info(f"waiting for {path}, held by {lock_holder(path)}")
                    said = True
                time.sleep(0.05)
                waited += 0.05
        try:
            f.seek(0)
            f.truncate()
            f.write(_owner_line() + "\n")
            f.flush()
        except OSError:
            pass
        _HELD[key] = 1
        try:
            yield True
        finally:
            _HELD.pop(key, None)
            fcntl.flock(f, fcntl.LOCK_UN)


RUN_LOCK = "run.lock"
_RUN_OWNER = "TWEAKOPS_RUN_OWNER"   # pid of the process holding run.lock, inherited by its stages


@contextlib.contextmanager
def run_lock(cfg: dict, what: str, wait: float | None = None):
    """One run per STATE_DIR: hold STATE_DIR/run.lock while a stage (or the whole
    pipeline) changes the run. The stages a holder starts (TWEAKOPS_RUN_OWNER in their
    environment) run under its lock. Busy: exit 10 naming the holder, or with `wait`
    queue for up to that many seconds. The kernel drops the lock when its holder dies:
    a lock file left behind by a dead process never blocks anyone."""
    path = state_dir(cfg) / RUN_LOCK
    with open(path, "a+") as f:
        started, said = time.time(), False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_owner(path)
                if holder.get("pid") and str(holder["pid"]) == os.environ.get(_RUN_OWNER):
                    yield  # a stage of the run that holds it
                    return
                if wait is None or time.time() - started >= wait:
                    how = "make pipeline WAIT=1 (pipeline.py --wait) queues behind it" if wait is None \
                        else f"waited {wait:.0f}s"
                    raise TweakopsError(f"another run holds {state_dir(cfg)}: {lock_holder(path)}; {how}, "
                                        "or give this one its own STATE_DIR", EXIT_BUSY) from None
                if not said:
                    info(f"waiting for the run of {lock_holder(path)} to finish (STATE_DIR {state_dir(cfg)})")
                    said = True
                time.sleep(0.5)
        f.seek(0)
        f.truncate()
        f.write(_owner_line(what) + "\n")
        f.flush()
        before = os.environ.get(_RUN_OWNER)
        os.environ[_RUN_OWNER] = str(os.getpid())
        _LOCK_FILES.append(f.fileno())   # the number only: no second reference keeping f's close order
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                _LOCK_FILES.remove(f.fileno())
            if before is None:
                os.environ.pop(_RUN_OWNER, None)
            else:
                os.environ[_RUN_OWNER] = before
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text() or "{}")
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def run_owner(cfg: dict) -> dict | None:
    """The live process holding STATE_DIR/run.lock ({pid, what, since}), or None."""
    path = state_dir(cfg) / RUN_LOCK
    if not path.exists():
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(path) or {"pid": None}
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def run_env_path(cfg: dict) -> Path:
    return state_dir(cfg) / "run.env"


def read_run(cfg: dict) -> dict[str, str]:
    try:
        return read_env(run_env_path(cfg))
    except TweakopsError as exc:
        raise TweakopsError(f"{exc} in the run state; delete that line, or start a new run with make fetch") from None


def update_run(cfg: dict, **values: object) -> dict[str, str]:
    """Merge keys into run.env atomically under the lock; a value of None removes the key."""
    with locked(cfg):
        current = read_run(cfg)
        for key, value in values.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = _str(value)
        write_env(run_env_path(cfg), current)
        return current


def reset_run(cfg: dict, **values: object) -> None:
    """Start a new run.env with only `values`."""
    with locked(cfg):
        write_env(run_env_path(cfg), {k: _str(v) for k, v in values.items() if v is not None})


def counter(cfg: dict) -> int:
    try:
        return int((state_dir(cfg) / "tweak_count").read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        raise TweakopsError(f"{state_dir(cfg) / 'tweak_count'} is not a number; fix or delete it") from None


def bump_counter(cfg: dict) -> int:
    with locked(cfg):
        value = counter(cfg) + 1
        atomic_write(state_dir(cfg) / "tweak_count", f"{value}\n")
        return value


def history_path(cfg: dict) -> Path:
    return state_dir(cfg) / "history.jsonl"


def read_history(cfg: dict) -> list[dict]:
    """The attempts, one per line. A line that is not a JSON object (torn by a crash or a
    power loss mid-write, or edited by hand) is reported once and moved aside to
    history.jsonl.torn; the others are kept as they are."""
    path = history_path(cfg)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    records, torn = [], []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            torn.append(line)
    if torn:
        _set_aside(cfg, path, torn)
    return records


def _set_aside(cfg: dict, path: Path, torn: list[str]) -> None:
    aside = path.with_name(path.name + ".torn")
    with locked(cfg):
        good, bad = [], []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                try:
                    (good if isinstance(json.loads(line), dict) else bad).append(line)
                except json.JSONDecodeError:
                    bad.append(line)
        if not bad:
            return  # another process set them aside first
        with open(aside, "a", encoding="utf-8") as f:
            f.writelines(f"{line}\n" for line in bad)
            f.flush()
            os.fsync(f.fileno())
        atomic_write(path, "".join(f"{line}\n" for line in good))
    warn(f"{path}: {len(bad)} torn line(s) (a crash mid-write?) moved aside to {aside}; "
         "the other attempts are kept")


def append_history(cfg: dict, record: dict) -> None:
    """Append one attempt; rewrites the file atomically so a crash never tears it."""
    with locked(cfg):
        path = history_path(cfg)
        old = path.read_bytes() if path.exists() else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        atomic_write(path, old + (json.dumps(record, sort_keys=True) + "\n").encode())


def update_history(cfg: dict, attempt: int, **fields: object) -> None:
    """Set fields on the record of `attempt` (the last one with that number)."""
    with locked(cfg):
        records = read_history(cfg)
        for record in reversed(records):
            if record.get("attempt") == attempt:
                record.update(fields)
                break
        else:
            raise TweakopsError(f"history has no attempt {attempt}", EXIT_FAILURE)
        atomic_write(history_path(cfg), "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def run_stage(name: str, *args: str, preload: tuple[str, ...] = ()) -> int:
    """Run scripts/<name>.py as its own process, as `python -u scripts/<name>.py ARGS` would,
    its output live on this console; its exit code (killed by signal n: -n, as subprocess says).

    The process is a fork of this one, made after importing the stage's module here (once
    per run): a stage then costs no interpreter start and no imports (tweak.py's libcst
    alone is 0.5-0.8 s, several times its own work). The child is what a fresh process
    would be: its own argv, unbuffered standard streams, none of this process's locks
    (run.lock stays with its holder: an orphaned stage never keeps it) and it ends with
    its own exit code, never running this process's cleanup. `preload`: modules to import
    here while the child runs (the next stages of a loop), off the critical path.
    """
    module = importlib.import_module(name)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # the stage
        code = EXIT_FAILURE
        try:
            _become_stage(name, args)
            main(module.main, list(args))
        except SystemExit as exc:  # as the interpreter ends on one: a message goes to stderr, exit 1
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILURE)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - a child must never return into the caller's code
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)
    try:
        for other in preload:
            if other not in sys.modules:
                importlib.import_module(other)
        _, status = os.waitpid(pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def _become_stage(name: str, args: tuple[str, ...]) -> None:
    """In a forked stage: what `python -u scripts/<name>.py ARGS` starts with."""
    sys.argv = [str(Path(__file__).resolve().parent / f"{name}.py"), *args]
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in _LOCK_FILES:  # this process's reference to run.lock dropped, the lock not released
        os.dup2(devnull, fd)  # (the holds stay referenced: os._exit never finalises them)
    os.close(devnull)
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, stream)
        setattr(sys, stream, io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=old.encoding,
                                              errors=old.errors, write_through=True))


def git(cfg: dict, *args: str, cwd: str | os.PathLike | None = None, check: bool = True,
        what: str = "git") -> subprocess.CompletedProcess:
    """Run git with an argument list (never a shell string), as the configured identity.

    A failure raises TweakopsError naming `what` and git's last line of stderr.
    """
    env = dict(os.environ)
    for role in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{role}_NAME"] = cfg["GIT_AUTHOR_NAME"]
        env[f"GIT_{role}_EMAIL"] = cfg["GIT_AUTHOR_EMAIL"]
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait on a password prompt (no stdin in CI)
    repo = str(cfg.get("MODEL_REPO") or "")
    if without_credentials(repo) != repo:
        # the credential in MODEL_REPO, for git alone: the checkout's origin has none
        n = int(env.get("GIT_CONFIG_COUNT") or 0)
        env.update({"GIT_CONFIG_COUNT": str(n + 1), f"GIT_CONFIG_KEY_{n}": f"url.{repo}.insteadOf",
                    f"GIT_CONFIG_VALUE_{n}": without_credentials(repo)})
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, text=True, capture_output=True)
    if check and proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise TweakopsError(f"{what} failed: {scrub(last)}", EXIT_FAILURE)
    return proc


def without_credentials(url: str) -> str:
    """A URL without its user:token part (https://user:secret@host/x -> https://host/x)."""
    return re.sub(r"^(\w[\w+.-]*://)[^/@\s]+@", r"\1", url)


def scrub(text: str) -> str:
    """Hide credentials in URLs (https://user:secret@host -> https://***@host)."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def source_hash(text: str) -> str:
    """Hash of a Python source that ignores comments and formatting (the attempt cache key)."""
    import ast
    import hashlib

    try:
        canonical = ast.dump(ast.parse(text))
    except SyntaxError:
        canonical = text
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------
# output: results on stdout, progress on stderr

def color(code: str, text: str, stream) -> str:
    if os.environ.get("NO_COLOR") or not getattr(stream, "isatty", lambda: False)():
        return text
    return f"\033[{code}m{text}\033[0m"


def banner(stage: str, detail: str = "") -> None:
    line = f"==> {stage}" + (f": {detail}" if detail else "")
    print(color("1;36", line, sys.stderr), file=sys.stderr, flush=True)


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(color("33", f"warning: {message}", sys.stderr), file=sys.stderr, flush=True)


def table(rows: list[list[object]], headers: list[str]) -> str:
    cells = [[_str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*row) for row in cells]
    return "\n".join(line.rstrip() for line in out)


def main(fn, argv=None) -> None:
    """Run fn(argv) -> int and exit; a TweakopsError becomes one `error: …` line."""
    try:
        code = fn(argv)
        if code == EXIT_OK:
            _clear_failure()
    except TweakopsError as exc:
        if _debug():
            traceback.print_exc()
        print(color("31", f"error: {exc}", sys.stderr), file=sys.stderr, flush=True)
        code = exc.code
        _record_failure(str(exc), code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    _record_exit(code or 0)
    sys.exit(code or 0)


def hold_run(cfg: dict, what: str, wait: float | None = None) -> None:
    """Hold STATE_DIR/run.lock (run_lock) until this process exits."""
    hold = run_lock(cfg, what, wait)
    hold.__enter__()
    _HOLDS.append(hold)


_HOLDS: list = []
_LOCK_FILES: list = []  # descriptors of the run.lock files this process holds (a forked stage drops them)


def _debug() -> bool:
    """DEBUG from the environment or .env (a broken .env: the environment alone)."""
    try:
        return bool(config()["DEBUG"])
    except TweakopsError:
        return os.environ.get("DEBUG", "").lower() in ("1", "true", "yes", "on")


def _state_dir_anyway() -> tuple[Path, bool]:
    """STATE_DIR even when the configuration is broken (the error being recorded), and
    whether the configuration was sound (then it may be created)."""
    try:
        return Path(config()["STATE_DIR"]), True
    except TweakopsError:
        raw = os.environ.get("STATE_DIR")
        if raw is None:
            try:
                raw = read_env(Path(os.environ.get("TWEAKOPS_ENV_FILE") or ROOT / ".env")).get("STATE_DIR")
            except TweakopsError:
                raw = None
        return _abspath(raw or str(DEFAULTS["STATE_DIR"])), False


STAGES = {"fetch": "fetch", "detect_type": "detect", "train": "train", "parse_accuracy": "accuracy",
          "tweak": "tweak", "confirm": "confirm", "publish": "publish"}


def _record_failure(message: str, code: int) -> None:
    """A stage's error in run.env (FAILED_STAGE, FAILURE; publish: PUBLISH_ERROR) for the
    message to the developer; never when another run holds STATE_DIR (its state is not ours)."""
    name = STAGES.get(Path(sys.argv[0]).stem) if sys.argv else None
    if name is None or code == EXIT_BUSY:
        return
    try:
        extra = {"PUBLISH_ERROR": message} if name == "publish" else {}
        update_run(config(), FAILED_STAGE=name, FAILURE=message, **extra)
    except (TweakopsError, OSError):
        pass


def _clear_failure() -> None:
    """The stage that failed last time succeeded: its failure is over."""
    name = STAGES.get(Path(sys.argv[0]).stem) if sys.argv else None
    try:
        if name and read_run(cfg := config()).get("FAILED_STAGE") == name:
            update_run(cfg, FAILED_STAGE=None, FAILURE=None, PUBLISH_ERROR=None)
    except (TweakopsError, OSError):
        pass


def _record_exit(code: int) -> None:
    """STATE_DIR/exit_code keeps the last stage's exact code (make itself always exits 2),
    a configuration error's too: never an earlier stage's code left behind."""
    try:
        sd, sound = _state_dir_anyway()
        if sound or sd.is_dir():
            atomic_write(sd / "exit_code", f"{code}\n")
    except OSError:
        pass


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_real_line(output: str) -> str:
    """The script's last meaningful line: no colour codes, no progress-bar redraws."""
    for line in reversed(_ANSI.sub("", output).replace("\r", "\n").splitlines()):
        line = line.strip()
        if line and not line.startswith("File ") and "━" not in line:
            return line
    return "no output"
