"""bench-admin's verdict on a page: shown, or failed."""

from __future__ import annotations

from bench.admin import page_failed


def test_a_page_fails_on_an_error_or_an_unexpected_redirect() -> None:
    assert not page_failed("groups list", {"status": 200})
    assert page_failed("groups list", {"status": 500})
    # The admin's answer to a page number past the last: a redirect to the list with ?e=1.
    assert page_failed("groups list, page 500", {"status": 302})
    assert not page_failed("customer search", {"status": 302})
    assert page_failed("customer search", {"status": 404})
