"""A tiny payments service (sample host tree for the wopfs demo)."""

from .pay import apply_discount, line_total
from .checkout import Cart

__all__ = ["Cart", "apply_discount", "line_total"]
