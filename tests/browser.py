"""A real browser for the report's tests: Playwright for Python driving Debian's Chromium (`.ci/run` installs it
when it is missing; Playwright's own browser download cannot work here). Every console message and page error is
kept, and every request the page makes is recorded, so a test can prove that nothing left the page."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"  # screenshots kept after the run (ignored by git)


@dataclass
class Opened:
    page: object  # playwright.sync_api.Page
    console: list[tuple[str, str]] = field(default_factory=list)  # (type, text), page errors as "pageerror"
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [m for m in self.console if m[0] in ("error", "pageerror")]


def launch(playwright):
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does it)"
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def open_report(browser, path: Path, offline: bool = False) -> Opened:
    """A fresh context (downloads allowed, optionally offline) with the report loaded and its script run."""
    context = browser.new_context(accept_downloads=True, offline=offline, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    opened = Opened(page)
    page.on("console", lambda message: opened.console.append((message.type, message.text)))
    page.on("pageerror", lambda error: opened.console.append(("pageerror", str(error))))
    page.on("request", lambda request: opened.requests.append(request.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return opened
