"""Browser suite fixtures: headless Debian Chromium driven by Playwright, the admin on live_server,
a logged-in support user, screenshots under var/test-artifacts/browser/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_project.env import BASE_DIR
from tests.proxy.conftest import (  # noqa: F401 - fixtures reused from the proxy suite
    gateway,
    upstream,
)
from tests.tooling import suite_requires

CHROMIUM = os.environ.get("GATEWAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = BASE_DIR / "var" / "test-artifacts" / "browser"
MISSING = (
    f"Chromium is missing ({CHROMIUM}): `make test` installs it where apt-get and root or sudo are "
    "available; otherwise install Debian's chromium package or set GATEWAY_CHROMIUM to a Chromium "
    "binary."
)
STAFF = ("support", "support-password-123")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without Chromium the whole suite is one failure saying what to install."""
    present = Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)
    suite_requires(
        items, where=Path(__file__).parent, name="chromium", missing=None if present else MISSING
    )


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for this package (the system browser: nothing is downloaded).

    Package scope: Playwright's sync API runs an event loop in this thread until it stops, and
    the rest of the suite needs a thread with no running loop (asyncio.run)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the tests' own ORM calls are
    # still plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Shots:
    """Numbered screenshots of one test, kept as artifacts."""

    def __init__(self, page: Any, name: str) -> None:
        self.page, self.count = page, 0
        self.folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()

    def __call__(self, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def staff_user(transactional_db: None) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_superuser(STAFF[0], "support@example.com", STAFF[1])


@pytest.fixture
def page(browser: Any, live_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context on the live admin."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1400, "height": 1000}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shots(page: Any, request: pytest.FixtureRequest) -> Shots:
    return Shots(page, request.node.name)


def log_in(page: Any, username: str = STAFF[0], password: str = STAFF[1]) -> None:
    """Through the admin's login form."""
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


@pytest.fixture
def staff_page(page: Any, staff_user: Any, shots: Shots) -> Any:
    """`page`, logged in as a superuser through the login form."""
    log_in(page)
    page.wait_for_url("**/admin/")
    shots("logged-in")
    return page


def choose(page: Any, field: str, term: str, value: str) -> None:
    """Pick `value` in the autocomplete box of `#id_<field>`: type `term`, click its result."""
    page.click(f"#id_{field} + .select2")
    page.fill(".select2-container--open .select2-search__field", term)
    page.locator(".select2-results__option", has_text=term).first.click()
    assert page.input_value(f"#id_{field}") == value
