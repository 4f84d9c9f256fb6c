"""Shared test configuration: Hypothesis profiles."""

from __future__ import annotations

import os

from hypothesis import settings

# CI runs must be reproducible and say how to replay a failure; no deadline
# anywhere, since shared CI machines and debuggers make timings meaningless.
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
