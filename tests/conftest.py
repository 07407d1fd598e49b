"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="session")
def keras():
    """Keras, or a skip where it is not installed (the companion's core needs no framework)."""
    import companion  # noqa: F401  (quiets TensorFlow's start-up logging before it is imported)

    return pytest.importorskip("keras")


@pytest.fixture(scope="session")
def torch():
    """PyTorch, or a skip where it is not installed."""
    return pytest.importorskip("torch")
