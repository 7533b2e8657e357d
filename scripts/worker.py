"""A warm worker for the local runner: attempts fork from a process that imported TensorFlow once.

Why: every attempt runs `python harness.py MODEL_FILE`, and importing TensorFlow and
Keras costs 5-7 s of it here, more than a tiny training. The harness reads its
TWEAKOPS_* environment when it is imported, so it must start fresh for each attempt;
the frameworks it imports need not. A worker ("zygote") imports them once and forks a
child per attempt; the child runs the harness as `__main__` exactly as a fresh
`python -u harness.py MODEL_FILE` would (environment, argv, sys.path, working
directory, standard streams), so the script cannot tell the difference.

What a worker preloads, by TWEAKOPS_RUNTIME (as harness.quiet_import_keras does, with
fd 2 muted unless TF_CPP_MIN_LOG_LEVEL is 0):
  keras3   `import keras` (TensorFlow, its backend, comes with it)
  keras2   TF_USE_LEGACY_KERAS=1 (in the job's environment), `import tensorflow, tf_keras`
  sklearn  numpy, sklearn, sklearn.base, sklearn.metrics and the common estimator
           modules (SKLEARN_COMMON: ensemble, linear_model, svm, tree, ...)
It imports nothing of tweakops (a user's `state.py` must stay the user's).

Key and address: a worker serves one key, the hash of what a fork inherits and cannot
change afterwards: the python executable, harness.py's and this file's content, the
runtime and the import-time environment (TF_*, KERAS_*, CUDA_*, XLA_*, OMP_*, MKL_*,
KMP_*, HDF5_*, TPU_*, PYTHON*, LC_*, LANG, HOME, LD_LIBRARY_PATH, LD_PRELOAD,
TWEAKOPS_RUNTIME, and what the imports themselves set). The imports also write to the
environment (TensorFlow: TF2_BEHAVIOR, HDF5_PLUGIN_PATH...; scikit-learn: KMP_*): the
worker notes what they changed and a child gets the attempt's environment with those
changes on top, as a cold run's script sees it; an attempt whose value of such a
variable differs from the worker's is refused (the runner then starts it cold). Its unix
socket is STATE_DIR/workers/<key>.sock, or /tmp/tweakops-<uid>/<hash>.sock when that
path is longer than a socket address can be (108 bytes). TWEAKOPS_WORKER_DIR in the
environment puts every STATE_DIR's sockets in that one folder instead: projects of one
user on one machine (a test suite's hundreds of STATE_DIRs) share a worker per key; its
own environment holds nothing of one project (worker_env: no TWEAKOPS_* file, no
DATA_DIR), its log is the STATE_DIR of the client that started it. A lock file beside it
(`<sock>.lock`, flock) serialises starting one: two clients racing end with one worker.

Protocol (one connection per attempt, newline-terminated JSON):
  client -> worker  {"key", "argv": [harness, model file], "cwd", "env": {...}} with the
                    attempt's stdin, stdout and stderr attached (SCM_RIGHTS)
  worker -> client  {"pid": n, "worker": w} at once (the child leads its own session:
                    os.killpg(pid) reaches the whole training), then {"exit": code} when
                    it ends (a signal n gives 128+n: a SIGKILL is 137, runners.EXIT_KILLED),
                    or {"error": "..."} when it could not fork
The worker is single-threaded (a select loop, SIGCHLD through a wakeup fd, waitpid
WNOHANG: forking from a threaded Python could deadlock) and reaps every child. A
client that goes away loses only its exit message: the harness's RESULT file tells it;
a request whose client left before the fork is dropped (that client started it cold).
`ps -f` shows a child with the worker's command line (a fork keeps it); `ps -o comm`
and top call the worker tweakops-worker and a child python.

Lifetime: started detached (double fork, own session, not the caller's child) by the
first client that finds no worker, with the job's environment. It binds its socket
first (a folder that cannot hold one fails at once, not after the import), listens once
the imports are done and then says `ready` on a pipe, so the first attempt costs what a
cold one does. It exits after IDLE_TIMEOUT seconds (300; TWEAKOPS_WORKER_IDLE in the
environment overrides it, e.g. for a test suite where each STATE_DIR has its worker)
with no request and no live child, when its socket path stops being its own (STATE_DIR
removed), or on SIGTERM (its children run on), removing its socket. A stale socket (its
worker dead) is replaced by the next client. Its own lines go to
STATE_DIR/logs/worker.log; it never writes to stdout.

What an attempt's script may see (`script_env`, the local runner's allow-list, warm or
cold): PATH, HOME, LANG/LANGUAGE, LC_*, TMPDIR/TMP/TEMP, TZ, USER, LOGNAME, VIRTUAL_ENV,
LD_LIBRARY_PATH, DATA_DIR, MPLBACKEND/MPLCONFIGDIR and the PYTHON*, TF_*, TF2_*, KERAS_*,
CUDA_*, XLA_*, OMP_*, MKL_*, KMP_*, OPENBLAS_*, NVIDIA_*, HDF5_*, JOBLIB_*, SKLEARN_*,
TWEAKOPS_* families, less PYTHONSTARTUP and PYTHONINSPECT and any name that reads like a
credential (PASSWORD, TOKEN, SECRET, API_KEY...): never SMTP_*, JENKINS_*,
NOTIFY_WEBHOOK_URL or MODEL_REPO. The runner adds what TRAIN_ENV names. A worker's own
environment is that allow-list too (plus the import-time variables of its key), never a
TRAIN_ENV extra: what a child reads of /proc/self/environ (the worker's, a fork keeps it)
holds nothing the attempt was not given.

Fallback: runners.LocalRunner uses a worker for jobs in its own interpreter with
WARM_WORKER on; any WorkerError (cannot start, socket error, worker died) makes it
start the attempt cold, with one `tweakops: warm worker unavailable (...)` line.

    attempt = worker.submit(state_dir, sys.executable, [harness, "model.py"], checkout, env,
                            (stdin_fd, out_fd, out_fd))
    attempt.pid, attempt.wait()
    $ python scripts/worker.py --socket PATH --key KEY --ready-fd N   # what submit starts
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import re
import runpy
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve()
HARNESS = HERE.parent / "harness.py"
IDLE_TIMEOUT = 300.0     # seconds without a request and no live child before a worker exits
READY_TIMEOUT = 180.0    # seconds a client waits for a new worker's imports (buildcheck's budget)
REPLY_TIMEOUT = 30.0     # seconds a client waits for the pid of its child
SUN_PATH_MAX = 107       # bytes of a unix socket path (108 with the NUL)
MAX_REQUEST = 4 << 20    # bytes of one request (the environment is most of it)
IMPORT_ENV_PREFIXES = ("TF_", "TF2_", "KERAS_", "CUDA_", "XLA_", "OMP_", "MKL_", "KMP_", "HDF5_", "TPU_",
                       "PYTHON", "LC_")
IMPORT_ENV_NAMES = ("TWEAKOPS_RUNTIME", "LD_LIBRARY_PATH", "LD_PRELOAD", "LANG", "HOME",
                    "ENABLE_RUNTIME_UPTIME_TELEMETRY")
SCRIPT_ENV_PREFIXES = ("LC_", "PYTHON", "TF_", "TF2_", "KERAS_", "CUDA_", "XLA_", "OMP_", "MKL_", "KMP_",
                       "OPENBLAS_", "NVIDIA_", "HDF5_", "JOBLIB_", "SKLEARN_", "TWEAKOPS_")
SCRIPT_ENV_NAMES = ("PATH", "HOME", "LANG", "LANGUAGE", "TMPDIR", "TMP", "TEMP", "TZ", "USER", "LOGNAME",
                    "VIRTUAL_ENV", "LD_LIBRARY_PATH", "DATA_DIR", "MPLBACKEND", "MPLCONFIGDIR")
SCRIPT_ENV_HAZARDS = ("PYTHONSTARTUP", "PYTHONINSPECT")   # run code of their own / stop at the end
CREDENTIAL_NAME = re.compile(r"PASSW|SECRET|TOKEN|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH|COOKIE")


class WorkerError(Exception):
    """The warm worker cannot serve this attempt; the runner starts it cold."""


class WorkerGone(WorkerError):
    """The worker closed the connection before it answered: it was exiting (idle, or
    killed: its last thread still held the socket), and started nothing."""


# ---------------------------------------------------------------------------
# Key and address (client side)

def import_env(env: dict[str, str]) -> dict[str, str]:
    """The part of an environment that a fork inherits from the worker's imports."""
    return {k: v for k, v in env.items() if k.startswith(IMPORT_ENV_PREFIXES) or k in IMPORT_ENV_NAMES}


def script_allowed(name: str) -> bool:
    """May an attempt's script see this variable of the machine's environment by default?"""
    return (name in SCRIPT_ENV_NAMES or name.startswith(SCRIPT_ENV_PREFIXES)) \
        and name not in SCRIPT_ENV_HAZARDS and not CREDENTIAL_NAME.search(name)


def script_env(environ) -> dict[str, str]:
    """The allow-listed part of `environ`: what Python, the frameworks and the harness need."""
    return {k: v for k, v in environ.items() if script_allowed(k)}


def key_for(python: str, env: dict[str, str]) -> str:
    """Which worker may run an attempt with this interpreter and environment."""
    digest = hashlib.sha256()
    for part in (python, HARNESS.read_bytes(), HERE.read_bytes(), env.get("TWEAKOPS_RUNTIME", ""),
                 json.dumps(sorted(import_env(env).items()))):
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def address(state_dir: Path, key: str) -> Path:
    """STATE_DIR/workers/<key>.sock (TWEAKOPS_WORKER_DIR/<key>.sock where that is set: one
    worker per key for every STATE_DIR), or a short path under /tmp where that is too long."""
    shared = os.environ.get("TWEAKOPS_WORKER_DIR")
    path = (Path(shared).resolve() if shared else Path(state_dir).resolve() / "workers") / f"{key}.sock"
    if len(os.fsencode(str(path))) <= SUN_PATH_MAX:
        return path
    short = hashlib.sha256(os.fsencode(str(path))).hexdigest()[:24]
    return Path(f"/tmp/tweakops-{os.getuid()}") / f"{short}.sock"


def _private_dir(folder: Path) -> None:
    """Make the socket's folder; it must be ours alone (under /tmp: no one else's symlink
    or folder, where a socket of theirs would get the attempt's environment)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise WorkerError(f"{folder} is not a folder of this user's alone")


@contextlib.contextmanager
def _flock(path: Path, timeout: float):
    """An exclusive flock on `path`, waited for at most `timeout` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WorkerError(f"{path} stayed locked for {timeout:.0f}s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Client

class Attempt:
    """One attempt a worker forked: its pid, and its exit code from the connection."""

    def __init__(self, conn: socket.socket, pid: int, worker_pid: int, pending: bytes = b""):
        self.conn = conn
        self.pid = pid
        self.worker_pid = worker_pid
        self.code: int | None = None
        self.lost = False           # the worker went away before saying how the child ended
        self._buffer = pending

    def _take(self) -> bool:
        """Parse the exit message if it is in the buffer; True once the attempt is settled."""
        if b"\n" in self._buffer:
            line = self._buffer.split(b"\n", 1)[0]
            try:
                self.code = int(json.loads(line)["exit"])
            except (ValueError, KeyError, TypeError):
                self.lost = True
            self.close()
        return self.code is not None or self.lost

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code; None when the worker was lost (or `timeout` seconds passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._take():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self.conn], [], [], left)
                chunk = self.conn.recv(4096) if ready else None
            except (OSError, ValueError):
                chunk = b""
            if chunk is None:
                return None  # nothing yet
            if not chunk:
                self.lost = True
                self.close()
                break
            self._buffer += chunk
        return self.code

    def poll(self) -> int | None:
        """The exit code if the worker has sent it, without waiting."""
        return self.wait(timeout=0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(REPLY_TIMEOUT)
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The worker's own environment: the job's allow-listed and import-time variables, less
    what belongs to one attempt only (its TWEAKOPS_* files, DATA_DIR, a TRAIN_ENV extra)."""
    kept = {**script_env(env), **import_env(env)}
    return {k: v for k, v in kept.items()
            if k == "TWEAKOPS_RUNTIME" or not (k.startswith("TWEAKOPS_") or k == "DATA_DIR")}


def spawn(path: Path, key: str, python: str, env: dict[str, str], cwd: Path, log: Path,
          idle: float) -> None:
    """Start a worker detached and wait until it says it is ready (its imports done)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    ready_r, ready_w = os.pipe()
    try:
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [python, "-u", str(HERE), "--socket", str(path), "--key", key, "--ready-fd", str(ready_w),
                 "--idle", str(idle)],
                cwd=cwd, env=worker_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True, pass_fds=(ready_w,))
        os.close(ready_w)
        ready_w = -1
        proc.wait(timeout=30)  # the launcher: it forks the worker and exits at once
        said = b""
        deadline = time.monotonic() + READY_TIMEOUT
        while b"\n" not in said:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([ready_r], [], [], left)[0]:
                raise WorkerError(f"the worker was not ready after {READY_TIMEOUT:.0f}s (see {log})")
            chunk = os.read(ready_r, 256)
            if not chunk:
                raise WorkerError(f"the worker exited while it started (see {log})")
            said += chunk
        if not said.startswith(b"ready"):
            raise WorkerError(f"the worker said {said.decode(errors='replace').strip()!r}")
    except (OSError, subprocess.SubprocessError) as exc:
        raise WorkerError(f"cannot start the worker: {exc}") from None
    finally:
        os.close(ready_r)
        if ready_w >= 0:
            os.close(ready_w)


def ensure(state_dir: Path, key: str, python: str, env: dict[str, str], cwd: Path,
           idle: float) -> socket.socket:
    """A connection to the worker for `key`, started first when none listens."""
    path = address(state_dir, key)
    try:
        _private_dir(path.parent)
        return _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass  # none yet, a dead one's socket, or one still importing: see under the lock
    except OSError as exc:
        raise WorkerError(f"cannot connect to {path}: {exc.strerror or exc}") from None
    try:
        with _flock(path.with_name(path.name + ".lock"), READY_TIMEOUT + 10):
            try:
                return _connect(path)  # another client started it meanwhile
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if os.path.lexists(path):
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise WorkerError(f"{path} is in the way and is not a socket")
                os.unlink(path)  # stale: its worker is dead
            spawn(path, key, python, env, cwd, Path(state_dir) / "logs" / "worker.log", idle)
            return _connect(path)
    except OSError as exc:
        raise WorkerError(f"{path}: {exc.strerror or exc}") from None


def _request(sock: socket.socket, key: str, argv: list[str], cwd: Path, env: dict[str, str],
             fds: tuple[int, int, int]) -> Attempt:
    payload = json.dumps({"key": key, "argv": argv, "cwd": str(cwd), "env": env}).encode() + b"\n"
    reply = b""
    try:
        sent = socket.send_fds(sock, [payload], list(fds))
        if sent < len(payload):
            sock.sendall(payload[sent:])
        while b"\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("closed")
            reply += chunk
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise WorkerGone(f"the worker closed the connection before starting the attempt ({exc})") from None
    line, rest = reply.split(b"\n", 1)
    answer = json.loads(line)
    if "error" in answer:
        raise WorkerError(answer["error"])
    sock.settimeout(None)
    return Attempt(sock, int(answer["pid"]), int(answer.get("worker") or 0), rest)


def submit(state_dir: Path, python: str, argv: list[str], cwd: Path, env: dict[str, str],
           fds: tuple[int, int, int], idle: float | None = None) -> Attempt:
    """Run `argv` (harness.py and the model file) in a child of the warm worker for this
    interpreter and environment, with `fds` as its stdin, stdout and stderr. Raises
    WorkerError when no worker can serve it (the caller starts the attempt cold)."""
    key = key_for(python, env)
    if idle is None:
        try:
            idle = float(env.get("TWEAKOPS_WORKER_IDLE") or IDLE_TIMEOUT)
        except ValueError:
            idle = IDLE_TIMEOUT
    for tries_left in (1, 0):  # a worker that exits at idle just as we connect: start a new one once
        sock = ensure(state_dir, key, python, env, cwd, idle)
        try:
            return _request(sock, key, argv, cwd, env, fds)
        except WorkerGone:
            sock.close()
            if not tries_left:
                raise
        except WorkerError:
            sock.close()
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            sock.close()  # the worker sees us gone and never starts this request
            raise WorkerError(f"the worker did not answer: {exc}") from None


# ---------------------------------------------------------------------------
# Worker (server side)

def log(message: str) -> None:
    """One line in STATE_DIR/logs/worker.log (the worker's stderr)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    runtime = os.environ.get("TWEAKOPS_RUNTIME", "?")
    print(f"{stamp} worker {os.getpid()} [{runtime}]: {message}", file=sys.stderr, flush=True)


# the estimator families scripts import most (their shared dependencies make them cheap
# together): the tweak that turns a tree into a forest then imports nothing new
SKLEARN_COMMON = ("sklearn.ensemble", "sklearn.linear_model", "sklearn.model_selection", "sklearn.neighbors",
                  "sklearn.neural_network", "sklearn.pipeline", "sklearn.preprocessing", "sklearn.svm",
                  "sklearn.tree")


def preload(runtime: str) -> None:
    """Import what the harness imports before the user's script runs, for `runtime`."""
    def load():
        if runtime == "sklearn":
            import numpy  # noqa: F401
            import sklearn.base  # noqa: F401
            import sklearn.metrics  # noqa: F401
            for name in SKLEARN_COMMON:   # 0.16 s once here; 0.1-0.2 s off every later attempt
                importlib.import_module(name)
        elif runtime == "keras2":
            os.environ["TF_USE_LEGACY_KERAS"] = "1"
            import tensorflow  # noqa: F401
            import tf_keras  # noqa: F401
        else:
            import keras  # noqa: F401  (and TensorFlow, its backend)
    # the harness's own muting (its module state is read from the env at import and
    # never used here: each attempt runs harness.py afresh as __main__)
    import harness
    harness._muted_fd2(load)


def exit_code(status: int) -> int:
    """A wait status as the runners report it: a signal n is 128+n."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    try:
        while not data.endswith(b"\n"):
            if len(data) > MAX_REQUEST:
                raise ValueError("request too large")
            chunk = conn.recv(65536)
            if not chunk:
                raise ValueError("the request ended early")
            data += chunk
        request = json.loads(data)
        if len(fds) != 3 or not isinstance(request.get("argv"), list) or not isinstance(request.get("env"), dict):
            raise ValueError("a request needs argv, env and three file descriptors")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def _hung_up(conn: socket.socket) -> bool:
    """Has the client closed its end (nothing more to read, ever)?"""
    try:
        if not select.select([conn], [], [], 0)[0]:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _finish(code: int) -> None:
    """End a child as Python's own exit would (threads joined, atexit run), then _exit."""
    with contextlib.suppress(BaseException):
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(code & 0xFF)


def _run_child(request: dict, fds: list[int], base_path: list[str], changes: dict) -> int:
    """In the forked child: become a fresh `python -u harness.py MODEL_FILE`, run it."""
    for fd_target, fd in enumerate(fds):
        os.dup2(fd, fd_target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in changes.items():  # what the imports did to a cold run's environment
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    argv = [str(a) for a in request["argv"]]
    sys.argv = argv
    sys.path[:] = [os.path.dirname(os.path.abspath(argv[0])), *base_path[1:]]
    importlib.invalidate_caches()  # files written since the worker started are seen
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


class Server:
    """The select loop: accept requests, fork children, reap them, exit when idle."""

    def __init__(self, listener: socket.socket, path: Path, key: str, idle: float, base_path: list[str],
                 before: dict, changes: dict):
        self.path = path
        self.key = key
        self.idle = idle
        self.base_path = base_path
        self.before = before      # the environment the imports ran in
        self.changes = changes    # what they set (None: removed)
        self.children: dict[int, socket.socket | None] = {}
        self.last = time.monotonic()
        self.stopping = False
        self.listener = listener
        self.listener.listen(64)
        self.inode = os.stat(path).st_ino
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler: the wakeup fd is written
        signal.signal(signal.SIGTERM, self._stop)

    def _stop(self, *_):
        self.stopping = True

    def own_address(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def release_address(self) -> None:
        """Remove the socket path if it is still ours (a newer worker may have taken it).
        A lock held long is a client starting a worker: the path is left to it (stale)."""
        try:
            with _flock(self.path.with_name(self.path.name + ".lock"), 5):
                if self.own_address():
                    os.unlink(self.path)
        except (OSError, WorkerError) as exc:
            log(f"could not remove {self.path}: {exc}")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_code(status)
            conn = self.children.pop(pid, None)
            log(f"attempt pid {pid} exited with {code}")
            self.last = time.monotonic()
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
                conn.close()

    def fork(self, request: dict, fds: list[int], conn: socket.socket) -> int:
        """Fork a child for `request`; return its pid once it leads its own session."""
        sync_r, sync_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: nothing of the worker's may stay open or installed
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                os.close(sync_r)
                for fd in (self.wake_r, self.wake_w):
                    os.close(fd)
                for sock in (self.listener, conn, *self.children.values()):
                    if sock is not None:
                        sock.close()
                os.setsid()
                name("python")  # what a cold run is called
                os.write(sync_w, b"x")
                os.close(sync_w)
                code = _run_child(request, fds, self.base_path, self.changes)
            except BaseException:  # noqa: BLE001 - the child must never return into the loop
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                _finish(code)
        os.close(sync_w)
        try:
            if select.select([sync_r], [], [], 10)[0]:
                os.read(sync_r, 1)  # b"" too: the child died before setsid; waitpid tells
        finally:
            os.close(sync_r)
        return pid

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            request, fds = _read_request(conn)
        except (OSError, ValueError) as exc:
            log(f"bad request: {exc}")
            conn.close()
            return
        self.last = time.monotonic()
        if _hung_up(conn):  # it gave up waiting (and starts the attempt cold): never run it twice
            log("a client left before its attempt started; dropped it")
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        try:
            if request.get("key") != self.key:
                raise ValueError(f"this worker serves key {self.key}, not {request.get('key')}")
            for name in self.changes:
                if request["env"].get(name) != self.before.get(name):
                    raise ValueError(f"the attempt's {name} differs from the worker's, and its imports set it")
            pid = self.fork(request, fds, conn)
        except (OSError, ValueError) as exc:
            log(f"cannot start the attempt: {exc}")
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
            conn.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        log(f"attempt pid {pid}: {' '.join(request['argv'])} in {request.get('cwd')}")
        self.children[pid] = conn
        try:
            conn.sendall(json.dumps({"pid": pid, "worker": os.getpid()}).encode() + b"\n")
        except OSError:
            conn.close()
            self.children[pid] = None

    def client_gone(self, conn: socket.socket) -> None:
        """A client closed its connection: its child runs on, untold."""
        for pid, c in self.children.items():
            if c is conn:
                self.children[pid] = None
        conn.close()

    def drain(self) -> None:
        """Serve connections already queued on the listener (one that raced the idle exit)."""
        self.listener.setblocking(False)
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, OSError):
                return
            conn.setblocking(True)
            self.handle(conn)

    def close_listener(self, drain: bool = True) -> None:
        """Stop listening: the socket path goes first, then what was queued is served."""
        if self.own_address():
            self.release_address()
        if drain:
            self.drain()
        self.listener.close()
        self.listener = None

    def run(self) -> None:
        checked = time.monotonic()
        while True:
            self.reap()
            now = time.monotonic()
            if self.stopping:
                if self.listener is not None:
                    self.close_listener(drain=False)
                log(f"stopped (SIGTERM); {len(self.children)} attempt(s) run on")
                return
            if self.listener is not None:
                idle_for = now - self.last
                if not self.children and idle_for >= self.idle:
                    log(f"idle for {idle_for:.0f}s: exiting")
                    self.close_listener()
                elif now - checked >= 2:
                    checked = now
                    if not self.own_address():
                        log(f"{self.path} is no longer this worker's: serving no new attempts")
                        self.listener.close()
                        self.listener = None
            if self.listener is None and not self.children:
                return
            conns = [c for c in self.children.values() if c is not None]
            watch = [self.wake_r, *conns] + ([self.listener] if self.listener is not None else [])
            timeout = max(0.05, min(2.0, self.idle - (now - self.last)))
            ready, _, _ = select.select(watch, [], [], timeout)
            for item in ready:
                if item == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                elif item is self.listener:
                    try:
                        conn, _ = self.listener.accept()
                    except OSError:
                        continue
                    self.handle(conn)
                else:
                    try:
                        data = item.recv(512)
                    except OSError:
                        data = b""
                    if not data:
                        self.client_gone(item)


def daemonize(ready_fd: int) -> None:
    """Leave the launcher (the client waits for it) so the worker is nobody's child."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    os.chdir("/")
    name("tweakops-worker")


def name(comm: str) -> None:
    """The process name top and `ps -o comm` show (a child keeps the worker's command line)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(comm[:15])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="unix socket path to listen on")
    parser.add_argument("--key", required=True, help="the key of the attempts this worker serves")
    parser.add_argument("--ready-fd", type=int, default=-1, help="write 'ready PID' here once listening")
    parser.add_argument("--idle", type=float, default=IDLE_TIMEOUT, help="seconds idle before exiting")
    args = parser.parse_args(argv)
    base_path = list(sys.path)  # a fresh `python harness.py`'s, before anything is imported
    daemonize(args.ready_fd)
    started = time.monotonic()
    runtime = os.environ.get("TWEAKOPS_RUNTIME", "keras3")
    bound = False
    try:
        # bound first (a folder that takes no socket fails before the import), listening
        # after it: a client that connects meanwhile is refused and waits on the lock
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(args.socket)
        bound = True
        before = dict(os.environ)
        preload(runtime)
        changes = {k: os.environ.get(k) for k in {*before, *os.environ} if before.get(k) != os.environ.get(k)}
        server = Server(listener, Path(args.socket), args.key, args.idle, base_path, before, changes)
    except BaseException as exc:  # noqa: BLE001 - said in the log; the client starts cold
        log(f"cannot start: {exc.__class__.__name__}: {exc}")
        if bound:
            with contextlib.suppress(OSError):
                os.unlink(args.socket)
        if args.ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(args.ready_fd, f"failed {exc.__class__.__name__}: {exc}\n".encode())
        return 1
    log(f"ready in {time.monotonic() - started:.1f}s on {args.socket} (key {args.key})")
    if args.ready_fd >= 0:
        with contextlib.suppress(OSError):
            os.write(args.ready_fd, f"ready {os.getpid()}\n".encode())
        os.close(args.ready_fd)
    try:
        server.run()
    finally:
        if server.listener is not None:
            server.close_listener(drain=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
