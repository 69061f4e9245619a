"""Money arithmetic. Amounts are floats in the order currency."""


def line_total(unit_price: float, quantity: int) -> float:
    """Price of one cart line."""
    return unit_price * quantity


def apply_discount(amount: float, percent: float) -> float:
    """Return `amount` reduced by `percent` percent, in whole cents."""
    discounted = amount * (100 - percent) / 100
    # BUG: int() truncates, and 19.99 * 100 is 1998.9999999999998 in floating
    # point, so apply_discount(19.99, 0) returns 19.98 - customers are
    # charged a cent less than they should be.
    # TODO: round half up to the cent (better: keep money in integer cents).
    return int(discounted * 100) / 100
