"""Local services for many workers: a PostgreSQL server (Optuna storage and MLflow backend
store) and an MLflow tracking server, both on loopback, their files in one folder.

`sweep services start` runs Debian's PostgreSQL binaries (as the `postgres` user when run as
root, since PostgreSQL refuses to run as root) and `mlflow server`. The database password is
read from $PGPASSWORD, or generated once into `<folder>/password` (mode 600); it never goes
into a URL that is printed or logged: workers get it from $PGPASSWORD, as libpq reads it.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from sweep.errors import SweepError

USER = "sweep"
DATABASES = ("optuna", "mlflow")
PG_PORT = 5433
MLFLOW_PORT = 5001
MLFLOW_STARTUP_SECONDS = 120


@dataclass(frozen=True)
class Services:
    """Where the running services are; `storage` and `tracking_uri` hold no password."""

    folder: str
    pg_port: int
    mlflow_port: int
    mlflow_pid: int

    @property
    def storage(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.pg_port}/optuna"

    @property
    def mlflow_store(self) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.pg_port}/mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def password_file(self) -> Path:
        return Path(self.folder) / "password"


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise SweepError(
            f"PostgreSQL's {name} was not found; install the server "
            "(Debian: apt-get install postgresql) or point --storage at an existing one"
        )
    return found


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL will not run as root: run its programs as the `postgres` user instead."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise SweepError(
            "running as root, PostgreSQL needs a 'postgres' user to run as; "
            "install Debian's postgresql package or run as an ordinary user"
        ) from None
    return ["runuser", "-u", "postgres", "--", *command]


def _give_to_postgres(path: Path) -> None:
    """As root: the data folder belongs to `postgres`, and every folder above it must let it
    through."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam("postgres")
    for folder in [path, *path.parents]:
        if folder == path:
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        elif os.stat(folder).st_uid != entry.pw_uid and not os.stat(folder).st_mode & 0o001:
            mode = oct(os.stat(folder).st_mode)[-3:]
            raise SweepError(
                f"the postgres user cannot enter {folder} (mode {mode}); "
                "choose another --output folder or chmod o+x it"
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def password(folder: Path) -> str:
    """$PGPASSWORD, or the password generated for these services (created on first use)."""
    if os.environ.get("PGPASSWORD"):
        return os.environ["PGPASSWORD"]
    path = folder / "password"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(18))
    return path.read_text().strip()


def _run(command: list[str], what: str, env: dict | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise SweepError(f"{what} failed: {detail[-1] if detail else done.returncode}")


def start_postgres(folder: Path, port: int, secret: str) -> None:
    """Create the cluster on first use, start it on 127.0.0.1:`port`, create the databases."""
    data = folder / "postgres"
    if _port_open(port):
        raise SweepError(f"port {port} is already in use; pass another --pg-port")
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        _give_to_postgres(data)
        pwfile = folder / ".initdb-password"
        pwfile.touch(mode=0o600)
        pwfile.write_text(secret)
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        try:
            _run(
                _as_postgres(
                    [
                        pg_bin("initdb"),
                        "-D",
                        str(data),
                        "-U",
                        USER,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "-E",
                        "UTF8",
                    ]
                ),
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    _run(
        _as_postgres(
            [pg_bin("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-o", options]
            + ["-w", "-t", "60", "start"]
        ),
        f"starting PostgreSQL (log: {data / 'server.log'})",
    )
    import psycopg

    with psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=USER,
        password=secret,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in existing:
                conn.execute(f'CREATE DATABASE "{name}"')


def stop_postgres(folder: Path) -> bool:
    data = folder / "postgres"
    if not (data / "postmaster.pid").exists():
        return False
    _run(_as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), "stop")
    return True


def start_mlflow(services: Services, secret: str) -> int:
    """`mlflow server` on loopback: runs in PostgreSQL, artifacts under the folder."""
    folder = Path(services.folder)
    if _port_open(services.mlflow_port):
        raise SweepError(f"port {services.mlflow_port} is already in use; pass --mlflow-port")
    log = open(folder / "mlflow.log", "ab")  # noqa: SIM115 - the server keeps it open
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(services.mlflow_port), "--workers", "2"]
    command += ["--backend-store-uri", services.mlflow_store]
    command += ["--artifacts-destination", str((folder / "mlartifacts").resolve())]
    env = {**os.environ, "PGPASSWORD": secret}
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    if wait_until_serving(process, f"{services.tracking_uri}/health", MLFLOW_STARTUP_SECONDS):
        return process.pid
    if process.poll() is not None:
        raise SweepError(f"mlflow server exited; see {folder / 'mlflow.log'}")
    raise SweepError(
        f"mlflow server did not answer in {MLFLOW_STARTUP_SECONDS} s; see {folder / 'mlflow.log'}"
    )


def wait_until_serving(process: subprocess.Popen, url: str, seconds: float) -> bool:
    """True once `url` answers 200 within `seconds`; False if `process` exits first or the
    time runs out (then `process` still runs)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def start(folder: Path, pg_port: int = PG_PORT, mlflow_port: int = MLFLOW_PORT) -> Services:
    """Start both services (PostgreSQL first) and record where they run."""
    folder.mkdir(parents=True, exist_ok=True)
    running = status(folder)
    if running is not None:
        raise SweepError(
            f"services already run from {folder} (PostgreSQL on port {running.pg_port}, MLflow on "
            f"{running.tracking_uri}); stop them first with: sweep services stop"
        )
    secret = password(folder)
    start_postgres(folder, pg_port, secret)
    services = Services(str(folder.resolve()), pg_port, mlflow_port, 0)
    try:
        pid = start_mlflow(services, secret)
    except BaseException:
        stop_postgres(folder)
        raise
    services = Services(services.folder, pg_port, mlflow_port, pid)
    (folder / "services.json").write_text(json.dumps(asdict(services)))
    return services


def status(folder: Path) -> Services | None:
    """The services recorded in the folder, if their processes still run."""
    path = folder / "services.json"
    if not path.exists():
        return None
    services = Services(**json.loads(path.read_text()))
    return services if _port_open(services.pg_port) or _alive(services.mlflow_pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop(folder: Path) -> list[str]:
    """Stop what runs from the folder; returns what was stopped."""
    stopped = []
    path = folder / "services.json"
    if path.exists():
        services = Services(**json.loads(path.read_text()))
        if services.mlflow_pid and _alive(services.mlflow_pid):
            os.killpg(services.mlflow_pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(services.mlflow_pid):
                    break
                time.sleep(0.1)
            stopped.append("MLflow server")
        path.unlink()
    if stop_postgres(folder):
        stopped.append("PostgreSQL")
    return stopped
