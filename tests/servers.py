"""Real Redis and PostgreSQL servers for the tests, each on 127.0.0.1 on a free port in a temporary folder.

:class:`RedisServer` runs Debian's ``redis-server`` with append-only persistence (``appendfsync always``), so
a restart keeps every acknowledged write. :class:`PostgresServer` makes a cluster with ``initdb`` (password
authentication over TCP, the password in a file) and runs it with ``pg_ctl``; PostgreSQL refuses to run as
root, so as root the cluster belongs to the ``postgres`` system user (or ``nobody``) and its commands run
through ``runuser``. Both restart on the same port and data, for the fault tests.

The fixtures (:func:`redis_server`, :func:`postgres_server`) skip with the reason when a binary is missing
(``make install`` installs both); import them into a test module to use them.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

PG_BIN = pathlib.Path(os.environ.get("LORARFFI_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 30.0  # longest wait for a server to accept connections (it takes well under a second)
PG_PASSWORD = "s3cret-test-password"
PG_USER = "lorarffi"
PG_DATABASE = "registry"
REDIS_PASSWORD = "redis-test-password"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen | None, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not accept connections on 127.0.0.1:{port} within {START_TIMEOUT_S} s")


class RedisServer:
    """``redis-server`` on 127.0.0.1, data (append-only file) in ``directory``.

    Parameters
    ----------
    directory : path
        Where the server keeps its data and log.
    password : str, optional
        Clients must authenticate with it (``requirepass``).
    """

    def __init__(self, directory: pathlib.Path, *, password: str | None = None) -> None:
        self.directory = pathlib.Path(directory)
        self.port = free_port()
        self.password = password
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_BIN,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--logfile", str(self.directory / "redis.log"),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, self.process, "redis-server")
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the port opens before the append-only file is loaded
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        """Stop the server the way an operator does (SIGTERM: it writes its data and exits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(START_TIMEOUT_S)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _pg_owner() -> str | None:
    """The user PostgreSQL runs as: None (ourselves) unless we are root, then ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError(
        "running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL"
    )


class PostgresServer:
    """A PostgreSQL cluster on 127.0.0.1 with user :data:`PG_USER` (password :data:`PG_PASSWORD`,
    scram-sha-256 over TCP) and an empty database :data:`PG_DATABASE`.

    ``directory`` must be reachable by the server's user; :func:`postgres_server` makes one under the system's
    temporary folder (pytest's own tmp folders are private to root).
    """

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = pathlib.Path(directory)
        self.data = self.directory / "data"
        self.port = free_port()
        self.owner = _pg_owner()
        self._initdb()

    def _run(self, *argv: str) -> None:
        cmd = list(argv) if self.owner is None else ["runuser", "-u", self.owner, "--", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()}")

    def _initdb(self) -> None:
        pwfile = self.directory / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.owner is not None:
            entry = pwd.getpwnam(self.owner)
            for p in (self.directory, pwfile):
                os.chown(p, entry.pw_uid, entry.pw_gid)
        self.directory.chmod(0o700)
        self._run(
            str(PG_BIN / "initdb"),
            "-D", str(self.data),
            "-U", PG_USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--no-sync",
            "--no-instructions",
            "-E", "UTF8",
        )  # fmt: skip
        pwfile.unlink()
        self.start()
        self._run(str(PG_BIN / "createdb"), "-h", str(self.directory), "-p", str(self.port), "-U", PG_USER,
                  PG_DATABASE)  # fmt: skip

    def url(self, *, password: bool = True, database: str = PG_DATABASE) -> str:
        """``postgresql://lorarffi[:PASSWORD]@127.0.0.1:PORT/DATABASE``."""
        secret = f":{PG_PASSWORD}" if password else ""
        return f"postgresql://{PG_USER}{secret}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory} "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "server.log"),
            "-o", options, "-w", "-t", str(int(START_TIMEOUT_S)), "start",
        )  # fmt: skip
        _wait_port(self.port, None, "postgres")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: open connections are cut, as on a server restart)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL (with the password)."""
        self._run(str(PG_BIN / "createdb"), "-h", str(self.directory), "-p", str(self.port), "-U", PG_USER,
                  name)  # fmt: skip
        return self.url(database=name)


def _server_dir(prefix: str) -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(prefix=prefix))


def _running_redis(password: str | None = None):
    if not os.path.exists(REDIS_BIN):
        pytest.skip(f"redis-server is not installed ({REDIS_BIN}): run `make install`")
    directory = _server_dir("lorarffi-redis-")
    server = RedisServer(directory, password=password)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server():
    """A running :class:`RedisServer`, stopped after the module."""
    yield from _running_redis()


@pytest.fixture()
def redis_with_password():
    """A running :class:`RedisServer` that requires the password :data:`REDIS_PASSWORD`, for one test."""
    yield from _running_redis(REDIS_PASSWORD)


@pytest.fixture(scope="module")
def postgres_server():
    """A running :class:`PostgresServer`, stopped after the module."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 is not installed (no {PG_BIN / 'initdb'}): run `make install`")
    directory = _server_dir("lorarffi-pg-")
    server = PostgresServer(directory)
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
