"""Browsing the stores: the MLflow UI over the runs and Optuna's dashboard over the studies,
each on a loopback port until Ctrl-C. Only the standard library is imported up front."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from sweep.errors import SweepError

STARTUP_SECONDS = 180


def free_port(host: str, port: int, tries: int = 20) -> int:
    """`port` if nothing listens there, else the next free one. Connections a server closed
    lately (TIME_WAIT) do not make a port busy: servers bind with SO_REUSEADDR too."""
    for candidate in range(port, port + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, candidate))
                return candidate
            except OSError:
                continue
    raise SweepError(f"ports {port}-{port + tries - 1} on {host} are busy; pass --port N")


def pick_port(host: str, port: int, say: Callable[[str], None]) -> int:
    """A free port from `port` on, saying so when `port` itself is busy."""
    chosen = free_port(host, port)
    if chosen != port:
        say(f"Port {port} on {host} is busy; using {chosen}.")
    return chosen


def mlflow_ui_command(uri: str, artifacts: str, host: str, port: int) -> list[str]:
    """`mlflow ui` over the store with one worker: one user browses, and the machine may be
    training at the same time."""
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", uri,
        "--default-artifact-root", artifacts,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def run_mlflow_ui(command: list[str], base_url: str, say: Callable[[str], None]) -> None:
    """Run `mlflow ui` in its own process group until it exits or Ctrl-C; say where to open it
    once it answers. On Ctrl-C stop the whole group (server and worker) and re-raise."""
    # Job execution (GenAI evaluation jobs) starts another process; browsing runs needs none.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        if not _wait_until_serving(process, f"{base_url}/health"):
            raise SweepError(f"the MLflow UI exited with code {process.returncode}; see above")
        say(f"Open {base_url}/#/experiments?workflowType=machine_learning  (Ctrl-C stops it)")
        code = process.wait()
        if code != 0:
            raise SweepError(f"the MLflow UI exited with code {code}; see above")
    finally:
        stop_group(process)


def _wait_until_serving(process: subprocess.Popen, url: str) -> bool:
    """True once `url` answers 200; False if the process exits first."""
    deadline = time.monotonic() + STARTUP_SECONDS
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
    raise SweepError(f"the MLflow UI did not answer {url} within {STARTUP_SECONDS} s")


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group that `process` leads; SIGKILL what is left after `grace`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, or the group never looks empty
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def dashboard_server(storage: Any, host: str, port: int):
    """A threaded WSGI server of optuna-dashboard's app over `storage`, bound to host:port."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    try:
        import optuna_dashboard
    except ImportError:
        raise SweepError(
            "optuna-dashboard is not installed; run make setup (or pip install optuna-dashboard)"
        ) from None

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            pass

    app = optuna_dashboard.wsgi(storage)
    try:
        return make_server(host, port, app, server_class=Server, handler_class=QuietHandler)
    except OSError as exc:
        raise SweepError(f"cannot listen on {host}:{port}: {exc.strerror}; pass --port N") from None
