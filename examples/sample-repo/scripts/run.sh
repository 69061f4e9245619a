#!/usr/bin/env bash
# Print the total of a sample cart (expected: 10.63).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=src python3 -c '
from payments import Cart
cart = Cart(code="SPRING15")
cart.add(12.50)
print("total:", cart.total())
'
