"""The review report in a real browser (Chromium through Playwright), made from real digits-infer runs on real
files. A screenshot of each page is kept in test-artifacts/."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser import ARTIFACTS, launch, open_report
from tests.conftest import BIN
from tests.review_run import csv_rows, labelled_rows, make_batch, report

pytestmark = pytest.mark.slow
REVIEW = 40


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def labelled(artifacts, mnist_pngs, tmp_path_factory):
    """300 MNIST PNGs and the 32 samples, classified by the tiny model, and the report made with their labels."""
    where = tmp_path_factory.mktemp("review")
    batch = make_batch(where, artifacts, mnist_pngs, 300)
    page = where / "report.html"
    proc = report(batch, page, "--labels", batch.labels, "--review", str(REVIEW))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return batch, page


def cells_from_csv(batch) -> dict[tuple[str, str], list[tuple[float, int, str]]]:
    """(label, prediction) → [(confidence, CSV index, path)] for the classified labelled rows."""
    cells: dict[tuple[str, str], list] = {}
    for index, row, label in labelled_rows(batch):
        if not row["error"]:
            cells.setdefault((label, row["prediction"]), []).append((float(row["confidence"]), index, row["path"]))
    return cells


def card_paths(page, where: str) -> list[str]:
    return page.locator(f"{where} .card").evaluate_all("cards => cards.map(c => c.dataset.path)")


def test_report_opens_clean_with_its_cards_and_the_csv_accuracy(labelled, browser):
    batch, path = labelled
    opened = open_report(browser, path)
    page = opened.page
    assert opened.errors == []
    rows = csv_rows(batch.predictions)
    classified = sorted((float(r["confidence"]), i, r["path"]) for i, r in enumerate(rows) if not r["error"])
    assert card_paths(page, "#review-cards") == [p for _, _, p in classified[:REVIEW]]  # lowest first
    labelled_rows_ = labelled_rows(batch)
    correct = sum(row["prediction"] == label for _, row, label in labelled_rows_)
    assert page.locator("#accuracy").inner_text() == f"{correct / len(labelled_rows_):.2%}"
    assert page.locator("#correct").inner_text() == f"{correct:,}"
    assert page.locator("#labelled").inner_text() == f"{len(labelled_rows_):,}"
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1600})  # summary, charts, matrix and the first cards
    page.screenshot(path=str(ARTIFACTS / "report.png"))
    page.screenshot(path=str(ARTIFACTS / "report-full.png"), full_page=True)


def test_filters_by_digit_and_confidence(labelled, browser):
    batch, path = labelled
    page = open_report(browser, path).page
    review = sorted((float(r["confidence"]), i, r) for i, r in enumerate(csv_rows(batch.predictions))
                    if not r["error"])[:REVIEW]
    digit = max("0123456789", key=lambda d: sum(r["prediction"] == d for _, _, r in review))
    page.select_option("#filter-digit", digit)
    assert card_paths(page, "#review-cards") == [r["path"] for _, _, r in review if r["prediction"] == digit]
    page.select_option("#filter-digit", "")
    limit = review[len(review) // 2][0]
    page.locator("#filter-confidence").evaluate(
        f"(slider) => {{ slider.value = '{limit}'; slider.dispatchEvent(new Event('input')); }}")
    shown = card_paths(page, "#review-cards")
    assert shown == [r["path"] for c, _, r in review if c <= float(page.locator("#filter-confidence").input_value())]
    assert 0 < len(shown) < REVIEW


def test_clicking_a_confusion_cell_shows_exactly_its_images(labelled, browser):
    batch, path = labelled
    opened = open_report(browser, path)
    page = opened.page
    cells = cells_from_csv(batch)
    wrong = max((k for k in cells if k[0] != k[1]), key=lambda k: len(cells[k]))
    page.click(f'table.matrix button[data-label="{wrong[0]}"][data-prediction="{wrong[1]}"]')
    assert sorted(card_paths(page, "#cell-cards")) == sorted(p for _, _, p in cells[wrong])
    assert page.locator("#cell-title").inner_text().endswith(f"{len(cells[wrong])} image" +
                                                             ("s" if len(cells[wrong]) != 1 else ""))
    # A cell larger than the page keeps (24 by default): exactly its 24 lowest-confidence images.
    big = max(cells, key=lambda k: len(cells[k]))
    assert len(cells[big]) > 24
    page.click(f'table.matrix button[data-label="{big[0]}"][data-prediction="{big[1]}"]')
    assert card_paths(page, "#cell-cards") == [p for _, _, p in sorted(cells[big])[:24]]
    assert "24 lowest-confidence" in page.locator("#cell-note").inner_text()
    assert opened.errors == []


def test_a_typed_correction_downloads_as_corrections_csv(labelled, browser, tmp_path):
    _, path = labelled
    opened = open_report(browser, path)
    page = opened.page
    first = page.locator("#review-cards .card").first
    target = first.get_attribute("data-path")
    first.locator("input").fill("7")
    page.locator("#review-cards .card").nth(1).locator("input").fill("x")  # not a digit: not a correction
    assert page.locator("#correction-count").inner_text() == "1"
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "corrections.csv"
    saved = tmp_path / "corrections.csv"
    download.value.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["path", "label"], [target, "7"]]
    assert opened.errors == []


def no_network_prefix() -> list[str]:
    """A command prefix that runs a process in a network namespace of its own: no interface but loopback."""
    assert shutil.which("unshare"), "unshare (util-linux) is needed to build a report with no network"
    return ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net"]


def test_report_built_and_shown_with_no_network_at_all(labelled, browser, tmp_path):
    batch, _ = labelled
    probe = subprocess.run([*no_network_prefix(), str(BIN / "python"), "-c",
                            "import socket; socket.create_connection(('192.0.2.1', 80), timeout=3)"],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower(), probe.stderr  # truly no network
    page_path = tmp_path / "offline.html"
    built = subprocess.run([*no_network_prefix(), str(BIN / "digits-report"), str(batch.predictions), "--labels",
                            str(batch.labels), "-o", str(page_path)], capture_output=True, text=True,
                           env={**os.environ})
    assert built.returncode == 0, built.stderr
    opened = open_report(browser, page_path, offline=True)
    page = opened.page
    page.click("table.matrix button")  # a cell's pictures, too, come from inside the page
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("img").count() > 0
    assert opened.requests and all(url.split(":", 1)[0] in ("file", "data", "blob") for url in opened.requests), \
        [url[:80] for url in opened.requests if not url.startswith(("file:", "data:"))]
    assert opened.errors == []


def test_report_with_a_failed_file_and_a_vanished_image(artifacts, mnist_pngs, browser, tmp_path):
    batch = make_batch(tmp_path, artifacts, mnist_pngs, 8, samples=4, extra={"broken.png": b"not an image at all"})
    rows = csv_rows(batch.predictions)
    failed = [r for r in rows if r["error"]]
    assert [Path(r["path"]).name for r in failed] == ["broken.png"]
    gone = next(r["path"] for r in rows if not r["error"])
    os.remove(gone)
    page_path = tmp_path / "report.html"
    proc = report(batch, page_path, "--labels", batch.labels)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    opened = open_report(browser, page_path)
    page = opened.page
    listed = page.locator("#failed-files tbody tr")
    assert listed.count() == 1
    assert listed.locator("td").nth(0).inner_text() == failed[0]["path"]
    assert listed.locator("td").nth(1).inner_text() == failed[0]["error"]
    card = page.locator(f'#review-cards .card[data-path="{gone}"]')
    assert card.count() == 1
    assert "image gone" in card.locator(".note").inner_text()
    assert card.locator("img").count() == 0 and card.locator(".missing").count() == 2
    assert page.locator("#review-cards .card").count() == len(rows) - 1  # every classified row (fewer than 200)
    others = page.locator("#review-cards .card img")
    assert others.count() == 2 * (len(rows) - 2)
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert opened.errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-failed-and-gone.png"), full_page=True)
