"""A private PostgreSQL server for tests and the demo (no system cluster involved).

`PostgresServer(data_dir)` runs `initdb` once, then `pg_ctl start/stop` on a free
loopback port with trust auth, its unix socket and log file inside `data_dir`.
Used by the pytest plugin `tests.cluster.pg_fixtures` and by the demo through
the CLI: `python -m tests.cluster.pg up --state DIR` (prints the admin DSN) and
`python -m tests.cluster.pg down --state DIR`.

Layout of `data_dir`: `pgdata/` (PGDATA), `pgsock/` (unix socket),
`postgres.log`, `postgres.json` (the last port, so `up` is repeatable).
As root, every server process runs as the `postgres` OS user (Postgres refuses
to run as root), so `data_dir` is chowned to it and must be reachable by it.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

_PG_USER = "postgres"  # the OS user (as root) and the database superuser
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SOCKET_PATH_MAX = 107  # sun_path limit on Linux, minus the NUL
_PORT_ATTEMPTS = 5
_BIND_FAILURE = re.compile(r"could not bind|Address already in use|could not create any TCP/IP")

#: Settings that trade durability for speed; only for throwaway test clusters.
FAST_UNSAFE_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class PostgresHarnessError(RuntimeError):
    """The private Postgres server could not be set up, started or used."""


def find_bin_dir() -> Path:
    """The directory holding initdb/pg_ctl: PATH first, else Debian's highest version."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = []
    for found in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        version = Path(found).parent.parent.name
        with contextlib.suppress(ValueError):
            candidates.append((tuple(int(p) for p in version.split(".")), Path(found).parent))
    if not candidates:
        raise PostgresHarnessError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin: run tests/cluster/sysdeps.sh "
            "(or apt-get install postgresql)"
        )
    return max(candidates)[1]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (it may be taken later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _conf_value(value: str) -> str:
    """Quote a postgresql.conf value (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


class PostgresServer:
    """One private Postgres cluster kept in `data_dir`; see the module docstring."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        start_timeout_s: int = 60,
        client_networks: Sequence[str] = (),
    ) -> None:
        """`port=None` picks a free port (retried if taken at start); `settings` are
        extra postgresql.conf entries, e.g. `FAST_UNSAFE_SETTINGS` for tests only."""
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = self.data_dir / "pgsock"
        self.log_file = self.data_dir / "postgres.log"
        self.state_file = self.data_dir / "postgres.json"
        self._fixed_port = port
        self._port: int | None = port
        self.settings = dict(settings or {})
        self._bin_dir = Path(bin_dir) if bin_dir is not None else None
        self.start_timeout_s = start_timeout_s
        # CIDRs beyond loopback allowed in (trust auth), e.g. the real node's pods, which
        # also needs `listen_addresses` in `settings`.
        self.client_networks = tuple(client_networks)
        self._as_root = os.geteuid() == 0

    # -- public API -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresHarnessError("the server has no port yet: call start() first")
        return self._port

    @property
    def admin_dsn(self) -> str:
        """DSN of the superuser on the `postgres` database (trust auth, loopback)."""
        return self.dsn("postgres")

    def dsn(self, database: str) -> str:
        return f"postgresql://{_PG_USER}@127.0.0.1:{self.port}/{database}"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._pg_ctl(["status"])
        return result.returncode == 0

    def start(self) -> None:
        """initdb when needed, then start and wait until it accepts connections."""
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if self.is_running():
            self._port = self._port or self._saved_port()
            return
        if self._fixed_port is not None:
            if _port_in_use(self._fixed_port):
                raise PostgresHarnessError(
                    f"port {self._fixed_port} on 127.0.0.1 is already taken: "
                    "stop what listens there or let the harness pick a port"
                )
            self._start_on(self._fixed_port)
            return
        saved = self._saved_port()
        ports = [saved] if saved and not _port_in_use(saved) else []
        last_error: PostgresHarnessError | None = None
        for _ in range(_PORT_ATTEMPTS):
            port = ports.pop() if ports else free_port()
            try:
                self._start_on(port)
                return
            except _PortTaken as exc:
                last_error = exc
        raise PostgresHarnessError(
            f"could not find a free port for Postgres after {_PORT_ATTEMPTS} tries: {last_error}"
        )

    def stop(self) -> None:
        """Fast shutdown (open sessions are disconnected); a no-op when not running."""
        if not self.is_running():
            return
        result = self._pg_ctl(["stop", "-m", "fast", "-w", "-t", str(self.start_timeout_s)])
        if result.returncode != 0:
            raise PostgresHarnessError(f"pg_ctl stop failed: {result.stderr.strip()}")

    def restart(self) -> None:
        """Stop then start on the same port: clients lose their connections."""
        self.stop()
        self.resume()

    def resume(self) -> None:
        """Start again after `stop()` on the same port, so clients' DSNs stay valid
        (an outage: `stop()`, wait, `resume()`)."""
        self._start_on(self.port)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its DSN."""
        self._check_db_name(name)
        self._client("createdb", [name])
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions; a no-op when it is missing."""
        self._check_db_name(name)
        self._client("dropdb", ["--if-exists", "--force", name])

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        if self._as_root:
            self._check_reachable_by_postgres()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        socket_path = self.socket_dir / ".s.PGSQL.65535"
        if len(str(socket_path)) > _SOCKET_PATH_MAX:
            raise PostgresHarnessError(
                f"{self.data_dir} is too long for a unix socket path "
                f"({len(str(socket_path))} > {_SOCKET_PATH_MAX} characters): use a shorter dir"
            )
        if self._as_root:
            pw = pwd.getpwnam(_PG_USER)
            for path in (self.data_dir, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            if self.log_file.exists():
                os.chown(self.log_file, pw.pw_uid, pw.pw_gid)

    def _check_reachable_by_postgres(self) -> None:
        """As root, every parent of data_dir must let the postgres user through."""
        try:
            pw = pwd.getpwnam(_PG_USER)
        except KeyError:
            raise PostgresHarnessError(
                "running as root but there is no 'postgres' OS user to run the server: "
                "run tests/cluster/sysdeps.sh (or apt-get install postgresql)"
            ) from None
        for parent in self.data_dir.parents:
            if not parent.exists():
                continue  # created below by root with mode 0755
            st = parent.stat()
            if st.st_uid == pw.pw_uid:
                ok = bool(st.st_mode & 0o100)
            elif st.st_gid == pw.pw_gid:
                ok = bool(st.st_mode & 0o010)
            else:
                ok = bool(st.st_mode & 0o001)
            if not ok:
                raise PostgresHarnessError(
                    f"the postgres OS user cannot reach {self.data_dir}: {parent} is not "
                    "traversable by it (mode "
                    f"{oct(st.st_mode & 0o777)}); put the data dir elsewhere, e.g. under /tmp"
                )

    def _as_pg_user(self, argv: Sequence[str]) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", _PG_USER, "--", *argv]
        return list(argv)

    def _tool(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise PostgresHarnessError(
                f"{path} is missing: run tests/cluster/sysdeps.sh (or apt-get install postgresql)"
            )
        return str(path)

    def _initdb(self) -> None:
        argv = [
            self._tool("initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            _PG_USER,
            "--auth-local=trust",
            "--auth-host=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        result = subprocess.run(
            self._as_pg_user(argv), capture_output=True, text=True, check=False, timeout=300
        )
        if result.returncode != 0:
            raise PostgresHarnessError(
                f"initdb failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# Ratline test harness: per-start settings\ninclude 'ratline.conf'\n")

    def _write_conf(self, port: int) -> None:
        entries = {
            "port": str(port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",
            **self.settings,
        }
        text = "".join(f"{key} = {_conf_value(value)}\n" for key, value in entries.items())
        conf = self.pgdata / "ratline.conf"
        conf.write_text(text)
        hba = self.pgdata / "pg_hba.conf"  # this start's client networks replace the last's
        marker = "# ratline client networks\n"
        kept = hba.read_text().split(marker)[0]
        hba.write_text(
            kept + marker + "".join(f"host all all {n} trust\n" for n in self.client_networks)
        )
        if self._as_root:
            pw = pwd.getpwnam(_PG_USER)
            os.chown(conf, pw.pw_uid, pw.pw_gid)

    def _start_on(self, port: int) -> None:
        self._write_conf(port)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        result = self._pg_ctl(
            ["start", "-w", "-t", str(self.start_timeout_s), "-l", str(self.log_file)]
        )
        if result.returncode == 0:
            self._port = port
            self.state_file.write_text(json.dumps({"port": port}))
            return
        tail = self._log_since(offset)
        if _BIND_FAILURE.search(tail):
            raise _PortTaken(f"port {port} was taken when Postgres started")
        raise PostgresHarnessError(
            f"Postgres failed to start (pg_ctl exit {result.returncode}): "
            f"{result.stderr.strip()}\n--- {self.log_file} (tail) ---\n{tail}"
        )

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                data = log.read()
        except OSError:
            return "(no log)"
        lines = data.decode(errors="replace").splitlines()
        return "\n".join(lines[-30:])

    def _pg_ctl(
        self, args: Sequence[str], *, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        argv = [self._tool("pg_ctl"), "-D", str(self.pgdata), *args]
        return subprocess.run(
            self._as_pg_user(argv),
            capture_output=True,
            text=True,
            check=check,
            timeout=self.start_timeout_s + 30,
        )

    def _client(self, tool: str, args: Sequence[str]) -> None:
        argv = [self._tool(tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", _PG_USER, *args]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise PostgresHarnessError(f"{tool} {' '.join(args)} failed: {result.stderr.strip()}")

    def _saved_port(self) -> int | None:
        try:
            port = json.loads(self.state_file.read_text())["port"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return port if isinstance(port, int) else None

    @staticmethod
    def _check_db_name(name: str) -> None:
        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r}: use letters, digits and _")


class _PortTaken(PostgresHarnessError):
    """Postgres could not bind its port (someone took it after we probed)."""


@contextlib.contextmanager
def private_server(
    prefix: str,
    *,
    settings: Mapping[str, str] | None = None,
    client_networks: Sequence[str] = (),
) -> Iterator[PostgresServer]:
    """A started server in a fresh temp dir, stopped and removed afterwards. The dir is
    under /tmp and world-readable: the postgres OS user cannot reach pytest's 0700
    tmp dirs when we run as root."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    server = PostgresServer(base / "pg", settings=settings, client_networks=client_networks)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`up --state DIR` starts (or finds) the server and prints its DSN; `down` stops it."""
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.pg")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--state", required=True, help="directory that holds the server")
    parser.add_argument("--port", type=int, default=None, help="fixed port (default: free one)")
    parser.add_argument(
        "--listen", default="127.0.0.1", help="listen_addresses (e.g. add the real node's host IP)"
    )
    parser.add_argument(
        "--client-network", action="append", default=[], help="CIDR allowed in (repeatable)"
    )
    args = parser.parse_args(argv)
    server = PostgresServer(
        args.state,
        port=args.port,
        settings={"listen_addresses": args.listen},
        client_networks=args.client_network,
    )
    try:
        if args.command == "up":
            server.start()
            print(server.admin_dsn)
        else:
            server.stop()
    except PostgresHarnessError as exc:
        print(f"pg: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
