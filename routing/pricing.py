"""Endpoint prices: their wire shape and checks, and exact costs (Decimal, never floats).

A price is per million tokens with at most 6 decimals, so one token costs exactly `price`
micro-units (1 USD = 1000000 micro-USD) and a request's exact cost has at most 12 decimals.
SPEND counters hold whole micro-units: a reservation and a settled cost are rounded up, so a
counter never shows less than was spent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal
from typing import Any

from gateway_project.kernel.errors import ValidationFailed
from gateway_project.kernel.money import amount_text
from routing.usage import Usage

PRICE_FIELDS = ("input_per_million", "output_per_million", "cached_input_per_million")
PRICING_KEYS = frozenset({"currency", *PRICE_FIELDS})
PRICE = re.compile(r"^[0-9]{1,7}(\.[0-9]{1,6})?$")
MAX_PRICE = Decimal(1_000_000)
MILLION = Decimal(1_000_000)
# Enough digits that no product or quotient here is ever rounded (tokens < 2**63, prices < 1e13).
EXACT = Context(prec=80)
# Active ISO 4217 codes (funds and precious metals excluded).
CURRENCIES = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG""".split()
)


@dataclass(frozen=True, slots=True)
class Pricing:
    """An endpoint's prices per million tokens, in one currency."""

    currency: str
    input: Decimal
    output: Decimal
    cached_input: Decimal


def _invalid(message: str, param: str) -> ValidationFailed:
    return ValidationFailed(message, code="invalid_pricing", param=param)


def pricing_clean(raw: Any, *, param: str = "pricing") -> dict[str, str] | None:
    """The stored form of a wire `pricing` (None: unpriced); cached input defaults to input."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _invalid(f"`{param}` must be an object or null.", param)
    unknown = sorted(set(raw) - PRICING_KEYS)
    if unknown:
        raise ValidationFailed(
            f"`{param}`: unknown field {unknown[0]!r}.",
            code="unknown_field",
            param=f"{param}.{unknown[0]}",
        )
    currency = raw.get("currency")
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise _invalid(
            f"`{param}.currency` must be an ISO 4217 code such as USD.", f"{param}.currency"
        )
    cleaned = {"currency": currency}
    for name in PRICE_FIELDS:
        value = raw.get(name)
        if value is None and name == "cached_input_per_million":
            value = cleaned["input_per_million"]
        cleaned[name] = _price_check(value, param=f"{param}.{name}")
    return cleaned


def _price_check(value: Any, *, param: str) -> str:
    if not isinstance(value, str) or not PRICE.match(value) or Decimal(value) > MAX_PRICE:
        raise _invalid(
            f"`{param}` must be a decimal string from 0 to {MAX_PRICE} with at most 6 decimals, "
            'e.g. "0.50".',
            param,
        )
    return value


def pricing_from(stored: Any) -> Pricing | None:
    """The Pricing of a stored (cleaned) `pricing`, None when unpriced."""
    if not stored:
        return None
    return Pricing(
        currency=stored["currency"],
        input=Decimal(stored["input_per_million"]),
        output=Decimal(stored["output_per_million"]),
        cached_input=Decimal(stored["cached_input_per_million"]),
    )


def cost_micro(pricing: Pricing, usage: Usage) -> Decimal:
    """The exact cost of `usage` in micro-units: cached input tokens at the cached price."""
    cached = min(max(usage.cached_input_tokens, 0), max(usage.input_tokens, 0))
    fresh = max(usage.input_tokens, 0) - cached
    output = max(usage.output_tokens, 0)
    parts = (
        EXACT.multiply(fresh, pricing.input),
        EXACT.multiply(cached, pricing.cached_input),
        EXACT.multiply(output, pricing.output),
    )
    return EXACT.add(EXACT.add(parts[0], parts[1]), parts[2])


def micro_ceil(amount: Decimal) -> int:
    """Whole micro-units, rounded up (what a SPEND counter is charged)."""
    return int(amount.to_integral_value(rounding=ROUND_CEILING))


def reservation_micro(pricing: Pricing, *, prompt_tokens: int, completion_tokens: int) -> int:
    """An upper bound of a request's cost in whole micro-units: its prompt at the dearer input
    price (fresh or cached), its completion cap at the output price."""
    dearer = max(pricing.input, pricing.cached_input)
    bound = EXACT.add(
        EXACT.multiply(max(prompt_tokens, 0), dearer),
        EXACT.multiply(max(completion_tokens, 0), pricing.output),
    )
    return micro_ceil(bound)


def cost_wire(pricing: Pricing, usage: Usage) -> dict[str, str]:
    """An event's `cost`: currency and exact amount as a decimal string."""
    amount = EXACT.divide(cost_micro(pricing, usage), MILLION)
    return {"currency": pricing.currency, "amount": amount_text(amount)}
