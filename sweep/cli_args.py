"""The `sweep` command's arguments: one parser per subcommand, with the checks argparse can
make (a flag's type, a seed's range). Each subcommand's name is `args.command`."""

from __future__ import annotations

import argparse
import os

from sweep.errors import EXIT_USER_ERROR
from sweep.points import CONFIRM_SEEDS

MAX_SEED = 2**31 - 1
ENCODER_SPEC = "STUDY|RUN_ID|PATH.keras"
STORAGE_HELP = "Optuna RDB URL (default: sqlite in the output folder)"


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


def _add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help=STORAGE_HELP)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    _add_storage_option(parser)
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: sqlite in the output folder)"
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or mnist")
    for name in ("train-images", "train-labels", "test-images", "test-labels"):
        data.add_argument(f"--{name}", metavar="PATH", help=f"IDX file of {name.replace('-', ' ')}")


def _add_server_options(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument(
        "--port", type=int, default=port, help=f"default {port}, or the next free one"
    )


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run or continue the study of a search-space file")
    run.add_argument("space", help="search-space YAML, e.g. search_spaces/filters.yaml")
    run.add_argument("--profile", default="quick", help="quick (default, 2-core CPU) or full")
    run.add_argument("--n-trials", type=int, help="study-wide trial budget (default: the file's)")
    run.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="grid spaces: train each point N times with different seeds (default: the file's, "
        "or 1)",
    )
    run.add_argument(
        "--confirm",
        type=int,
        metavar="K",
        help="tpe/random spaces: once the search is done, retrain its K best configurations with "
        f"{CONFIRM_SEEDS} new seeds each (default: the file's, or 0)",
    )
    run.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="fix base config keys (YAML)"
    )
    run.add_argument(
        "--seed", type=seed, default=0, help="seed of the data split, weights and shuffling"
    )
    run.add_argument(
        "--encoder-from",
        metavar=ENCODER_SPEC,
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
        "--jobs",
        metavar="N|auto",
        help="trials trained at once, each in its own process with a share of the cores "
        "(default: the profile's, auto: from the cores, memory and GPUs)",
    )
    run.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads per trial (default: the cores divided among the jobs; with one job, "
        "TensorFlow's own default)",
    )
    run.add_argument(
        "--gpus",
        metavar="0,1|none",
        help="GPUs the trials use, round-robin, each trial seeing only its own (default: all "
        "visible under --jobs auto)",
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


def _add_classify(sub: argparse._SubParsersAction) -> None:
    classify = sub.add_parser(
        "classify", help="train a classifier on the best encoder; evaluate on the test file once"
    )
    classify.add_argument(
        "--encoder-from",
        metavar=ENCODER_SPEC,
        help="default: the joint study's best trial if it exists, else the best of all studies",
    )
    classify.add_argument("--profile", default="quick", help="quick (default) or full")
    classify.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="classifier config keys (YAML)"
    )
    classify.add_argument("--seed", type=seed, default=0, help=f"0 to {MAX_SEED} (default 0)")
    _add_store_options(classify)
    _add_data_options(classify)


def _add_others(sub: argparse._SubParsersAction) -> None:
    """The subcommands that train nothing: show, studies, report, services, ui, dashboard."""
    show = sub.add_parser("show", help="print the model of a space's base config, no training")
    show.add_argument("space")
    show.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")

    studies = sub.add_parser("studies", help="list studies: trials by state, best value")
    _add_storage_option(studies)

    report = sub.add_parser("report", help="write the PDF report comparing the studies")
    report.add_argument("studies", nargs="*", metavar="STUDY", help="default: every study")
    report.add_argument("-o", metavar="FILE.pdf", help="default: report.pdf in the output folder")
    _add_store_options(report)

    services = sub.add_parser(
        "services", help="start or stop local PostgreSQL + MLflow server for many workers"
    )
    services.add_argument("action", choices=("start", "stop", "status"))
    services.add_argument("--pg-port", type=int, default=5433)
    services.add_argument("--mlflow-port", type=int, default=5001)

    ui = sub.add_parser("ui", help="open the MLflow UI on the project's store")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: the output folder's)")
    _add_server_options(ui, 5000)

    dashboard = sub.add_parser("dashboard", help="open Optuna's dashboard on the project's storage")
    _add_storage_option(dashboard)
    _add_server_options(dashboard, 8080)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `sweep` command and all its subcommands."""
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
    _add_run(sub)
    _add_classify(sub)
    _add_others(sub)
    return parser
