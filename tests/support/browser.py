"""Headless Chromium for the website's tests: Debian's ``/usr/bin/chromium`` driven by
Playwright, recording every console error, uncaught exception and Content-Security-Policy
violation a page causes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
MISSING = (
    f"no Chromium at {CHROMIUM}: install Debian's chromium package (make setup does on "
    "Linux x86_64, as CI does) or set CHROMIUM to a Chromium binary"
)
# No sandbox (CI runs as root); no GPU; and nothing that calls Google's servers, which this
# closed network refuses.
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PREDICT = "/predict"
_FAILED_LOAD = "Failed to load resource: the server responded with a status of"
# Installed in every page before its own scripts: CSP violations as the page sees them.
_RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(FLAGS))
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Problems:
    """What went wrong in a page that a user would not see but a developer must."""

    console: list[str] = field(default_factory=list)
    uncaught: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # Chromium logs every 4xx/5xx answer as a console error; from /predict they are the
    # API's refusals, which the page shows (and the tests check) in plain words.
    api_errors: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return self.console + self.uncaught + self.violations


def watch(page: Page) -> Problems:
    problems = Problems()

    def on_console(message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        refusal = message.text.startswith(_FAILED_LOAD) and urlsplit(
            message.location.get("url", "")
        ).path.endswith(PREDICT)
        (problems.api_errors if refusal else problems.console).append(message.text)

    def on_error(error: Error) -> None:
        problems.uncaught.append(str(error))

    page.on("console", on_console)
    page.on("pageerror", on_error)
    page.add_init_script(_RECORD_VIOLATIONS)
    return problems


def collect_violations(page: Page, problems: Problems) -> Problems:
    """Moves the violations the page recorded into ``problems``; returns ``problems``."""
    problems.violations.extend(page.evaluate("(window.__cspViolations || []).splice(0)"))
    return problems
