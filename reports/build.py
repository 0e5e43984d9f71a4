"""Assemble the PDF: the sections in order (title, each study, the best encoder, the
classifier stage), written beside the target and renamed, so a failure leaves no half PDF."""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from reports.runs import load_classifier_data
from reports.sections import best_encoder_page, classifier_pages, study_pages
from reports.studies import StudyData, load_study_data, no_studies, study_names
from reports.title import measured_noise, title_page
from sweep.errors import SweepError

REPORT_NAME = "report.pdf"
CANONICAL_ORDER = ("filters", "kernel", "batch", "lr", "depth")
CLASSIFIER_SECTION = "classifier stage"
NOT_STUDIES = ("title", "best encoder", CLASSIFIER_SECTION)


@dataclass
class Report:
    """What was written: the file, its sections (study name -> page titles), the page count."""

    path: Path
    sections: dict[str, list[str]] = field(default_factory=dict)
    pages: int = 0
    seconds: float = 0.0


def build_report(
    storage_url: str, tracking_uri: str, output: str | Path, studies: list[str] | None = None
) -> Report:
    """Write the report for `studies` (default: every study in the storage) to `output`, a
    PDF file or a folder to write report.pdf in."""
    start = time.perf_counter()
    names = list(dict.fromkeys(studies or study_names(storage_url)))
    if not names:
        raise no_studies(storage_url)
    report = Report(path=report_path(output))
    with_classifier = not studies or "classifier" in studies
    with writing(report.path) as partial:
        _write_pdf(report, partial, storage_url, tracking_uri, names, with_classifier)
    report.seconds = time.perf_counter() - start
    return report


def report_path(output: str | Path) -> Path:
    """`output` itself, or report.pdf inside it when it is a folder (or ends in a slash)."""
    folder = str(output).endswith(("/", os.sep)) or Path(output).is_dir()
    return Path(output) / REPORT_NAME if folder else Path(output)


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, renamed to it when the body succeeds: a place that
    cannot be written fails in one line before any work, and a failure leaves no half PDF."""
    try:
        blocker = next(p for p in path.parents if p.exists())
        if not blocker.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a folder")
        handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(handle)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        yield Path(partial)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # mkstemp's 0600 would hide the report from others
        os.replace(partial, path)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    finally:
        Path(partial).unlink(missing_ok=True)


def _unwritable(path: Path, exc: OSError) -> SweepError:
    """The one-line error for a report path that cannot be written, and the fix."""
    return SweepError(
        f"cannot write the report to {path}: {exc.strerror or exc}; "
        "pass -o a writable FILE.pdf or folder"
    )


def _write_pdf(
    report: Report,
    partial: Path,
    storage_url: str,
    tracking_uri: str,
    names: list[str],
    with_classifier: bool,
) -> None:
    """Read every study, then write each section's pages to `partial`, noting their titles."""
    data = sorted(
        (load_study_data(storage_url, tracking_uri, name) for name in names), key=_section_order
    )
    with PdfPages(partial, metadata={"Title": "Autoencoder sweep report"}) as pdf:

        def add(section: str, fig: Figure) -> None:
            report.sections.setdefault(section, []).append(
                fig.texts[0].get_text() if fig.texts else ""
            )
            pdf.savefig(fig)
            plt.close(fig)
            report.pages += 1

        add("title", title_page(data, storage_url, tracking_uri))
        noise_by_study = measured_noise(data)
        for study in data:
            for fig in study_pages(study, noise_by_study):
                add(study.name, fig)
        add("best encoder", best_encoder_page(data))
        classifier = load_classifier_data(tracking_uri)
        if classifier is not None and with_classifier:
            for fig in classifier_pages(classifier):
                add(CLASSIFIER_SECTION, fig)


def _section_order(study: StudyData) -> tuple[int, int, str]:
    """One-factor studies first, in the order the sweeps run them; then the joint ones."""
    known = CANONICAL_ORDER.index(study.name) if study.name in CANONICAL_ORDER else 99
    return (0 if study.is_one_factor else 1, known, study.name)
