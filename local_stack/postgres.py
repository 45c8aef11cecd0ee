"""A throwaway PostgreSQL server: a fresh cluster in a temporary folder, on a free port.

The desk's store (docs/desk.md) runs on PostgreSQL; locally and in every test it is
Debian's `postgresql` package, started like the emulators: `PostgresServer` is a context
manager that runs `initdb` and `pg_ctl start`, waits until the server answers, and on exit
stops it (`pg_ctl stop -m fast`, then its postmaster's PID if that fails) and removes the
folder. PostgreSQL refuses to run as root, so under root the cluster belongs to the
`postgres` system user the package creates (commands run through `runuser`).
"""

import getpass
import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from local_stack.processes import free_port, wait_until

_log = logging.getLogger(__name__)

DATABASE = "desk"  # the database the desk uses; also the cluster's superuser
INSTALL_HINT = (
    "PostgreSQL is not installed: apt-get install postgresql (scripts/bootstrap.sh does), "
    "or set POSTGRES_BIN to a folder holding initdb and pg_ctl"
)


class PostgresUnavailable(RuntimeError):
    pass


def postgres_bin() -> Path:
    """The folder of initdb and pg_ctl: $POSTGRES_BIN, else the newest Debian version."""
    configured = os.environ.get("POSTGRES_BIN")
    candidates = [configured] if configured else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable(INSTALL_HINT)


class PostgresServer:
    """One PostgreSQL cluster; `url` is its SQLAlchemy URL (pg8000, user and database desk)."""

    def __init__(
        self, work_dir: Path | None = None, port: int | None = None, durable: bool = False
    ) -> None:
        self.bin = postgres_bin()
        self._own_dir = work_dir is None
        base = Path(work_dir or tempfile.mkdtemp(prefix="section-speed-postgres-")).resolve()
        self.base = base
        self.data_dir = base / "data"
        self.port = port or free_port()
        self._runas = "postgres" if os.geteuid() == 0 else getpass.getuser()
        # Tests and the demo throw the cluster away: no need to wait for the disk at each
        # commit. A benchmark passes durable=True, as a real server runs.
        self.durable = durable
        self._started = False

    @property
    def url(self) -> str:
        return self.database_url(DATABASE)

    def database_url(self, database: str) -> str:
        return f"postgresql+pg8000://{DATABASE}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout_s: float = 60.0) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self._runas, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{argv[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout}"
            )

    def __enter__(self) -> "PostgresServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(self._runas)
            except KeyError as error:
                raise PostgresUnavailable(INSTALL_HINT + " (no postgres user)") from error
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            # runuser keeps the working directory; postgres must be able to stat it.
            self.base.chmod(0o755)
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", DATABASE,
                  "--no-sync", "-E", "UTF8", "--locale", "C")  # fmt: skip
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off"
        log = self.base / "postgres.log"
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(log), "-w",
                  "-t", "60", "start", timeout_s=90)  # fmt: skip
        self._started = True
        wait_until(self._answers, timeout_s=30, what=f"PostgreSQL on port {self.port}")
        self.create_database(DATABASE)
        _log.info("PostgreSQL on 127.0.0.1:%d (%s)", self.port, self.data_dir)

    def _answers(self) -> bool:
        import pg8000.native

        try:
            pg8000.native.Connection(DATABASE, host="127.0.0.1", port=self.port,
                                     database="postgres", timeout=2).close()  # fmt: skip
        except Exception:
            return False
        return True

    def create_database(self, name: str) -> None:
        """A new empty database (a test that wants one of its own); ignored if it exists."""
        import pg8000.native

        connection = pg8000.native.Connection(
            DATABASE, host="127.0.0.1", port=self.port, database="postgres"
        )
        try:
            if not connection.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name):
                connection.run(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self._started:
            pid = self._postmaster_pid()
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            except (PostgresUnavailable, subprocess.TimeoutExpired) as error:
                _log.warning("pg_ctl stop failed (%s): killing the postmaster", error)
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self._started = False
        if self._own_dir:
            shutil.rmtree(self.base, ignore_errors=True)


def main() -> int:
    """`python -m local_stack.postgres`: a server until Ctrl-C, printing its URL."""
    logging.basicConfig(level=logging.INFO)
    with PostgresServer() as server:
        print(f"postgres: {server.url}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
