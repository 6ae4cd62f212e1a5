"""ISO 4217 currencies: which codes the service takes, and each one's minor unit.

The codes and exponents come from the ``iso4217`` package (ISO's own table), not a
hand-written list: a list that only names the exceptions to "two decimals" gets every
currency it forgets 100 times wrong (CLF and UYW have 4, UYI has 0). Upgrade the
package when ISO publishes an amendment.
"""

from __future__ import annotations

from typing import Annotated

from iso4217 import Currency
from pydantic import AfterValidator, Field


def minor_unit_exponent(code: str) -> int:
    """Decimal places of ``code``'s minor unit (JPY 0, USD 2, BHD 3, CLF 4).

    Raises ``ValueError`` saying what to send instead when the code is not an ISO 4217
    currency, or is one without a minor unit (gold XAU, the test code XTS, XXX).
    """
    try:
        exponent = Currency(code).exponent
    except ValueError:
        raise ValueError(
            f"{code!r} is not an ISO 4217 currency code: send the 3 capital letters ISO 4217 "
            "assigns (e.g. USD, VND)"
        ) from None
    if exponent is None:
        raise ValueError(f"{code} has no minor unit in ISO 4217: it is not a payment currency")
    return int(exponent)


def check_currency(code: str) -> str:
    """``code`` if it is an ISO 4217 payment currency (pydantic validator), else ``ValueError``."""
    minor_unit_exponent(code)
    return code


#: An ISO 4217 payment currency: three capital letters that ISO assigns, with a minor unit.
CurrencyCode = Annotated[
    str,
    Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code"),
    AfterValidator(check_currency),
]
