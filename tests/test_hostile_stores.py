"""The two stores under hostile use: stores given the wrong way round, files that are no store,
bad URLs, half-migrated MLflow stores, passwords in URLs, and two first runs at once."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from sweep.cli import main
from sweep.errors import SweepError
from sweep.services import free_port
from sweep.storage import add_secret, mask_url, open_storage, redact
from sweep.tracking import Tracker
from tests.conftest import idx_options, write_dataset

TINY4 = """
study: tiny4
base:
  filters: [4, 8]
  pool_blocks: 2
  kernel_size: 3
  batch_size: 64
  epochs: 1
params:
  filters:
    values: [[2, 4], [4, 8], [8, 8], [2, 8]]
"""
# MLflow's first migration, where a store made by MLflow 1.0 starts.
OLD_REVISION = "451aebb31d03"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real MLflow store, a real Optuna storage, a SQLite file of another program, a text
    file, the 4-point space and tiny IDX data: copied by the tests that change them."""
    folder = tmp_path_factory.mktemp("made")
    Tracker(f"sqlite:///{folder / 'mlflow.db'}").check()
    optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{folder / 'optuna.db'}"))
    with sqlite3.connect(folder / "other.db") as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
    (folder / "notes.txt").write_text("not a database, just some notes\n" * 4)
    (folder / "tiny4.yaml").write_text(TINY4)
    files = write_dataset(folder / "idx", n_train=100, n_test=20)
    return {
        "mlflow": folder / "mlflow.db",
        "optuna": folder / "optuna.db",
        "other": folder / "other.db",
        "text": folder / "notes.txt",
        "space": folder / "tiny4.yaml",
        "idx": files,
    }


def sweep(*args: object) -> int:
    return main([str(a) for a in args])


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


def snapshot(path: Path) -> bytes | list[str]:
    return sorted(os.listdir(path)) if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize(
    ("storage", "tracking", "message"),
    [
        (
            "mlflow",
            "mlflow",
            "--storage sqlite:///{storage} is an MLflow tracking store, not an Optuna storage; swap --storage and --tracking-uri?",
        ),
        (
            "mlflow",
            "optuna",
            "--tracking-uri sqlite:///{tracking} is an Optuna storage, not an MLflow tracking store; swap --storage and --tracking-uri?",
        ),
        (
            "other",
            "mlflow",
            "--storage sqlite:///{storage} is a database with other tables (customers), not an Optuna storage",
        ),
        (
            "optuna",
            "other",
            "--tracking-uri sqlite:///{tracking} is a database with other tables (customers), not an MLflow tracking store",
        ),
        ("text", "mlflow", "--storage sqlite:///{storage} is not a SQLite database file"),
        ("optuna", "text", "--tracking-uri sqlite:///{tracking} is not a SQLite database file"),
        (
            "folder",
            "mlflow",
            "--storage sqlite:///{storage} is a folder; name a file in it, e.g. sqlite:///{storage}/optuna.db",
        ),
        ("optuna", "folder", "--tracking-uri sqlite:///{tracking} is a folder; name a file in it"),
    ],
)
def test_a_store_of_the_other_tool_or_of_none_is_refused_and_left_as_it_was(
    tmp_path: Path, made: dict, capsys, storage: str, tracking: str, message: str
) -> None:
    paths = {}
    for flag, kind in (("storage", storage), ("tracking", tracking)):
        paths[flag] = tmp_path / f"{flag}-{kind}"
        if kind == "folder":
            paths[flag].mkdir()
        else:
            shutil.copy(made[kind], paths[flag])
    before = {flag: snapshot(path) for flag, path in paths.items()}
    out = tmp_path / "out"
    stores = [
        "--storage",
        f"sqlite:///{paths['storage']}",
        "--tracking-uri",
        f"sqlite:///{paths['tracking']}",
    ]
    assert sweep("--output", out, "run", made["space"], *idx_options(made["idx"]), *stores) == 2
    assert message.format(**paths) in one_error_line(capsys)
    assert {flag: snapshot(path) for flag, path in paths.items()} == before
    if message.startswith("--storage"):  # every command that opens the storage refuses it
        assert sweep("--output", out, "studies", "--storage", f"sqlite:///{paths['storage']}") == 2
        assert message.format(**paths) in one_error_line(capsys)
        assert snapshot(paths["storage"]) == before["storage"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--tracking-uri",
            "garbage://x",
            "--tracking-uri 'garbage://x' is not an MLflow tracking URI; use sqlite:///PATH or http(s)://HOST:PORT",
        ),
        (
            "--tracking-uri",
            "{tmp}/notes.txt",
            "is not an MLflow tracking URI; use sqlite:///PATH or http(s)://HOST:PORT",
        ),
        (
            "--tracking-uri",
            "https://",
            "--tracking-uri 'https://' names no host; use http(s)://HOST:PORT",
        ),
        ("--tracking-uri", "sqlite:///", "--tracking-uri 'sqlite:///' names no file"),
        (
            "--storage",
            "garbage",
            "--storage 'garbage' is not a database URL; use sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
        ),
        ("--storage", "garbage://x", "--storage 'garbage://x' is not a database URL"),
        ("--storage", "http://127.0.0.1:1", "--storage 'http://127.0.0.1:1' is not a database URL"),
        (
            "--storage",
            "sqlite:///",
            "--storage 'sqlite:///' names no file (an in-memory store is lost at exit); use sqlite:///PATH",
        ),
        ("--storage", "sqlite:///:memory:", "names no file"),
        (
            "--storage",
            "sqlite:///{tmp}/no/such/folder/optuna.db",
            "folder {tmp}/no/such/folder does not exist",
        ),
        (
            "--storage",
            "garbage://user:secretpw@host/" + "x" * 200,
            "'garbage://user:***@host/xxxxxx",
        ),
    ],
)
def test_a_bad_store_url_is_one_line_naming_the_option_and_the_fix(
    tmp_path: Path, made: dict, capsys, option: str, value: str, message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a database")
    shutil.copy(made["mlflow"], tmp_path / "mlflow.db")
    args = ["run", made["space"], *idx_options(made["idx"]), option, value.format(tmp=tmp_path)]
    if option == "--storage":
        args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert sweep("--output", tmp_path / "out", *args) == 2
    error = one_error_line(capsys)
    assert message.format(tmp=tmp_path) in error
    assert len(error) < 300 and "secretpw" not in error
    assert not (tmp_path / "out" / "optuna.db").exists()


def test_a_new_store_in_a_folder_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        pytest.skip("this user (root) may write into any folder")
    with pytest.raises(SweepError, match=r"cannot write .*read-only; choose a writable folder"):
        open_storage(f"sqlite:///{folder / 'optuna.db'}")
    with pytest.raises(SweepError, match=r"^--tracking-uri .* cannot write"):
        Tracker(f"sqlite:///{folder / 'mlflow.db'}")


def migrate_to(url: str, revision: str) -> None:
    """An MLflow store whose schema is at `revision`: MLflow's first tables, then alembic."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base

    engine = sqlalchemy.create_engine(url)
    Base.metadata.create_all(engine)
    config = _get_alembic_config(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    engine.dispose()


def sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement)


def mlflow_db_upgrade(url: str) -> None:
    """What `mlflow db upgrade URL` does, without starting a process."""
    from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine_with_retry

    _upgrade_db(create_sqlalchemy_engine_with_retry(url))


@pytest.mark.parametrize(
    ("revision", "leftover", "found"),
    [
        (
            OLD_REVISION,
            "_alembic_tmp_metrics",
            f"(schema {OLD_REVISION}, not ",
        ),  # killed mid-migration
        ("head", "_alembic_tmp_params", "(leftover table _alembic_tmp_params: "),  # left by a race
        (OLD_REVISION, None, f"(schema {OLD_REVISION}, not "),  # an older MLflow's store
    ],
)
def test_a_half_migrated_mlflow_store_is_refused_with_the_commands_that_recover_it(
    tmp_path: Path, made: dict, revision: str, leftover: str | None, found: str
) -> None:
    path = tmp_path / "mlflow.db"
    url = f"sqlite:///{path}"
    if revision == "head":
        shutil.copy(made["mlflow"], path)
    else:
        migrate_to(url, revision)
    if leftover:
        sql(path, f"CREATE TABLE {leftover} (key VARCHAR(250))")
    before = path.read_bytes()
    with pytest.raises(SweepError) as info:
        Tracker(url)
    message = str(info.value)
    assert message.startswith(f"--tracking-uri {url} is a half-migrated MLflow store {found}")
    assert "\n" not in message and path.read_bytes() == before
    assert message.endswith(
        f"run: mlflow db upgrade {url}; if that fails, move {path} aside to start a new store"
    )
    if leftover:
        assert f"run: sqlite3 {path} 'DROP TABLE {leftover}', then" in message
        sql(path, f"DROP TABLE {leftover}")
    mlflow_db_upgrade(url)
    tracker = Tracker(url)
    tracker.check()
    assert tracker.experiment_id("recovered")


def test_a_store_made_by_a_newer_mlflow_says_so(tmp_path: Path, made: dict) -> None:
    path = tmp_path / "mlflow.db"
    shutil.copy(made["mlflow"], path)
    sql(path, "UPDATE alembic_version SET version_num = 'fromthefuture'")
    with pytest.raises(
        SweepError, match="schema fromthefuture, unknown to MLflow .*upgrade mlflow"
    ):
        Tracker(f"sqlite:///{path}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "API request to http://user:secretpw@127.0.0.1:1/api failed",
            "API request to http://user:***@127.0.0.1:1/api failed",
        ),
        (
            "'postgresql+psycopg://sweep:p@ss@db:5433/optuna'",
            "'postgresql+psycopg://sweep:***@db:5433/optuna'",
        ),
        (
            "a=https://:token123@host b=http://host:5000/x@y",
            "a=https://:***@host b=http://host:5000/x@y",
        ),
        (
            "sqlite:////tmp/x.db and http://127.0.0.1:5000",
            "sqlite:////tmp/x.db and http://127.0.0.1:5000",
        ),
        (
            "the password hunter2-added was refused; hunter2-added%21",
            "the password *** was refused; ***%21",
        ),
        ("quoted: hunter2%2Fadded", "quoted: ***"),
    ],
)
def test_redact_masks_every_url_password_and_every_added_secret(text: str, expected: str) -> None:
    add_secret("hunter2-added")
    add_secret("hunter2/added")
    add_secret("abc")  # too short to mask outside a URL
    assert redact(text) == expected
    assert redact("abc") == "abc"
    assert mask_url("postgresql://u:hunter2@h/db") == redact("postgresql://u:hunter2@h/db")


@pytest.mark.parametrize(
    "option",
    [
        ["--tracking-uri", "http://user:secretpw@127.0.0.1:{port}"],
        ["--storage", "postgresql://user:secretpw@127.0.0.1:{port}/x"],
    ],
)
def test_a_password_in_a_store_url_never_appears_in_any_output(
    tmp_path: Path, made: dict, option: list[str]
) -> None:
    flag, value = option[0], option[1].format(port=free_port())
    cli = [sys.executable, "-m", "sweep.cli", "--output", tmp_path / "out"]
    command = [*cli, "run", made["space"], *idx_options(made["idx"]), "--heartbeat", "0"]
    command += [flag, value]
    if flag == "--storage":
        shutil.copy(made["mlflow"], tmp_path / "mlflow.db")
        command += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "secretpw" not in done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and "user:***@127.0.0.1" in done.stderr


@pytest.mark.slow
def test_two_first_runs_at_once_share_fresh_stores_and_leave_them_sound(
    tmp_path: Path, made: dict, capsys
) -> None:
    out = tmp_path / "out"
    files = write_dataset(tmp_path / "idx", n_train=100, n_test=20)
    cli = [sys.executable, "-m", "sweep.cli", "--output", out, "run", made["space"]]
    command = [*cli, *idx_options(files), "--heartbeat", "0", "--in-process"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [
        subprocess.Popen(
            [str(c) for c in command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=900)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output

    study = optuna.load_study(study_name="tiny4", storage=f"sqlite:///{out / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["filters"] for t in complete) == ["[2, 4]", "[2, 8]", "[4, 8]", "[8, 8]"]

    capsys.readouterr()
    assert sweep("--output", out, "studies") == 0
    assert "tiny4" in capsys.readouterr().out
    assert (
        sweep("--output", out, "run", made["space"], *idx_options(files), "--heartbeat", "0") == 0
    )
    assert "4 of 4 trials done, 0 to run" in capsys.readouterr().out
    tables = {
        r[0] for r in sqlite3.connect(out / "mlflow.db").execute("SELECT name FROM sqlite_master")
    }
    assert not any(name.startswith("_alembic_tmp_") for name in tables)
