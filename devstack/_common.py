"""Shared helpers of the devstack launchers: cache dir, lock files, free ports, child processes."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, ClassVar

log = logging.getLogger("devstack")

HOW_TO_GET_A_BROKER = (
    "set KAFKA_BOOTSTRAP_SERVERS (and SCHEMA_REGISTRY_URL) to an existing cluster, "
    "start a Docker engine, or install Java 17+ and Maven 3 "
    "(e.g. `apt-get install openjdk-17-jre-headless maven`)"
)


class StackUnavailable(RuntimeError):  # noqa: N818 - the name the project asked for
    """No Kafka broker / schema registry could be found or started on this machine."""


def env_flag(name: str, default: bool) -> bool:
    """Read a boolean environment variable (1/true/yes/on vs 0/false/no/off)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise StackUnavailable(f"{name}={raw!r} is not a number") from None


def cache_root() -> Path:
    """Where downloaded broker jars live: DEVSTACK_CACHE_DIR, else XDG cache / askelephant-kafka."""
    explicit = os.environ.get("DEVSTACK_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "askelephant-kafka"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) held for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def dir_size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file (for error messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


def make_workdir(prefix: str) -> Path:
    """A fresh temp dir owned by this process; stale ones of dead owners are swept first."""
    base = Path(tempfile.gettempdir())
    for stale in base.glob(f"{prefix}*"):
        with contextlib.suppress(OSError, ValueError):
            owner = int((stale / "owner.pid").read_text())
            if not _pid_alive(owner) and time.time() - stale.stat().st_mtime > 60:
                shutil.rmtree(stale, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    (workdir / "owner.pid").write_text(str(os.getpid()))
    return workdir


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM the child when the thread that spawned it dies (orphan guard)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A child process with its output in a log file, stopped by SIGTERM then SIGKILL.

    Every live instance is also stopped by an atexit hook, as a backstop for callers that
    forget (or crash before) calling stop().
    """

    _live: ClassVar[set[ManagedProcess]] = set()
    _live_lock = threading.Lock()

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log_file: IO[bytes] = log_path.open("wb")
        on_main_thread = threading.current_thread() is threading.main_thread()
        try:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                # PDEATHSIG fires when the spawning *thread* exits: only safe from the main thread.
                preexec_fn=_die_with_parent if on_main_thread else None,
            )
        except OSError:
            self._log_file.close()
            raise
        with ManagedProcess._live_lock:
            ManagedProcess._live.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self.popen.poll()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout` seconds, then SIGKILL. Idempotent."""
        code = self.popen.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                code = self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %.0fs; killing it",
                    self.name,
                    self.pid,
                    timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                code = self.popen.wait(timeout=10)
        if not self._log_file.closed:
            self._log_file.close()
        with ManagedProcess._live_lock:
            ManagedProcess._live.discard(self)
        return code

    @classmethod
    def stop_all(cls) -> None:
        with cls._live_lock:
            live = list(cls._live)
        for proc in live:
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)


atexit.register(ManagedProcess.stop_all)


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    process: ManagedProcess | None = None,
    interval: float = 0.05,
) -> float:
    """Call `check()` until it returns True; returns the seconds waited.

    Fails fast with StackUnavailable (including the log tail) if `process` exits meanwhile.
    """
    started = time.monotonic()
    deadline = started + timeout
    last_error: BaseException | None = None
    while True:
        if process is not None and (code := process.exited()) is not None:
            raise StackUnavailable(
                f"{what}: process exited with code {code} before it was ready; "
                f"last lines of {process.log_path}:\n{tail(process.log_path)}"
            )
        try:
            if check():
                return time.monotonic() - started
        except Exception as exc:  # readiness probes fail in many ways until ready
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            log_hint = (
                f"; last lines of {process.log_path}:\n{tail(process.log_path)}" if process else ""
            )
            raise StackUnavailable(f"{what} not ready after {timeout:.0f}s{detail}{log_hint}")
        time.sleep(interval)
