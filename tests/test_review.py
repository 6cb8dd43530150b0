"""The review report without a browser: bad input as one line, the run's facts, changed files, bounded pages."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from infer.contract import read_manifest
from infer.options import ReportOptions
from infer.review import write_report
from tests.conftest import REPO, assert_clean_failure, run_cli
from tests.review_run import SAMPLES, csv_rows, make_batch, page_data, report


@pytest.fixture(scope="module")
def small(artifacts, mnist_pngs, tmp_path_factory):
    """40 MNIST PNGs and 8 samples, classified by the tiny model."""
    return make_batch(tmp_path_factory.mktemp("small"), artifacts, mnist_pngs, 40, samples=8)


def test_help_documents_exit_codes():
    proc = run_cli("digits-report", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "0 report written" in text and "2 bad input" in text


@pytest.mark.slow
def test_a_csv_that_is_not_ours_is_one_line(small, tmp_path):
    proc = run_cli("digits-report", small.labels, "-o", tmp_path / "r.html")
    assert_clean_failure(proc, 2, str(small.labels), "not a digits-infer CSV")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.html").exists()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_clean_failure(run_cli("digits-report", empty, "-o", tmp_path / "r.html"), 2, "an empty file")
    assert_clean_failure(run_cli("digits-report", tmp_path / "none.csv", "-o", tmp_path / "r.html"), 2,
                         "none.csv", "no such file")


@pytest.mark.slow
def test_a_damaged_row_is_named_by_its_line(small, tmp_path):
    lines = small.predictions.read_text().splitlines()
    fields = next(csv.reader([lines[5]]))
    fields[2] = "high"
    damaged = tmp_path / "damaged.csv"
    damaged.write_text("\n".join([*lines[:5], ",".join(fields), *lines[6:]]) + "\n")
    assert_clean_failure(run_cli("digits-report", damaged, "-o", tmp_path / "r.html"), 2, "line 6",
                         "confidence 'high' is not a number")
    fields[2] = "1.5"
    damaged.write_text("\n".join([*lines[:5], ",".join(fields), *lines[6:]]) + "\n")
    assert_clean_failure(run_cli("digits-report", damaged, "-o", tmp_path / "r.html"), 2, "line 6", "outside [0, 1]")


@pytest.mark.slow
def test_labels_missing_or_malformed_are_one_line(small, tmp_path):
    out = tmp_path / "r.html"
    assert_clean_failure(report(small, out, "--labels", tmp_path / "none.csv"), 2, "none.csv", "labels file not found")
    bad = tmp_path / "bad_labels.csv"
    bad.write_text("file,label\n00000.png,seven\n")
    assert_clean_failure(report(small, out, "--labels", bad), 2, "line 2", "'seven' is not a digit")
    assert_clean_failure(report(small, out, "--labels", small.predictions), 2, "not a labels file")
    assert not out.exists()


@pytest.mark.slow
def test_never_overwrites_its_inputs(small):
    before = small.predictions.read_bytes()
    assert_clean_failure(run_cli("digits-report", small.predictions, "-o", small.predictions), 2,
                         "is the predictions CSV")
    assert_clean_failure(report(small, small.labels, "--labels", small.labels), 2, "is the labels file")
    assert small.predictions.read_bytes() == before


def test_without_a_job_sidecar_the_summary_says_what_is_unknown(small, tmp_path):
    sidecar = small.predictions.with_name(small.predictions.name + ".job.json")
    assert json.loads(sidecar.read_text())["finished"]  # digits-infer keeps one beside every CSV it finishes
    kept = sidecar.read_bytes()
    sidecar.unlink()  # as for a CSV copied elsewhere, or one written by an older digits-infer
    out = tmp_path / "r.html"
    try:
        proc = report(small, out, "--labels", small.labels)
    finally:
        sidecar.write_bytes(kept)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "no predictions.csv.job.json beside the CSV" in text and "the CSV alone" in text
    data = page_data(out)
    rows = csv_rows(small.predictions)
    assert len(data["review"]) == len(rows)  # 48 rows, fewer than the default 200 cards
    assert all(p["original"].startswith("data:image/png;base64,") and p["seen"].startswith("data:image/png;base64,")
               for p in data["pictures"].values())


@pytest.mark.slow
def test_job_sidecar_fills_the_summary_and_flags_a_changed_file(artifacts, mnist_pngs, tmp_path):
    small = make_batch(tmp_path, artifacts, mnist_pngs, 6, samples=2)  # its own files: their times are changed
    manifest = read_manifest(artifacts)
    started = datetime.now(timezone.utc) - timedelta(minutes=5)
    sidecar = small.predictions.with_name(small.predictions.name + ".job.json")
    rows = csv_rows(small.predictions)
    changed = rows[0]["path"]
    try:
        sidecar.write_text(json.dumps({
            "model_sha256": manifest.entry("onnx").sha256, "backend": "onnx", "started": started.isoformat(),
            "finished": (started + timedelta(seconds=3)).isoformat(), "images_per_second": 1234.5,
            "classified": len(rows), "failed": 0, "skipped": 7}))
        stamp = (started - timedelta(minutes=1)).timestamp()
        for row in rows:  # every file as it was before the run, but one touched after it started
            os.utime(row["path"], (stamp, stamp))
        os.utime(changed, None)
        out = tmp_path / "r.html"
        assert report(small, out).returncode == 0
    finally:
        sidecar.unlink()
    text = out.read_text()
    assert manifest.entry("onnx").sha256 in text and "1,234" in text and "<dd>7</dd>" in text
    assert str(sidecar) in text
    notes = {path: p["note"] for path, p in page_data(out)["pictures"].items()}
    assert notes[changed].startswith("changed since the run")
    assert [path for path, note in notes.items() if note] == [changed]


@pytest.mark.slow
def test_digits_infer_report_flag_writes_the_page_with_the_run_facts(artifacts, tmp_path):
    out, page = tmp_path / "p.csv", tmp_path / "page.html"
    proc = run_cli("digits-infer", SAMPLES, "--model-dir", artifacts, "-o", out, "--report", page)
    assert proc.returncode == 0, proc.stderr
    assert f"review page {page}" in proc.stderr
    text = page.read_text()
    assert read_manifest(artifacts).entry("onnx").sha256 in text and "this run" in text
    assert "<dd>2</dd>" in text  # skipped: labels.csv and make_samples.py
    assert len(page_data(page)["review"]) == 32
    assert_clean_failure(run_cli("digits-infer", SAMPLES, "--model-dir", artifacts, "-o", "-", "--report", page), 2,
                         "--report needs an output file")
    assert_clean_failure(run_cli("digits-infer", SAMPLES, "--model-dir", artifacts, "-o", out, "--report", out), 2,
                         "is the CSV's own path")


def many_rows(small, where: Path, count: int) -> Path:
    """A CSV of `count` real rows: the small run's rows repeated, each naming its own hard link of the real file."""
    rows = [r for r in csv_rows(small.predictions) if not r["error"]]
    folder = where / f"many_{count}"
    folder.mkdir()
    out = where / f"many_{count}.csv"
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(rows[0].keys())
        for i in range(count):
            row = dict(rows[i % len(rows)])
            link = folder / f"{i:06d}_{Path(row['path']).name}"
            os.link(row["path"], link)
            row["path"] = str(link)
            writer.writerow(row.values())
    return out


@pytest.mark.slow
def test_memory_and_page_size_stay_flat_as_the_csv_grows(small, tmp_path):
    sizes, peaks = {}, {}
    for count in (2_000, 40_000):
        predictions = many_rows(small, tmp_path, count)
        options = ReportOptions(output=tmp_path / f"r{count}.html", review=100, cell_images=8)
        tracemalloc.start()
        built = write_report(predictions, options)
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        sizes[count] = built.bytes
        assert built.rows == count and built.cards == 100 and built.pictures <= 100 + 10 * 8
    assert peaks[40_000] < 1.3 * peaks[2_000], peaks
    assert sizes[40_000] < 1.3 * sizes[2_000], sizes


def test_digits_report_needs_only_the_base_install(small, tmp_path):
    """No torch and no ONNX Runtime: the page is made with numpy, OpenCV, Pillow, typer and the stdlib."""
    code = (
        "import sys\n"
        "from infer.review_cli import app\n"
        f"sys.argv = ['digits-report', {str(small.predictions)!r}, '-o', {str(tmp_path / 'r.html')!r}]\n"
        "try:\n    app()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print('exit', code, 'torch' in sys.modules, 'onnxruntime' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.split() == ["exit", "0", "False", "False"], proc.stderr
    assert (tmp_path / "r.html").stat().st_size > 0
