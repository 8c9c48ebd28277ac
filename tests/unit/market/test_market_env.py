"""The light copy of the worker environment equals the learning layer's deterministic_env()."""

from fedchain.learning.units import deterministic_env
from fedchain.market.env import WORKER_ENV


def test_worker_env_matches_deterministic_env() -> None:
    assert deterministic_env() == WORKER_ENV
