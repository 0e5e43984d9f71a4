"""The `sweep` command: run, classify, show, studies, report, services, ui, dashboard. Each
subcommand is a function of the arguments sweep.cli_args parses, returning an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.cli_args import build_parser
from sweep.console import configure_logging, redacted_output
from sweep.errors import EXIT_USER_ERROR, SweepError
from sweep.signals import Terminated, exit_code, stop_on_signals
from sweep.storage import MLFLOW, OPTUNA, Role, default_url, is_server, mask_url

if TYPE_CHECKING:
    from sweep.encoder import EncoderSource
    from sweep.tracking import Tracker

# Not __name__: `python -m sweep.cli` runs this module as __main__, outside the "sweep" logger.
log = logging.getLogger("sweep.cli")
EXIT_BUG = 1
BROWSE_HINT = "Browse the runs: make ui (or: sweep ui)"


def output_dir(args: argparse.Namespace) -> Path:
    """The output folder, created if need be."""
    path = Path(args.output)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"output folder {path}: {exc.strerror}; pass --output DIR") from None
    return path


def _store(args: argparse.Namespace, given: str | None, variable: str, role: Role) -> str:
    return given or os.environ.get(variable) or default_url(output_dir(args), role)


def storage_url(args: argparse.Namespace) -> str:
    """--storage, else $SWEEP_STORAGE, else the SQLite file in the output folder."""
    return _store(args, args.storage, "SWEEP_STORAGE", OPTUNA)


def tracking_uri(args: argparse.Namespace) -> str:
    """--tracking-uri, else $SWEEP_TRACKING_URI, else the SQLite file in the output folder."""
    return _store(args, args.tracking_uri, "SWEEP_TRACKING_URI", MLFLOW)


def data_source(args: argparse.Namespace):
    """The dataset options: four IDX files, or a named dataset."""
    from sweep.data import IdxFiles, find_source

    names = ("train_images", "train_labels", "test_images", "test_labels")
    given = {n: getattr(args, n) for n in names if getattr(args, n)}
    if given and len(given) != len(names):
        missing = ", ".join("--" + n.replace("_", "-") for n in names if n not in given)
        raise SweepError(f"IDX files need all four options; missing {missing}")
    files = IdxFiles(**{k: Path(v) for k, v in given.items()}) if given else None
    return find_source(args.dataset, files)


def open_tracker(uri: str, out: Path) -> Tracker:
    """The MLflow tracker, its store checked before anything is trained."""
    from sweep.tracking import Tracker

    tracker = Tracker(uri, artifact_root=out / "mlartifacts")
    tracker.check()
    return tracker


@contextmanager
def encoder_for(
    args: argparse.Namespace, storage: str, tracker: Tracker, needed: bool = True
) -> Iterator[EncoderSource | None]:
    """The encoder --encoder-from names (None when not `needed`), its file kept in a
    temporary folder while the caller trains."""
    import tempfile

    if not needed:
        yield None
        return
    from sweep.encoder import resolve_encoder

    with tempfile.TemporaryDirectory() as workdir:
        yield resolve_encoder(args.encoder_from, storage, tracker, Path(workdir))


@contextmanager
def config_errors(prefix: str, suffix: str = "") -> Iterator[None]:
    """A ConfigError raised inside becomes a one-line SweepError: prefix, message, suffix."""
    from models.config import ConfigError

    try:
        yield
    except ConfigError as exc:
        raise SweepError(f"{prefix}{exc}{suffix}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from sweep.confirm import with_confirm
    from sweep.profiles import get_profile
    from sweep.repeats import with_repeats
    from sweep.space_file import apply_overrides, load_space, parse_overrides

    space = load_space(args.space)
    space = apply_overrides(space, parse_overrides(args.set, space.config_class))
    space = with_repeats(space, args.repeats)
    space = with_confirm(space, args.confirm)
    profile = get_profile(args.profile)
    if args.n_trials is not None and args.n_trials < 1:
        raise SweepError(f"--n-trials must be at least 1, got {args.n_trials}")
    if args.n_trials is not None and space.confirm > args.n_trials:
        raise SweepError(
            f"confirm {space.confirm} is more than --n-trials {args.n_trials}: a search of "
            f"{args.n_trials} trials has at most {args.n_trials} configurations to confirm; "
            "pass a smaller --confirm"
        )
    from sweep.slots import check, parse_gpus, parse_jobs

    jobs = parse_jobs(args.jobs) or profile.jobs
    gpus = parse_gpus(args.gpus)
    if gpus == ():  # --gpus none: the sweep and its trials see no GPU (precision, XLA follow)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    # Trials share the machine only where each trains in a process of its own.
    own_process = args.backend == "optuna" and not args.in_process
    check(jobs, args.threads, own_process and space.kind == "autoencoder")
    if args.backend == "keras-tuner":
        if args.confirm:  # a file's confirm, like its sampler, is the Optuna backend's
            raise SweepError(
                f"--confirm {args.confirm}: the keras-tuner backend does not retrain its best "
                "configurations; use --backend optuna"
            )
        return run_keras_tuner(args, space, profile)
    source, storage, uri = data_source(args), storage_url(args), tracking_uri(args)

    from sweep.run import run_sweep
    from sweep.study import describe_best

    log.info("Optuna storage: %s\nMLflow tracking: %s", mask_url(storage), mask_url(uri))
    tracker = open_tracker(uri, output_dir(args))
    if args.heartbeat < 0:
        raise SweepError(
            f"--heartbeat must be 0 (off) or a number of seconds, got {args.heartbeat}"
        )
    with encoder_for(args, storage, tracker, space.kind == "classifier") as encoder:
        if encoder is not None:
            log.info("Encoder: %s", encoder.description)
        study = run_sweep(
            space,
            profile,
            source,
            storage,
            tracker,
            n_trials=args.n_trials,
            seed=args.seed,
            encoder=encoder,
            heartbeat_seconds=args.heartbeat or None,
            isolate=not args.in_process,
            jobs=jobs,
            threads=args.threads,
            gpus=gpus,
        )
    print(describe_best(study, space))
    print(BROWSE_HINT)
    return 0


def run_keras_tuner(args: argparse.Namespace, space: Any, profile: Any) -> int:
    """`sweep run --backend keras-tuner`: the same space searched by a keras-tuner tuner."""
    from sweep.search import describe, run_search
    from sweep.tuner import check_space, project_dir

    check_space(space, args.tuner)
    source = data_source(args)
    uri, out = tracking_uri(args), output_dir(args)
    project = project_dir(out, space, args.tuner)
    log.info("keras-tuner project: %s\nMLflow tracking: %s", project, mask_url(uri))
    tracker = open_tracker(uri, out)
    records = run_search(
        space,
        profile,
        source,
        tracker,
        out,
        tuner=args.tuner,
        n_trials=args.n_trials,
        seed=args.seed,
    )
    print(describe(records, space, args.tuner))
    print(BROWSE_HINT)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from models.config import ClassifierConfig
    from sweep.profiles import get_profile
    from sweep.space_file import parse_overrides

    with config_errors("--set: "):
        config = ClassifierConfig.from_dict(parse_overrides(args.set, ClassifierConfig))
    profile = get_profile(args.profile)
    source, storage, out = data_source(args), storage_url(args), output_dir(args)
    tracker = open_tracker(tracking_uri(args), out)

    from sweep.classify import run_classifier

    with encoder_for(args, storage, tracker) as encoder:
        result = run_classifier(config, profile, source, encoder, tracker, out, seed=args.seed)
    print(f"MLflow run {result.run_id} in experiment 'classifier'")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from sweep.space_file import load_space, parse_overrides

    space = load_space(args.space)
    with config_errors("--set: "):
        config = space.base.replace(**parse_overrides(args.set, space.config_class))
    with config_errors(f"{space.path}: ", " (sweep show builds for 28x28 images)"):
        config.check_images(28, 28)

    from sweep.tf_env import import_keras_quietly

    import_keras_quietly()
    from sweep.training import model_summary

    model = _shown_model(space, config)
    print(model_summary(model))
    print(f"Total parameters: {model.count_params():,}")
    return 0


def _shown_model(space: Any, config: Any) -> Any:
    """The model `sweep show` prints, after the line saying what it is built from."""
    from models.autoencoder import build_autoencoder, extract_encoder
    from models.classifier import build_classifier
    from models.config import AutoencoderConfig

    if space.kind != "classifier":
        print(f"{space.path}: base config {config.to_dict()} (built for 28x28 images)")
        return build_autoencoder(config)
    encoder = extract_encoder(build_autoencoder(AutoencoderConfig()))
    model = build_classifier(encoder, config, n_classes=10)
    print(f"{space.path}: classifier config {config.to_dict()}")
    print(
        "The sweep puts the best trained encoder (or --encoder-from) in place of 'encoder'; "
        "shown on the encoder of a default autoencoder config, for 28x28 images, 10 classes."
    )
    return model


def cmd_studies(args: argparse.Namespace) -> int:
    from sweep.listing import read_studies, table

    url = storage_url(args)
    studies = read_studies(url)
    if not studies:
        print(f"No studies in {mask_url(url)} yet; start one with: make sweep-filters")
        return 0
    print(table(studies))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.build import NOT_STUDIES, build_report

    output = args.o or output_dir(args)
    report = build_report(storage_url(args), tracking_uri(args), output, args.studies or None)
    studies = [s for s in report.sections if s not in NOT_STUDIES]
    inside = " into the folder given to -o" if args.o and report.path != Path(args.o) else ""
    print(
        f"Wrote {report.path}{inside} ({report.pages} pages, studies: {', '.join(studies)}) "
        f"in {report.seconds:.1f} s"
    )
    return 0


def serve(what: str, forever: Callable[[], None]) -> int:
    """Run a server until it ends (exit code 0) or Ctrl-C or SIGTERM stops it."""
    try:
        forever()
    except KeyboardInterrupt as exc:
        log.info("\n%s stopped.", what)
        return exit_code(exc)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from sweep.browse import mlflow_ui_command, pick_port, run_mlflow_ui

    uri = tracking_uri(args)
    if is_server(uri):
        print(f"The runs are on the MLflow server: open {mask_url(uri)}")
        return 0
    from sweep.tracking import open_client

    open_client(uri)  # the UI's server would migrate whatever database it is given
    port = pick_port(args.host, args.port)
    artifacts = (output_dir(args) / "mlartifacts").resolve().as_uri()
    log.info("MLflow UI for %s: starting on %s:%s ...", mask_url(uri), args.host, port)
    command = mlflow_ui_command(uri, artifacts, args.host, port)
    return serve("MLflow UI", lambda: run_mlflow_ui(command, f"http://{args.host}:{port}"))


def cmd_dashboard(args: argparse.Namespace) -> int:
    from sweep.browse import dashboard_server, pick_port
    from sweep.storage import open_storage

    url = storage_url(args)
    storage = open_storage(url)
    port = pick_port(args.host, args.port)
    server = dashboard_server(storage, args.host, port)
    log.info(
        "Optuna dashboard for %s\nOpen http://%s:%s/dashboard  (Ctrl-C stops it)",
        mask_url(url),
        args.host,
        port,
    )
    try:
        return serve("Optuna dashboard", server.serve_forever)
    finally:
        server.server_close()


def cmd_services(args: argparse.Namespace) -> int:
    from sweep import services

    folder = output_dir(args) / "services"
    if args.action == "stop":
        stopped = services.stop(folder)
        print(f"Stopped: {', '.join(stopped)}" if stopped else f"Nothing runs from {folder}")
        return 0
    if args.action == "status":
        running = services.status(folder)
        if running is None:
            print(f"No services run from {folder}; start them with: make services")
            return 1
    else:
        log.info(
            "Starting PostgreSQL on 127.0.0.1:%s and MLflow on port %s (files in %s) ...",
            args.pg_port,
            args.mlflow_port,
            folder,
        )
        running = services.start(folder, args.pg_port, args.mlflow_port)
    print(
        f"Optuna storage:  {running.storage}\n"
        f"MLflow tracking: {running.tracking_uri}\n"
        f"Password: in {running.password_file} (or $PGPASSWORD); workers read $PGPASSWORD:\n"
        f"  export PGPASSWORD=$(cat {running.password_file})\n"
        f"  sweep run search_spaces/filters.yaml --storage {running.storage} "
        f"--tracking-uri {running.tracking_uri}"
    )
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "classify": cmd_classify,
    "show": cmd_show,
    "studies": cmd_studies,
    "report": cmd_report,
    "services": cmd_services,
    "ui": cmd_ui,
    "dashboard": cmd_dashboard,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` names (default: the process's arguments); its exit code."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    with redacted_output(argv):
        configure_logging()
        args = build_parser().parse_args(argv)
        stop_on_signals()
        try:
            return COMMANDS[args.command](args)
        except SweepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt as exc:
            how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "\ninterrupted"
            print(f"{how}: finished trials are kept; run the same command to continue.")
            return exit_code(exc)
        except Exception:  # a bug: its traceback, passwords masked like all other output
            traceback.print_exc()
            return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
