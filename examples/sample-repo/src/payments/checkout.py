"""A shopping cart that totals its lines and applies a discount code."""

from dataclasses import dataclass, field

from .pay import apply_discount, line_total

DISCOUNT_CODES = {"WELCOME10": 10, "SPRING15": 15}


@dataclass
class Cart:
    lines: list = field(default_factory=list)
    code: str = ""

    def add(self, unit_price: float, quantity: int = 1) -> None:
        self.lines.append((unit_price, quantity))

    def total(self) -> float:
        subtotal = sum(line_total(p, q) for p, q in self.lines)
        percent = DISCOUNT_CODES.get(self.code, 0)
        return apply_discount(subtotal, percent)
