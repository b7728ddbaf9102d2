"""Pulumi mocks for the infra program: one rendering per target, tier and size.

Every combination is rendered once per session (``renderings``) by running
``backbone_infra.program.run`` under fresh ``pulumi.runtime`` mocks; tests take the
rendering they need by id (``docker-institutional-ha`` ...). The total time
of those renderings is kept for the 30-second budget test.
"""

from __future__ import annotations

import time

import pytest
from pulumi_rendering import COMBOS, Rendering, Renderings, combo_id, config_for, render


@pytest.fixture(scope="session")
def renderings() -> Renderings:
    started = time.perf_counter()
    by_id = {combo_id(c): render(config_for(*c)) for c in COMBOS}
    return Renderings(by_id, time.perf_counter() - started)


@pytest.fixture
def rendering(request: pytest.FixtureRequest, renderings: Renderings) -> Rendering:
    """The rendering named by the test's ``combo`` parameter."""
    return renderings.by_id[request.param]
