"""The trial recipe, one for every backend: configure, open the trial's MLflow run, build, fit
with per-epoch events, record the results, return the value. A backend only decides what to
try next and hands the recipe a Job; the Optuna objective (sweep.run) and the keras-tuner
runner (sweep.search) both call `train`."""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import optuna

from sweep.context import TrialContext
from sweep.data import Split
from sweep.points import factors, repeat_of, trial_seed
from sweep.space import format_value

EPOCHS_METRIC = "epochs_trained"


def _no_report(epoch: int, value: float) -> None:
    """A backend without pruning."""


@dataclass
class Job:
    """One trial as the recipe sees it. `params` are stored as Optuna stores them (labels);
    `record(key, value)` records a fact on the backend's trial (set_user_attr);
    `report(epoch, value)` may raise optuna.TrialPruned to stop it. Hyperband's continuations
    train to `epochs` from `initial_epoch`, from the weights at `start_from`; `logged` adds
    MLflow params and `tags` MLflow tags."""

    number: int
    params: dict[str, Any]
    record: Callable[[str, Any], None]
    report: Callable[[int, float], None] = _no_report
    shown: dict[str, Any] = field(default_factory=dict)
    logged: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    epochs: int | None = None
    initial_epoch: int = 0
    start_from: Path | None = None
    checkpoint: Path | None = None
    count_epochs: bool = False
    trained: int = 0

    def set_user_attr(self, key: str, value: Any) -> None:
        self.record(key, value)


def tag(client: Any, run_id: str, tags: dict[str, str]) -> None:
    """Set MLflow tags on a run in one request."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def train(ctx: TrialContext, job: Job) -> float:
    """The trial of the context's kind: an autoencoder's best val_loss, or a classifier's best
    val_accuracy."""
    recipe = train_classifier if ctx.space.kind == "classifier" else train_autoencoder
    return recipe(ctx, job)


@contextmanager
def trial_run(ctx: TrialContext, job: Job) -> Iterator[tuple[Any, Any, Split, float]]:
    """Announce the trial, configure it and open its MLflow run; yields (run, config, data,
    start time). A configuration that fails is raised inside the run, so both stores record
    it; however the body ends, `recorded` writes it down."""
    ctx.progress.trial_started(job.number, {**job.params, **job.shown})
    started = time.perf_counter()
    failure: Exception | None = None
    config = data = None
    params = {**job.params, **ctx.run_params}
    try:
        config = ctx.profile.apply(ctx.space.config_for(ctx.space.decode(job.params)))
        if job.epochs is not None:
            config = config.replace(epochs=job.epochs)
        data = ctx.split.take(config.train_size, config.val_size)
        params = {
            **{k: format_value(v) for k, v in config.to_dict().items()},
            **job.params,
            **ctx.run_params,
            "train_images": len(data.x_train),
            "val_images": len(data.x_val),
        }
    except Exception as exc:  # noqa: BLE001 - raised again inside the run, which records it
        failure = exc
    params.update(job.logged)
    params.update(ctx.slot.record(ctx.jobs))
    params["trial_seed"] = seed_of(ctx, job)
    study = ctx.run_params["study"]
    with (
        ctx.tracker.trial_run(ctx.parent_run_id, study, job.number, params) as run,
        recorded(ctx, job, run, started),
        _epochs_logged(job, run),
    ):
        tag(run.client, run.run_id, {**point_tags(job.params), **job.tags})
        job.set_user_attr("mlflow_run_id", run.run_id)
        if failure is not None:
            raise failure
        yield run, config, data, started


def seed_of(ctx: TrialContext, job: Job) -> int:
    """The trial's weight-initialisation and shuffling seed, from the sweep's and its repeat."""
    return trial_seed(ctx.seed, repeat_of(job.params))


def point_tags(params: dict[str, Any]) -> dict[str, str]:
    """The MLflow tags that group a point's repeats: `sweep.point` (its values, the same for
    every repeat) and `sweep.repeat`."""
    point = ", ".join(f"{name}={value}" for name, value in sorted(factors(params).items()))
    return {"sweep.point": point, "sweep.repeat": str(repeat_of(params))}


@contextmanager
def recorded(ctx: TrialContext, job: Job, run: Any, started: float) -> Iterator[None]:
    """Record how a trial ended in both stores: pruned, or failed with its reason and
    traceback; then free Keras' memory for the next trial."""
    from sweep.training import Diverged, live_graphs, release
    from sweep.worker import TrialProcessError

    graphs = live_graphs()
    try:
        yield
    except optuna.TrialPruned as exc:
        seconds = time.perf_counter() - started
        job.set_user_attr("train_seconds", seconds)
        run.log_results({"train_seconds": seconds})
        run.finish("pruned", reason=str(exc))
        ctx.progress.trial_ended(job.number, "pruned", f"{exc} ({seconds:.1f} s)")
        raise
    except Exception as exc:
        plain = isinstance(exc, Diverged | TrialProcessError)
        reason = str(exc) if plain else f"{type(exc).__name__}: {exc}"
        job.set_user_attr("fail_reason", reason)
        child = getattr(exc, "child_traceback", None)
        run.log_text(child or traceback.format_exc(), "traceback.txt")
        run.finish("failed", reason=reason)
        ctx.progress.trial_ended(job.number, "failed", reason)
        raise
    finally:
        release(graphs)


def train_autoencoder(ctx: TrialContext, job: Job) -> float:
    """Build, fit with per-epoch events (logged, reported for pruning), save, return the best
    val_loss. With `ctx.isolate` the training runs in a process of its own (sweep.worker): memory
    does not grow from trial to trial and a crash fails that trial alone."""
    from sweep.tf_env import confine, use_xla
    from sweep.training import Diverged, reconstructions_path, train_trial
    from sweep.worker import call_in_process

    facts: dict[str, Any] = {}
    with (
        trial_run(ctx, job) as (run, config, data, started),
        tempfile.TemporaryDirectory(prefix="sweep-trial-") as tmp,
    ):

        def on_event(event: tuple) -> None:
            if event[0] == "built":
                facts.update(event[1])
                job.set_user_attr("param_count", facts["param_count"])
                for key, value in facts["runtime"].items():
                    job.set_user_attr(key, value)
                run.log_params(facts["runtime"])
                run.log_text(facts["summary"], "model_summary.txt")
                run.log_dict(facts["architecture"], "architecture.json")
                return
            _, epoch, logs = event
            job.trained = epoch
            if job.count_epochs:
                job.set_user_attr(EPOCHS_METRIC, epoch)
            step = job.initial_epoch + epoch
            run.log_epoch(step, {"loss": logs["loss"], "val_loss": logs["val_loss"]})
            ctx.progress.epoch(job.number, step, config.epochs, logs, time.perf_counter() - started)
            job.report(step, logs["val_loss"])

        to_train = config.replace(epochs=max(1, config.epochs - job.initial_epoch))
        model_path = str(Path(tmp) / "model.keras")
        xla = use_xla() and ctx.slot.gpu != ""  # a slot kept off the GPUs trains on the CPU
        seed = seed_of(ctx, job)
        args = (to_train, data, seed, xla, model_path, job.start_from, job.checkpoint)
        peak_mib = None
        if ctx.isolate:
            fit, peak_mib = call_in_process(
                train_trial,
                *args,
                on_event=on_event,
                rebuild={"Diverged": Diverged},
                prepare=partial(confine, ctx.slot.threads, ctx.slot.gpu),
                stop=ctx.stop,
            )
            job.set_user_attr("peak_rss_mib", round(peak_mib, 1))
        else:
            fit = train_trial(on_event, *args)
        best_epoch = job.initial_epoch + fit.best_epoch
        results = {
            "best_val_loss": fit.best_val_loss,
            "best_epoch": best_epoch,
            "epochs_run": len(fit.val_loss),
            "train_seconds": fit.seconds,
            "param_count": facts["param_count"],
            "images_per_second": len(data.x_train) * len(fit.loss) / fit.seconds,
        }
        if peak_mib is not None:
            results["peak_rss_mib"] = peak_mib
        run.log_results(results)
        for key in ("train_seconds", "best_epoch", "epochs_run"):
            job.set_user_attr(key, results[key])
        run.log_model(model_path)
        pictured = reconstructions_path(model_path)
        if pictured.exists():
            run.log_file(pictured)
        ctx.progress.trial_ended(
            job.number,
            "complete",
            f"best val_loss {fit.best_val_loss:.5f} at epoch {best_epoch}, "
            f"{facts['param_count']:,} params, {fit.seconds:.1f} s",
        )
        return fit.best_val_loss


@contextmanager
def _epochs_logged(job: Job, run: Any) -> Iterator[None]:
    """Where the backend counts epochs (keras-tuner's budget), log the epochs the trial trained
    however it ends (0 when its configuration failed), before its run is ended."""
    try:
        yield
    finally:
        if job.count_epochs:
            run.log_results({EPOCHS_METRIC: job.trained})


def train_classifier(ctx: TrialContext, job: Job) -> float:
    """A fresh copy of the encoder, both phases (frozen, then fine-tuned), the best
    val_accuracy. The test file is never read here: it is for `sweep classify`'s evaluation."""
    from sweep.classify import prepare, train_two_phases

    with trial_run(ctx, job) as (run, config, _, _started):
        seed = seed_of(ctx, job)
        prepared = prepare(config, ctx.profile, ctx.split, ctx.n_classes, ctx.encoder, seed)
        job.set_user_attr("param_count", prepared.model.count_params())
        history, boundary, seconds = train_two_phases(
            prepared, config, run, lambda step, logs: job.report(step, logs["val_accuracy"])
        )
        val = history[history["metric"] == "val_accuracy"]
        best = float(val["value"].max())
        job.set_user_attr("train_seconds", seconds)
        job.set_user_attr("phase_boundary", boundary)
        run.log_results({"best_val_accuracy": best})
        ctx.progress.trial_ended(
            job.number, "complete", f"best val_accuracy {best:.4f}, {seconds:.1f} s"
        )
        return best
