"""What a user sees when browsing a sweep: `sweep ui` (the MLflow UI) and `sweep dashboard`
(Optuna's dashboard) over the stores of a tiny real sweep, opened in Debian's headless
Chromium driven by Playwright. Screenshots go to the sweep's output folder (or
$SWEEP_SCREENSHOTS)."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from sweep.browse import free_port
from tests.conftest import idx_options

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("SWEEP_CHROMIUM", "/usr/bin/chromium")
GRID = ["[2, 4]", "[4, 8]", "[8, 8]"]
EPOCHS = 3


def needs(reason: str) -> None:
    """Skip without the browser; CI must run these tests, so there it fails instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needs("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        needs(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def sweep_output(tmp_path_factory: pytest.TempPathFactory, idx_files) -> Path:
    """The stores of a real 3-trial grid sweep on 300 generated images (seconds to train)."""
    folder = tmp_path_factory.mktemp("browse")
    space = folder / "tiny.yaml"
    space.write_text(
        "study: tiny\n"
        f"base: {{filters: [4, 8], pool_blocks: 2, batch_size: 64, epochs: {EPOCHS}}}\n"
        f"params:\n  filters:\n    values: [{', '.join(GRID)}]\n"
    )
    out = folder / "out"
    cli = [sys.executable, "-m", "sweep", "--output", str(out)]
    command = [*cli, "run", str(space), *idx_options(idx_files)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def screenshots(sweep_output: Path) -> Path:
    folder = Path(os.environ.get("SWEEP_SCREENSHOTS") or sweep_output / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Served:
    """A `sweep ui` or `sweep dashboard` process: its printed lines and the address it opened."""

    def __init__(self, output: Path, *args: str) -> None:
        command = [sys.executable, "-m", "sweep", "--output", str(output), *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float = 240) -> str:
        """The first printed line starting with `prefix`."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line in {timeout} s: {self.lines}") from None
            if line is None:
                raise AssertionError(
                    f"exited {self.process.wait()} before {prefix!r}: {self.lines}"
                )
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def ctrl_c(self) -> int:
        """SIGINT to the sweep process alone; its exit code. What it printed is in `lines`."""
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code


@contextmanager
def serve(output: Path, *args: str) -> Iterator[tuple[Served, str]]:
    """Start it, yield it with the address it says to open, then Ctrl-C it: it must exit 130
    and free its port."""
    served = Served(output, *args)
    try:
        address = served.wait_for("Open ").split()[1]
        yield served, address
        port = int(address.split(":")[2].split("/")[0])
        assert served.ctrl_c() == 130
        assert any(line.endswith("stopped.") for line in served.lines), served.lines
        assert free_port("127.0.0.1", port, tries=1) == port
    finally:
        if served.process.poll() is None:
            served.ctrl_c()  # it stops the MLflow UI's own process group, as a kill would not


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def close_assistant(page) -> None:
    """The MLflow UI opens its assistant panel on a first visit; it hides part of the table."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    close = page.get_by_role("button", name="Close", exact=True)
    with suppress(PlaywrightTimeout):  # no assistant in this version of the UI
        close.first.click(timeout=5_000)


def test_mlflow_ui_shows_the_study_its_trials_and_their_val_loss_curves(
    sweep_output: Path, screenshots: Path, page, busy_port: int
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{sweep_output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    trials = sorted(r.info.run_name for r in runs if r.data.tags.get("sweep.role") == "trial")
    assert trials == [f"trial-{n}" for n in range(len(GRID))]
    assert [r.data.tags.get("sweep.best") for r in runs].count("true") == 1

    with serve(sweep_output, "ui", "--port", str(busy_port)) as (served, address):
        assert f"Port {busy_port} on 127.0.0.1 is busy" in "\n".join(served.lines)
        assert address.startswith("http://127.0.0.1:") and f":{busy_port}/" not in address
        base = address.split("/#")[0]
        runs_page = f"{base}/#/experiments/{experiment.experiment_id}/runs"

        page.goto(f"{runs_page}?workflowType=machine_learning")
        parent = page.get_by_role("link", name="tiny", exact=True).last
        parent.wait_for()
        close_assistant(page)
        expand = parent.locator("xpath=ancestor::div[contains(@class, 'ag-cell')][1]//button")
        expand.first.click()  # the trials are nested under the study's run
        for name in trials:
            page.get_by_role("link", name=name, exact=True).wait_for()
        page.screenshot(path=screenshots / "mlflow-runs.png")

        page.goto(f"{runs_page}?workflowType=machine_learning&compareRunsMode=CHART")
        page.get_by_placeholder("Search metric charts").fill("val_loss")
        chart = page.get_by_test_id("experiment-view-compare-runs-card").filter(
            has=page.locator("h4[title='val_loss']")
        )
        chart.wait_for()
        curves = chart.locator(".js-plotly-plot path.js-line")
        curves.first.wait_for()
        assert curves.count() >= len(GRID)  # one line per trial, val_loss against epoch
        page.screenshot(path=screenshots / "mlflow-val-loss.png")
    for name in ("mlflow-runs.png", "mlflow-val-loss.png"):
        assert (screenshots / name).stat().st_size > 10_000


def test_optuna_dashboard_lists_the_study_and_its_trials(
    sweep_output: Path, screenshots: Path, page
) -> None:
    port = free_port("127.0.0.1", 8080)
    with serve(sweep_output, "dashboard", "--port", str(port)) as (_, address):
        assert address == f"http://127.0.0.1:{port}/dashboard"
        page.goto(address)
        page.get_by_role("link", name="tiny").first.click()
        page.get_by_role("heading", name="History").wait_for()
        page.locator(".js-plotly-plot").first.wait_for()
        page.screenshot(path=screenshots / "optuna-study.png")

        page.goto(page.url.rstrip("/") + "/trials")
        for number in range(len(GRID)):
            page.get_by_text(f"Trial {number}", exact=True).first.wait_for()
        assert page.get_by_text("Complete", exact=True).count() >= len(GRID)
        page.get_by_text("Best Trial", exact=True).first.wait_for()
        page.screenshot(path=screenshots / "optuna-trials.png")
    for name in ("optuna-study.png", "optuna-trials.png"):
        assert (screenshots / name).stat().st_size > 10_000
