"""Shared for the photo tests: one digit model for the session (loading it is most of a small test)."""

from __future__ import annotations

import pytest

from meter_vision.infer import DigitModel


@pytest.fixture(scope="session")
def digit_model() -> DigitModel:
    return DigitModel()
