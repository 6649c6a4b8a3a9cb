"""Private, throwaway PostgreSQL and Mosquitto servers.

Used by the integration-test fixtures and by ``safeguard demo``. Each server is a
child process of ours, listens on a private port on 127.0.0.1 (never the system's
1883/5432) and keeps all of its state under a directory the caller chooses, so it
never touches a system-wide cluster or broker.

Both servers are started in their own session (process group): a Ctrl-C typed in the
terminal reaches only our Python process, which then shuts the servers down in order
via :meth:`stop`. ``stop`` escalates to SIGKILL on the whole process group, so no
server process outlives it. As a last resort, a server that was started but never
stopped is killed when the interpreter exits.

Running as root
---------------
PostgreSQL refuses to run as root, so when ``os.geteuid() == 0`` ``initdb`` and
``postgres`` run as the ``postgres`` system user (``subprocess`` ``user=``/``group=``,
supplementary groups cleared). That user must be able to reach the data directory:
every ancestor directory has to be searchable (``x``) by it. pytest's ``tmp_path``
lives under ``/tmp/pytest-of-root`` which is mode 0700, so for ancestors that lie
inside the system temp directory and are owned by us we add the world *search* bit
only (``o+x``: no listing, no reading, no writing; pytest resets its own root dir to
0700 at the start of the next session anyway). Ancestors outside the temp directory
are never modified; if one is not searchable we raise :class:`DevServerError`
explaining what to change.

Mosquitto 2.x started as root drops privileges by itself (to ``mosquitto``, falling
back to ``nobody``). It reads its configuration before doing so and we send its log
to stderr, which we redirect into ``work_dir/mosquitto.log`` from a file we opened, so
nothing needs to be writable by the unprivileged user.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg

__all__ = [
    "DevServerError",
    "MosquittoServer",
    "MosquittoTls",
    "PostgresServer",
    "ServerNotFound",
    "find_mosquitto",
    "find_postgres_bindir",
    "free_port",
    "timescaledb_available",
]

log = logging.getLogger(__name__)

_PG_INSTALL_HINT = (
    "Install them: apt-get install postgresql  (or: dnf install postgresql-server / brew install postgresql@15)"
)
_TSDB_INSTALL_HINT = (
    "Install it: ../shared/tools/install-timescaledb where that folder exists, or the timescaledb-2-postgresql-<major>"
    " package from packagecloud.io/timescale (docs/operations.md)"
)
_MOSQUITTO_INSTALL_HINT = "Install it: apt-get install mosquitto  (or: dnf install mosquitto / brew install mosquitto)"
_MOSQUITTO_CANDIDATES = (
    Path("/usr/sbin/mosquitto"),
    Path("/usr/local/sbin/mosquitto"),
    Path("/opt/homebrew/sbin/mosquitto"),
    Path("/usr/local/opt/mosquitto/sbin/mosquitto"),
)
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), including the NUL.
_MAX_UNIX_SOCKET_PATH = 100
_LOG_TAIL_LINES = 30
_RUNNING_RE = re.compile(r"mosquitto version \S+ running")


class DevServerError(RuntimeError):
    """A private server could not be set up, started or stopped."""


class ServerNotFound(DevServerError):
    """The server binaries are not installed; the message says what to install."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin`` (``9.6`` < ``10`` < ``15``)."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (-1,)


def _is_pg_bindir(path: Path) -> bool:
    return _is_executable(path / "initdb") and _is_executable(path / "postgres")


def find_postgres_bindir() -> Path:
    """Locate the directory holding ``initdb`` and ``postgres``.

    Preference: the highest version under ``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu),
    then the directory of ``initdb``/``pg_ctl`` found on ``PATH`` (symlinks resolved),
    then ``pg_config --bindir``.
    """
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for candidate in debian:
        if _is_pg_bindir(candidate):
            return candidate
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            candidate = Path(found).resolve().parent
            if _is_pg_bindir(candidate):
                return candidate
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("pg_config --bindir failed: %s", exc)
        else:
            if out and _is_pg_bindir(Path(out)):
                return Path(out)
    raise ServerNotFound(
        "PostgreSQL server binaries not found (looked in PATH, pg_config --bindir, "
        f"/usr/lib/postgresql/*/bin). {_PG_INSTALL_HINT}"
    )


def _pg_config_dir(bindir: Path, option: str, debian: Path) -> Path:
    """``pg_config --<option>`` of the server in ``bindir``; Debian's layout when pg_config is not
    installed (it comes with the -dev package)."""
    pg_config = bindir / "pg_config"
    if _is_executable(pg_config):
        try:
            out = subprocess.run(
                [str(pg_config), f"--{option}"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("pg_config --%s failed: %s", option, exc)
        else:
            if out:
                return Path(out)
    return debian


def timescaledb_available(bindir: Path | None = None) -> bool:
    """Whether the TimescaleDB extension is installed for the PostgreSQL server in ``bindir``
    (default: :func:`find_postgres_bindir`), so that ``PostgresServer(..., timescale=True)`` can
    load it. False when there is no server at all."""
    try:
        bindir = bindir or find_postgres_bindir()
    except ServerNotFound:
        return False
    major = bindir.parent.name  # /usr/lib/postgresql/<major>/bin on Debian; only used for its fallbacks
    libdir = _pg_config_dir(bindir, "pkglibdir", bindir.parent / "lib")
    sharedir = _pg_config_dir(bindir, "sharedir", Path("/usr/share/postgresql") / major)
    return (libdir / "timescaledb.so").is_file() and (sharedir / "extension" / "timescaledb.control").is_file()


def find_mosquitto() -> Path:
    """Locate the ``mosquitto`` broker binary (``PATH``, then the usual sbin dirs)."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in _MOSQUITTO_CANDIDATES:
        if _is_executable(candidate):
            return candidate
    raise ServerNotFound(
        f"Mosquitto MQTT broker not found (looked in PATH, {', '.join(map(str, _MOSQUITTO_CANDIDATES))}). "
        f"{_MOSQUITTO_INSTALL_HINT}"
    )


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    """Log text written since ``offset`` (where this start began appending)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"


def _tail(path: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(_read_from(path, offset).splitlines()[-lines:]) or "(empty)"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (our children start their own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _kill_at_exit(proc: subprocess.Popen[bytes]) -> None:
    """Finalizer: a server that was never stopped must not outlive the interpreter."""
    if proc.poll() is None:
        log.warning("killing leftover dev server pid %d", proc.pid)
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _terminate(proc: subprocess.Popen[bytes], first: signal.Signals, grace: float, name: str) -> None:
    """Send ``first`` to the leader, wait ``grace`` s, then SIGKILL the whole group and reap.

    The group is signalled only while its leader is unreaped (alive, or a zombie we hold): once
    reaped, its pid is free, and on a machine with a small ``pid_max`` a PostgreSQL backend (each
    calls ``setsid()``, so its pid is its group) of the shared test server can take it over, and
    a late ``killpg`` kills that backend mid-test."""
    if proc.returncode is not None:
        return  # reaped earlier (poll, wait): its group's pid may be someone else's by now
    try:
        if not _exited_unreaped(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, first)  # not proc.send_signal: that polls, and a poll reaps
            if not _exited_unreaped(proc.pid, grace):
                log.warning("%s (pid %d) did not stop within %.0fs; killing it", name, proc.pid, grace)
    except ChildProcessError:  # reaped by another thread's poll meanwhile: the group is not ours to kill
        proc.poll()
        return
    # Anything still in the group (the leader if it hung, or orphaned children) goes now.
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _exited_unreaped(pid: int, timeout: float = 0.0) -> bool:
    """Whether our child ``pid`` exits within ``timeout`` s; it stays a zombie (``WNOWAIT``), so its
    pid cannot be reused while we signal its group. ``ChildProcessError`` if it was reaped already."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _clean_env() -> dict[str, str]:
    """Environment for server processes: no PG* variables leaking in, a plain C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------- root handling


class _RunAs:
    """Unprivileged identity for PostgreSQL when we are root (None fields: run as ourselves)."""

    def __init__(self, uid: int | None, gid: int | None, name: str | None) -> None:
        self.uid = uid
        self.gid = gid
        self.name = name

    def popen_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        # extra_groups=[] clears root's supplementary groups (setgroups) before setuid.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    @classmethod
    def for_postgres(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls(None, None, None)
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise DevServerError(
                "Running as root, but PostgreSQL refuses to run as root and there is no 'postgres' "
                "system user to run it as. Create one (useradd --system --user-group postgres), "
                "install the distribution package (apt-get install postgresql), or run as a normal user."
            ) from None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)

    def can_search(self, st: os.stat_result) -> bool:
        assert self.uid is not None
        assert self.name is not None
        if self.uid == st.st_uid:
            return bool(st.st_mode & stat.S_IXUSR)
        groups = {self.gid} | {g.gr_gid for g in grp.getgrall() if self.name in g.gr_mem}
        if st.st_gid in groups:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)

    def make_reachable(self, target: Path) -> None:
        """Ensure every ancestor of ``target`` is searchable by this user (see module docstring)."""
        if self.uid is None:
            return
        temp_root = Path(tempfile.gettempdir()).resolve()
        for ancestor in reversed(target.parents):
            st = ancestor.stat()
            if self.can_search(st):
                continue
            if ancestor.is_relative_to(temp_root) and ancestor != temp_root and st.st_uid == os.geteuid():
                log.info("adding o+x (search only) to %s so user %s can reach %s", ancestor, self.name, target)
                os.chmod(ancestor, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
                continue
            raise DevServerError(
                f"Running as root, PostgreSQL runs as user {self.name!r}, which cannot reach {target}: "
                f"directory {ancestor} (mode {stat.S_IMODE(st.st_mode):04o}) is not searchable by it. "
                f"Put the data directory somewhere that user can reach (e.g. under {temp_root} or /var/tmp), "
                f"or allow traversal: chmod o+x {ancestor}"
            )


# --------------------------------------------------------------------------- shared


class _ChildServer:
    """A server process of ours: spawned in its own session, killed at exit if not stopped."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _spawn(self, args: list[str], cwd: Path | str, **popen_kwargs: Any) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as logf:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                cwd=cwd,
                start_new_session=True,
                **popen_kwargs,
            )
        self._proc = proc
        self._finalizer = weakref.finalize(self, _kill_at_exit, proc)
        return proc

    def _forget(self) -> subprocess.Popen[bytes] | None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        return proc

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- PostgreSQL


class PostgresServer(_ChildServer):
    """A private PostgreSQL cluster in ``data_dir``, created on first start and reused after.

    Authentication is ``trust`` for the superuser ``postgres``; the server listens on
    ``host:port`` only, with its unix socket inside ``data_dir``. ``fast=True`` turns off
    durability (fsync, synchronous_commit, full_page_writes) for tests.

    ``timescale=True`` preloads TimescaleDB (``shared_preload_libraries``; telemetry off), so that
    ``CREATE EXTENSION timescaledb`` works; :func:`timescaledb_available` tells whether it is
    installed (:class:`ServerNotFound` on start if not). ``timescale_jobs=False`` also stops its
    background job scheduler, so no policy (compression, retention, aggregate refresh) runs on its
    own: tests run them by hand, at the moment they choose.
    """

    def __init__(
        self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1", fast: bool = False, *,
        timescale: bool = False, timescale_jobs: bool = True, log_sessions: bool = False,
    ) -> None:
        super().__init__()
        self.log_sessions = log_sessions  # every session's end in the log (log_disconnections)
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.fast = fast
        self.timescale = timescale
        self.timescale_jobs = timescale_jobs
        self._socket_tmp: Path | None = None

    # -- public API ------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        if self.port is None:
            raise DevServerError("PostgresServer has no port yet; call start() first")
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        bindir = find_postgres_bindir()
        if self.timescale and not timescaledb_available(bindir):
            raise ServerNotFound(f"TimescaleDB is not installed for the PostgreSQL in {bindir}. {_TSDB_INSTALL_HINT}")
        run_as = _RunAs.for_postgres()
        self._prepare_data_dir(run_as)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, run_as)
        if self.port is None:
            self.port = free_port(self.host)
        socket_dir = self._socket_dir(run_as)

        args = [
            str(bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(socket_dir),
            "-c", f"listen_addresses={self.host}",
        ]  # fmt: skip
        if self.fast:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        if self.log_sessions:
            args += ["-c", "log_disconnections=on"]
        if self.timescale:
            args += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]
            if not self.timescale_jobs:
                # No scheduler: no worker connects to a database on its own (CREATE DATABASE ... TEMPLATE
                # needs its template unused), and no policy runs behind a test's back.
                args += ["-c", "timescaledb.max_background_workers=0"]

        log.info("starting PostgreSQL (%s) on %s:%d, data in %s", bindir, self.host, self.port, self.data_dir)
        log_offset = _log_size(self.log_path)
        self.log_path.touch()
        run_as.chown(self.log_path)
        proc = self._spawn(args, "/", **run_as.popen_kwargs())
        try:
            self._wait_ready(timeout, log_offset)
        except BaseException:
            self.stop()
            raise
        log.info("PostgreSQL ready at %s (pid %d)", self.url, proc.pid)

    def stop(self) -> None:
        proc = self._forget()
        if proc is not None:
            # SIGINT = "fast" shutdown: roll back open transactions, disconnect clients, checkpoint.
            _terminate(proc, signal.SIGINT, grace=30.0, name="PostgreSQL")
            log.info("PostgreSQL (pid %d) stopped", proc.pid)
        if self._socket_tmp is not None:
            shutil.rmtree(self._socket_tmp, ignore_errors=True)
            self._socket_tmp = None

    # -- internals -------------------------------------------------------------------

    def _prepare_data_dir(self, run_as: _RunAs) -> None:
        self.data_dir = self.data_dir.absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.data_dir.resolve()
        if run_as.uid is not None:
            run_as.make_reachable(self.data_dir)
            if self.data_dir.stat().st_uid != run_as.uid:
                # Normally the freshly created, empty dir; a cluster left by an earlier run under
                # another identity is handed over as a whole. Nothing outside data_dir changes owner.
                for path in (self.data_dir, *self.data_dir.rglob("*")):
                    run_as.chown(path)
        os.chmod(self.data_dir, 0o700)

    def _initdb(self, bindir: Path, run_as: _RunAs) -> None:
        args = [
            str(bindir / "initdb"),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
        ]  # fmt: skip
        if self.fast:
            args.append("--no-sync")
        log.info("initialising PostgreSQL cluster in %s", self.data_dir)
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=_clean_env(),
            cwd="/",
            check=False,
            **run_as.popen_kwargs(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise DevServerError(f"initdb failed (exit {result.returncode}) for {self.data_dir}:\n{output}")

    def _socket_dir(self, run_as: _RunAs) -> Path:
        """The data dir, unless the socket path would be too long for sockaddr_un."""
        assert self.port is not None
        if len(str(self.data_dir / f".s.PGSQL.{self.port}.lock")) <= _MAX_UNIX_SOCKET_PATH:
            return self.data_dir
        self._socket_tmp = Path(tempfile.mkdtemp(prefix="sg-pgsock-"))
        run_as.chown(self._socket_tmp)
        log.debug("data dir path too long for a unix socket; using %s", self._socket_tmp)
        return self._socket_tmp

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DevServerError(
                    f"PostgreSQL exited with code {self._proc.returncode} during start-up. "
                    f"Tail of {self.log_path}:\n{_tail(self.log_path, log_offset)}"
                )
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    row = conn.execute("SELECT current_setting('data_directory')").fetchone()
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            # Someone else's server on this port would also answer; make sure it is ours.
            if row is not None and Path(row[0]) == self.data_dir:
                return
            last_error = DevServerError(f"port {self.port} is served by a cluster in {row[0] if row else '?'}")
            time.sleep(0.1)
        raise DevServerError(
            f"PostgreSQL did not accept connections on {self.host}:{self.port} within {timeout:.0f}s "
            f"(last error: {last_error}). Tail of {self.log_path}:\n{_tail(self.log_path, log_offset)}"
        )


# --------------------------------------------------------------------------- Mosquitto


@dataclass(frozen=True, slots=True)
class MosquittoTls:
    """A TLS listener's files (PEM). ``cafile`` with ``require_certificate``: clients must present a
    certificate that CA signed. Mosquitto reads them after dropping root: they must be readable by it."""

    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    require_certificate: bool = False

    def lines(self) -> list[str]:
        return [f"certfile {self.certfile}", f"keyfile {self.keyfile}",
                *([f"cafile {self.cafile}"] if self.cafile else []),
                *(["require_certificate true"] if self.require_certificate else [])]


class MosquittoServer(_ChildServer):
    """A private Mosquitto broker listening on ``host:port`` with anonymous access, no persistence.

    ``identity``: a folder of ``safeguard broker-config`` files (gateway.broker_config): the broker
    then has the production layout, an external listener on ``port`` (sites and dispatch, client id
    = username) and an internal one on ``internal_port`` (the gateway), each with its own password
    file and ACL; ``tls`` makes both listeners TLS. :meth:`reload` re-reads the files (SIGHUP)."""

    def __init__(
        self,
        work_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        max_queued_messages: int = 100_000,
        auth: tuple[Path, Path] | None = None,
        max_inflight_messages: int = 20,
        identity: Path | None = None,
        tls: MosquittoTls | None = None,
        internal_port: int | None = None,
    ) -> None:
        """``auth``: a password file and an ACL file; anonymous clients are then refused.
        ``max_inflight_messages``: unacknowledged QoS 1 messages towards an MQTT 3.1.1 client (0: no
        limit, as the shipped production config); MQTT 5 clients set their own Receive Maximum."""
        super().__init__()
        self.work_dir = Path(work_dir)
        self.port = port
        self.host = host
        self.max_queued_messages = max_queued_messages
        self.auth = auth
        self.max_inflight_messages = max_inflight_messages
        if identity is not None and auth is not None:
            raise ValueError("identity and auth are two ways to configure accounts: give one")
        self.identity = identity
        self.tls = tls
        self.internal_port = internal_port

    @property
    def config_path(self) -> Path:
        return self.work_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "mosquitto.log"

    @property
    def url(self) -> str:
        if self.port is None:
            raise DevServerError("MosquittoServer has no port yet; call start() first")
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def internal_url(self) -> str:
        """The gateway's listener (with ``identity``)."""
        if self.internal_port is None:
            raise DevServerError("MosquittoServer has no internal listener (identity not set, or not started)")
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.internal_port}"

    def _listeners(self) -> list[str]:
        assert self.port is not None
        tls = self.tls.lines() if self.tls else []
        if self.identity is not None:
            from gateway import broker_config as bc  # noqa: PLC0415 - only a broker with an identity needs broker-config's file names

            assert self.internal_port is not None
            return ["per_listener_settings true",
                    f"listener {self.port} {self.host}", *tls, "use_username_as_clientid true",
                    "allow_anonymous false", f"password_file {self.identity / bc.EXTERNAL_PASSWORDS}",
                    f"acl_file {self.identity / bc.EXTERNAL_ACL}",
                    f"listener {self.internal_port} {self.host}", *tls,
                    "allow_anonymous false", f"password_file {self.identity / bc.INTERNAL_PASSWORDS}",
                    f"acl_file {self.identity / bc.INTERNAL_ACL}"]
        return [f"listener {self.port} {self.host}", *tls,
                *(["allow_anonymous true"] if self.auth is None else
                  ["allow_anonymous false", f"password_file {self.auth[0]}", f"acl_file {self.auth[1]}"])]

    def _config(self) -> str:
        assert self.port is not None
        # No `user` option: as root, Mosquitto 2.x drops to `mosquitto` (or `nobody`) after
        # reading this file; it writes no files (no persistence, log to our redirected stderr).
        return "\n".join(
            [
                "# generated by safeguard.devservers -- private throwaway broker",
                *self._listeners(),
                "persistence false",
                f"max_queued_messages {self.max_queued_messages}",
                f"max_inflight_messages {self.max_inflight_messages}",
                "max_queued_bytes 0",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "log_timestamp true",
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        binary = find_mosquitto()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        if self.identity is not None and self.internal_port is None:
            self.internal_port = free_port(self.host)
        self.config_path.write_text(self._config(), encoding="utf-8")
        log.info("starting Mosquitto (%s) on %s:%d", binary, self.host, self.port)
        log_offset = _log_size(self.log_path)
        proc = self._spawn([str(binary), "-c", str(self.config_path)], self.work_dir)
        try:
            self._wait_ready(timeout, log_offset)
        except BaseException:
            self.stop()
            raise
        log.info("Mosquitto ready at %s (pid %d)", self.url, proc.pid)

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        """Wait until *our* broker listens.

        A bare TCP probe could be answered by another process already holding the port
        (mosquitto then exits with "Address already in use"), so we also wait for the
        broker's own "mosquitto version X running" line (2.x logs it once its listeners
        are bound). Brokers that never log it count as ready once they have stayed up
        for a moment with the port accepting.
        """
        assert self._proc is not None
        assert self.port is not None
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DevServerError(
                    f"Mosquitto on {self.host}:{self.port} exited with code {self._proc.returncode} during "
                    f"start-up. Tail of {self.log_path}:\n{_tail(self.log_path, log_offset)}"
                )
            announced = _RUNNING_RE.search(_read_from(self.log_path, log_offset)) is not None
            if (announced or time.monotonic() - started > 1.0) and _port_accepts(self.host, self.port):
                if self._proc.poll() is None:
                    return
                continue
            time.sleep(0.05)
        raise DevServerError(
            f"Mosquitto did not listen on {self.host}:{self.port} within {timeout:.0f}s. "
            f"Tail of {self.log_path}:\n{_tail(self.log_path, log_offset)}"
        )

    def stop(self) -> None:
        proc = self._forget()
        if proc is not None:
            _terminate(proc, signal.SIGTERM, grace=10.0, name="Mosquitto")
            log.info("Mosquitto (pid %d) stopped", proc.pid)

    def kill(self) -> None:
        """SIGKILL the broker (simulates a crash: no clean disconnects, queued messages lost)."""
        proc = self._forget()
        if proc is not None:
            _terminate(proc, signal.SIGKILL, grace=10.0, name="Mosquitto")
            log.info("Mosquitto (pid %d) killed", proc.pid)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password files and ACLs (and disconnects no one)."""
        if self._proc is None or self._proc.poll() is not None:
            raise DevServerError("Mosquitto is not running")
        self._proc.send_signal(signal.SIGHUP)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start()


class IngestProcess:
    """``safeguard ingest`` as a child process (bench and tests: N workers, a worker killed).

    ``connected`` is set once its lanes (both, or ``lane``) logged their connection.
    """

    def __init__(self, mqtt_url: str, database_url: str, worker_id: str, *, group: str = "gateway",
                 env: dict[str, str] | None = None, lane: str | None = None) -> None:
        self.worker_id = worker_id
        self._expected_lanes = 1 if lane else 2
        child_env = {**_clean_env(), "SAFEGUARD_MQTT_URL": mqtt_url, "SAFEGUARD_DATABASE_URL": database_url,
                     "SAFEGUARD_MQTT_SHARED_GROUP": group, "SAFEGUARD_INGEST_WORKER_ID": worker_id, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "safeguard.cli", "--log-level", "INFO", "ingest",
             *(["--lane", lane] if lane else [])],
            env=child_env, stderr=subprocess.PIPE, text=True,
        )
        self.connected = threading.Event()
        self.errors: list[str] = []
        self._lanes = 0
        threading.Thread(target=self._read_log, name=f"log-{worker_id}", daemon=True).start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "lane connected" in line:
                self._lanes += 1
                if self._lanes >= self._expected_lanes:
                    self.connected.set()
            elif "ERROR" in line or "Traceback" in line:
                self.errors.append(line)
                log.warning("ingest %s: %s", self.worker_id, line.rstrip())

    def wait_connected(self, timeout: float = 30.0) -> None:
        if not self.connected.wait(timeout):
            raise DevServerError(f"ingest worker {self.worker_id} did not connect within {timeout:.0f}s")

    def stop(self) -> None:
        """SIGTERM: the worker finishes its batch in hand and disconnects."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def kill(self) -> None:
        """SIGKILL: a crash; whatever it had not acknowledged stays with the broker."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
