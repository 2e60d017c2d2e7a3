"""Constants shared by the reliability fixtures and tests (imported by basename)."""

from __future__ import annotations

CHAIN = ("fast", "balanced", "frontier")

# The SASL users of the module-scoped SASL broker: test credentials, planted to be searched
# for in logs, metrics and dead letters.
SASL_USERS = {"router": "sasl-PLANTED-7f3c9e21", "reader": "reader-s3cret"}
