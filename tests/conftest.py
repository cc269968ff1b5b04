"""Shared fixtures: the array namespaces every core test runs on."""

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _namespaces():
    import array_api_compat

    out = [pytest.param(array_api_compat.array_namespace(np.empty(0)), id="numpy")]
    try:
        import array_api_strict

        out.append(pytest.param(array_api_strict, id="array_api_strict"))
    except ImportError:  # pragma: no cover
        pass
    return out


@pytest.fixture(params=_namespaces())
def xp(request):
    """An array namespace: NumPy (through array_api_compat) or array_api_strict."""
    return request.param


@pytest.fixture
def to_xp():
    """Convert a NumPy array to a given namespace: ``to_xp(a, xp)``."""

    def convert(a, xp, dtype=None):
        a = np.asarray(a)
        if dtype is None:
            return xp.asarray(a)
        return xp.asarray(a, dtype=dtype)

    return convert


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny torch problems run several times slower with competing threads on small CI machines."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
