"""The `sweep` command: run, classify, show, studies, report, services, ui, dashboard. Each
subcommand returns an exit code."""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from sweep.errors import SweepError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BUG = 1
EXIT_TERMINATED = 128 + signal.SIGTERM


MAX_SEED = 2**31 - 1


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, as the project's own errors are."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def seed(text: str) -> int:
    """A seed for NumPy, TensorFlow and the samplers alike: 0 to MAX_SEED."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text[:40]!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {value}")
    return value


def output_dir(args: argparse.Namespace) -> Path:
    path = Path(args.output)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"output folder {path}: {exc.strerror}; pass --output DIR") from None
    return path


def storage_url(args: argparse.Namespace) -> str:
    from sweep.storage import default_storage

    return args.storage or os.environ.get("SWEEP_STORAGE") or default_storage(output_dir(args))


def tracking_uri(args: argparse.Namespace) -> str:
    from sweep.tracking import default_tracking_uri

    return (
        args.tracking_uri
        or os.environ.get("SWEEP_TRACKING_URI")
        or default_tracking_uri(output_dir(args))
    )


def data_source(args: argparse.Namespace):
    from sweep.data import IdxFiles, find_source

    names = ("train_images", "train_labels", "test_images", "test_labels")
    given = {n: getattr(args, n) for n in names if getattr(args, n)}
    if given and len(given) != len(names):
        missing = ", ".join("--" + n.replace("_", "-") for n in names if n not in given)
        raise SweepError(f"IDX files need all four options; missing {missing}")
    files = IdxFiles(**{k: Path(v) for k, v in given.items()}) if given else None
    return find_source(args.dataset, files)


def cmd_run(args: argparse.Namespace) -> int:
    import tempfile

    from sweep.profiles import get_profile
    from sweep.space import apply_overrides, load_space, parse_overrides

    space = load_space(args.space)
    space = apply_overrides(space, parse_overrides(args.set, space.config_class))
    profile = get_profile(args.profile)
    if args.n_trials is not None and args.n_trials < 1:
        raise SweepError(f"--n-trials must be at least 1, got {args.n_trials}")
    if args.backend == "keras-tuner":
        return run_keras_tuner(args, space, profile)
    source = data_source(args)
    storage, uri = storage_url(args), tracking_uri(args)

    from sweep.storage import mask_url
    from sweep.study import describe_best, run_sweep
    from sweep.tracking import Tracker

    out = output_dir(args)
    print(f"Optuna storage: {mask_url(storage)}\nMLflow tracking: {mask_url(uri)}", flush=True)
    tracker = Tracker(uri, artifact_root=out / "mlartifacts")
    tracker.check()
    if args.heartbeat < 0:
        raise SweepError(
            f"--heartbeat must be 0 (off) or a number of seconds, got {args.heartbeat}"
        )
    with tempfile.TemporaryDirectory() as workdir:
        encoder = None
        if space.kind == "classifier":
            from sweep.classify import resolve_encoder

            encoder = resolve_encoder(args.encoder_from, storage, tracker, Path(workdir))
            print(f"Encoder: {encoder.description}")
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
        )
    print(describe_best(study, space))
    print("Browse the runs: make ui (or: sweep ui)")
    return 0


def run_keras_tuner(args: argparse.Namespace, space, profile) -> int:
    """`sweep run --backend keras-tuner`: the same space searched by a keras-tuner tuner."""
    from sweep.tuner import check_space, describe, project_dir, run_search

    check_space(space, args.tuner)
    source = data_source(args)
    uri, out = tracking_uri(args), output_dir(args)

    from sweep.storage import mask_url
    from sweep.tracking import Tracker

    print(f"keras-tuner project: {project_dir(out, space, args.tuner)}\n"
          f"MLflow tracking: {mask_url(uri)}", flush=True)  # fmt: skip
    tracker = Tracker(uri, artifact_root=out / "mlartifacts")
    tracker.check()
    records = run_search(
        space, profile, source, tracker, out,
        tuner=args.tuner, n_trials=args.n_trials, seed=args.seed,
    )  # fmt: skip
    print(describe(records, space, args.tuner))
    print("Browse the runs: make ui (or: sweep ui)")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    import tempfile

    from models.config import ClassifierConfig, ConfigError
    from sweep.profiles import get_profile
    from sweep.space import parse_overrides

    try:
        config = ClassifierConfig.from_dict(parse_overrides(args.set, ClassifierConfig))
    except ConfigError as exc:
        raise SweepError(f"--set: {exc}") from None
    profile = get_profile(args.profile)
    source = data_source(args)
    storage, uri = storage_url(args), tracking_uri(args)
    out = output_dir(args)

    from sweep.classify import resolve_encoder, run_classifier
    from sweep.tracking import Tracker

    tracker = Tracker(uri, artifact_root=out / "mlartifacts")
    tracker.check()
    with tempfile.TemporaryDirectory() as workdir:
        encoder = resolve_encoder(args.encoder_from, storage, tracker, Path(workdir))
        result = run_classifier(config, profile, source, encoder, tracker, out, seed=args.seed)
    print(f"MLflow run {result.run_id} in experiment 'classifier'")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from models.config import AutoencoderConfig, ConfigError
    from sweep.space import load_space, parse_overrides

    space = load_space(args.space)
    try:
        config = space.base.replace(**parse_overrides(args.set, space.config_class))
    except ConfigError as exc:
        raise SweepError(f"--set: {exc}") from None
    try:
        config.check_images(28, 28)
    except ConfigError as exc:
        raise SweepError(f"{space.path}: {exc} (sweep show builds for 28x28 images)") from None

    from sweep.tf_env import import_keras_quietly

    import_keras_quietly()
    from models.autoencoder import build_autoencoder, extract_encoder
    from models.classifier import build_classifier
    from sweep.training import model_summary

    if space.kind == "classifier":
        encoder = extract_encoder(build_autoencoder(AutoencoderConfig()))
        model = build_classifier(encoder, config, n_classes=10)
        print(f"{space.path}: classifier config {config.to_dict()}")
        print(
            "The sweep puts the best trained encoder (or --encoder-from) in place of 'encoder'; "
            "shown on the encoder of a default autoencoder config, for 28x28 images, 10 classes."
        )
    else:
        model = build_autoencoder(config)
        print(f"{space.path}: base config {config.to_dict()} (built for 28x28 images)")
    print(model_summary(model))
    print(f"Total parameters: {model.count_params():,}")
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    import optuna

    from sweep.storage import mask_url, open_storage

    url = storage_url(args)
    storage = open_storage(url)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if not summaries:
        print(f"No studies in {mask_url(url)} yet; start one with: make sweep-filters")
        return 0
    header = f"{'study':<16}{'complete':>9}{'pruned':>8}{'failed':>8}{'running':>9}  best val_loss"
    print(header)
    for summary in sorted(summaries, key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        counts = {state: 0 for state in ("complete", "pruned", "fail", "running")}
        for trial in study.get_trials(deepcopy=False):
            name = trial.state.name.lower()
            counts[name] = counts.get(name, 0) + 1
        best = summary.best_trial
        shown = f"{best.value:.5f} (trial {best.number})" if best is not None else "-"
        print(
            f"{summary.study_name:<16}{counts['complete']:>9}{counts['pruned']:>8}"
            f"{counts['fail']:>8}{counts['running']:>9}  {shown}"
        )
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


def cmd_ui(args: argparse.Namespace) -> int:
    from sweep.browse import mlflow_ui_command, pick_port, run_mlflow_ui
    from sweep.storage import mask_url

    uri = tracking_uri(args)
    if uri.startswith(("http://", "https://")):
        print(f"The runs are on the MLflow server: open {mask_url(uri)}")
        return 0
    from sweep.tracking import open_client

    open_client(uri)  # the UI's server would migrate whatever database it is given
    port = pick_port(args.host, args.port, print)
    artifacts = (output_dir(args) / "mlartifacts").resolve().as_uri()
    print(f"MLflow UI for {mask_url(uri)}: starting on {args.host}:{port} ...", flush=True)
    command = mlflow_ui_command(uri, artifacts, args.host, port)
    try:
        run_mlflow_ui(command, f"http://{args.host}:{port}", lambda text: print(text, flush=True))
    except KeyboardInterrupt as exc:
        print("\nMLflow UI stopped.")
        return stopped(exc)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from sweep.browse import dashboard_server, pick_port
    from sweep.storage import mask_url, open_storage

    url = storage_url(args)
    storage = open_storage(url)
    port = pick_port(args.host, args.port, print)
    server = dashboard_server(storage, args.host, port)
    print(
        f"Optuna dashboard for {mask_url(url)}\n"
        f"Open http://{args.host}:{port}/dashboard  (Ctrl-C stops it)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt as exc:
        print("\nOptuna dashboard stopped.")
        return stopped(exc)
    finally:
        server.server_close()
    return 0


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
        print(f"Starting PostgreSQL on 127.0.0.1:{args.pg_port} and MLflow on port "
              f"{args.mlflow_port} (files in {folder}) ...", flush=True)  # fmt: skip
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


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="Optuna RDB URL (default: sqlite in the output folder)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: sqlite in the output folder)"
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or mnist")
    for name in ("train-images", "train-labels", "test-images", "test-labels"):
        data.add_argument(f"--{name}", metavar="PATH", help=f"IDX file of {name.replace('-', ' ')}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sweep",
        description="Hyperparameter sweeps of a convolutional autoencoder (Optuna + MLflow).",
    )
    parser.add_argument(
        "--output",
        default=os.environ.get("SWEEP_OUTPUT", "runs"),
        help="folder for stores, models and reports (default: $SWEEP_OUTPUT or ./runs)",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )

    run = sub.add_parser("run", help="run or continue the study of a search-space file")
    run.add_argument("space", help="search-space YAML, e.g. search_spaces/filters.yaml")
    run.add_argument("--profile", default="quick", help="quick (default, 2-core CPU) or full")
    run.add_argument("--n-trials", type=int, help="study-wide trial budget (default: the file's)")
    run.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="fix base config keys (YAML)"
    )
    run.add_argument(
        "--seed", type=seed, default=0, help="seed of the data split, weights and shuffling"
    )
    run.add_argument(
        "--encoder-from",
        metavar="STUDY|RUN_ID|PATH.keras",
        help="classifier spaces only: the encoder (default: the best autoencoder trial)",
    )
    run.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        metavar="SECONDS",
        help="a running trial's heartbeat (default 30; 0: off); a trial silent for 4 beats "
        "is failed and retried by a live worker",
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="train autoencoder trials in this process, not one process each (for "
        "debuggers; memory then grows from trial to trial)",
    )
    run.add_argument(
        "--backend",
        choices=("optuna", "keras-tuner"),
        default="optuna",
        help="who searches the space (default: optuna; keras-tuner: autoencoder spaces only)",
    )
    run.add_argument(
        "--tuner",
        choices=("hyperband", "bayesian", "random", "grid"),
        default="hyperband",
        help="the keras-tuner tuner (default: hyperband); ignored by the optuna backend",
    )
    _add_store_options(run)
    _add_data_options(run)
    run.set_defaults(func=cmd_run)

    classify = sub.add_parser(
        "classify", help="train a classifier on the best encoder; evaluate on the test file once"
    )
    classify.add_argument(
        "--encoder-from",
        metavar="STUDY|RUN_ID|PATH.keras",
        help="default: the joint study's best trial if it exists, else the best of all studies",
    )
    classify.add_argument("--profile", default="quick", help="quick (default) or full")
    classify.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="classifier config keys (YAML)"
    )
    classify.add_argument("--seed", type=seed, default=0, help=f"0 to {MAX_SEED} (default 0)")
    _add_store_options(classify)
    _add_data_options(classify)
    classify.set_defaults(func=cmd_classify)

    show = sub.add_parser("show", help="print the model of a space's base config, no training")
    show.add_argument("space")
    show.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    show.set_defaults(func=cmd_show)

    studies = sub.add_parser("studies", help="list studies: trials by state, best value")
    studies.add_argument("--storage", help="Optuna RDB URL (default: sqlite in the output folder)")
    studies.set_defaults(func=cmd_studies)

    report = sub.add_parser("report", help="write the PDF report comparing the studies")
    report.add_argument("studies", nargs="*", metavar="STUDY", help="default: every study")
    report.add_argument("-o", metavar="FILE.pdf", help="default: report.pdf in the output folder")
    _add_store_options(report)
    report.set_defaults(func=cmd_report)

    services = sub.add_parser(
        "services", help="start or stop local PostgreSQL + MLflow server for many workers"
    )
    services.add_argument("action", choices=("start", "stop", "status"))
    services.add_argument("--pg-port", type=int, default=5433)
    services.add_argument("--mlflow-port", type=int, default=5001)
    services.set_defaults(func=cmd_services)

    ui = sub.add_parser("ui", help="open the MLflow UI on the project's store")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: the output folder's)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    ui.add_argument("--port", type=int, default=5000, help="default 5000, or the next free one")
    ui.set_defaults(func=cmd_ui)

    dashboard = sub.add_parser("dashboard", help="open Optuna's dashboard on the project's storage")
    dashboard.add_argument(
        "--storage", help="Optuna RDB URL (default: sqlite in the output folder)"
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: loopback)"
    )
    dashboard.add_argument(
        "--port", type=int, default=8080, help="default 8080, or the next free one"
    )
    dashboard.set_defaults(func=cmd_dashboard)
    return parser


class RedactingStream(io.TextIOBase):
    """A text stream that masks passwords (sweep.storage.redact) in everything written to it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        from sweep.storage import redact

        self.stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


@contextmanager
def redacted_output(argv: list[str]) -> Iterator[None]:
    """Register every password the command may meet (URLs among its arguments or in the
    environment, $PGPASSWORD) and mask them in all it prints, argparse's errors, messages of
    libraries and tracebacks included."""
    from sweep.storage import add_secret, add_url_secret

    add_secret(os.environ.get("PGPASSWORD"))
    given = [arg.partition("=")[2] if arg.startswith("-") else arg for arg in argv]
    urls = [os.environ.get("SWEEP_STORAGE"), os.environ.get("SWEEP_TRACKING_URI"), *given]
    for url in urls:
        if url and "://" in url:
            add_url_secret(url)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved


def stopped(exc: KeyboardInterrupt) -> int:
    """The exit code of a command stopped by Ctrl-C or SIGTERM."""
    from sweep.signals import Terminated

    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    from sweep.signals import Terminated, stop_on_signals

    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    with redacted_output(argv):
        args = build_parser().parse_args(argv)
        stop_on_signals()
        try:
            return args.func(args)
        except SweepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except Terminated as exc:
            print(
                "terminated (SIGTERM): finished trials are kept; run the same command to continue."
            )
            return stopped(exc)
        except KeyboardInterrupt as exc:
            print("\ninterrupted: finished trials are kept; run the same command to continue.")
            return stopped(exc)
        except Exception:  # a bug: its traceback, passwords masked like all other output
            traceback.print_exc()
            return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
