"""Money amounts on the wire: exact decimal strings, shared by the proxy's events and billing's."""

from __future__ import annotations

from decimal import Decimal

# Amounts are exact: 8 decimals, more (up to 12, what per-million prices of 6 decimals give) only
# when the exact value needs them.
AMOUNT_MIN_PLACES = 8


def amount_text(amount: Decimal) -> str:
    """An exact amount with 8 decimals, or as many more as its value needs ("0.00012300")."""
    exponent = amount.normalize().as_tuple().exponent
    places = max(AMOUNT_MIN_PLACES, -exponent if isinstance(exponent, int) else 0)
    return format(amount, f".{places}f")
