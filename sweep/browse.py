"""Browsing the stores: the MLflow UI over the runs and Optuna's dashboard over the studies,
each on a loopback port until Ctrl-C. Only the standard library is imported up front."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from sweep.errors import SweepError
from sweep.services import wait_until_serving

log = logging.getLogger(__name__)
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


def pick_port(host: str, port: int) -> int:
    """A free port from `port` on, saying so when `port` itself is busy."""
    chosen = free_port(host, port)
    if chosen != port:
        log.info("Port %s on %s is busy; using %s.", port, host, chosen)
    return chosen


def mlflow_ui_command(uri: str, artifacts: str, host: str, port: int) -> list[str]:
    """`mlflow ui` over the store with one worker: one user browses, and the machine may be
    training at the same time."""
    return [
        *(sys.executable, "-m", "mlflow", "ui"),
        *("--backend-store-uri", uri),
        *("--default-artifact-root", artifacts),
        *("--host", host),
        *("--port", str(port)),
        *("--workers", "1"),
    ]


def run_mlflow_ui(command: list[str], base_url: str) -> None:
    """Run `mlflow ui` in its own process group until it exits or Ctrl-C; say where to open it
    once it answers. On Ctrl-C stop the whole group (server and worker) and re-raise."""
    # Job execution (GenAI evaluation jobs) starts another process; browsing runs needs none.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        health = f"{base_url}/health"
        if not wait_until_serving(process, health, STARTUP_SECONDS):
            if process.poll() is None:
                raise SweepError(
                    f"the MLflow UI did not answer {health} within {STARTUP_SECONDS} s"
                )
            raise SweepError(f"the MLflow UI exited with code {process.returncode}; see above")
        log.info("Open %s/#/experiments?workflowType=machine_learning  (Ctrl-C stops it)", base_url)
        code = process.wait()
        if code != 0:
            raise SweepError(f"the MLflow UI exited with code {code}; see above")
    finally:
        stop_group(process)


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
