"""What every billing admin page shares: who is acting, stored JSON shown safely, latencies."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest

from groups.services.audit import staff_actor


def request_actor(request: HttpRequest) -> str:
    """The audit trail's actor for the staff member making `request`."""
    return staff_actor(request.user.get_username())


def json_shown(value: Any) -> str:
    """Stored JSON for a page, whatever it holds (escaped, so nothing in it can break the page)."""
    try:
        shown = json.dumps(value, indent=2, ensure_ascii=False, default=str)
        shown.encode()
    except UnicodeEncodeError:
        return json.dumps(value, indent=2, default=str)
    except (ValueError, RecursionError) as exc:
        return f"(cannot be shown: {exc})"
    return shown


def milliseconds(value: float) -> str:
    """A latency as people read it: `5,284 ms`, `0.4 ms` below one millisecond."""
    return f"{value:,.1f} ms" if value < 1 else f"{round(value):,} ms"
