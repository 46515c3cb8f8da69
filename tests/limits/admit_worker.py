"""A separate process hammering limits_admit: `python -m tests.limits.admit_worker COUNT THRESHOLD`.

Prints how many of COUNT concurrent admissions of one REQUEST/MINUTE counter were admitted.
"""

from __future__ import annotations

import asyncio
import os
import sys

import django


async def _admit_all(count: int, threshold: int) -> int:
    from routing.admission import limits_admit
    from routing.redis_pool import close_all
    from tests.limits.support import T0, rate

    limits = [rate("REQUEST", "MINUTE", threshold)]
    calls = [
        limits_admit(limits=limits, reserve_tokens=1, slug="acme/llama", now=T0)
        for _ in range(count)
    ]
    try:
        return sum(admission.allowed for admission in await asyncio.gather(*calls))
    finally:
        await close_all()


def main() -> None:
    """Run COUNT concurrent admissions and print the number admitted."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    django.setup()
    print(asyncio.run(_admit_all(int(sys.argv[1]), int(sys.argv[2]))))


if __name__ == "__main__":
    main()
