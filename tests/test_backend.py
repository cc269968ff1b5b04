"""The array backend: namespaces, devices, one random source for all backends, DLPack."""

import importlib.util

import array_api_strict
import numpy as np
import pytest

from kalmandiff._backend import (
    RandomSource,
    check_device,
    check_random_state,
    from_torch,
    get_namespace,
    namespace_for_device,
    spawn_streams,
    stream_seed,
    to_numpy,
    to_torch,
)

torch = pytest.importorskip("torch")
HAS_GPU = importlib.util.find_spec("cupy") is not None and torch.cuda.is_available()


def test_namespace_follows_the_data():
    assert get_namespace(np.zeros(2)).__name__.endswith("numpy")
    assert get_namespace(array_api_strict.zeros(2)) is array_api_strict
    assert "torch" in get_namespace(torch.zeros(2)).__name__
    # Python scalars do not vote.
    assert get_namespace(np.zeros(2), 1.5, None).__name__.endswith("numpy")


def test_mixing_namespaces_is_an_error():
    with pytest.raises(TypeError):
        get_namespace(np.zeros(2), array_api_strict.zeros(2))


@pytest.mark.parametrize("bad", ["gpu", "tpu", 3, "cuda-ish"])
def test_unknown_device_is_rejected(bad):
    with pytest.raises(ValueError, match="device"):
        check_device(bad)


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_cuda_without_cupy_or_gpu_is_a_clear_runtime_error():
    with pytest.raises(RuntimeError, match="CuPy|GPU|CUDA"):
        namespace_for_device("cuda")


def test_cpu_device_is_numpy():
    xp = namespace_for_device("cpu")
    assert isinstance(xp.zeros(3), np.ndarray)


@pytest.mark.parametrize("bad", ["seed", 1.5, [1, 2]])
def test_random_state_rejects_other_types(bad):
    with pytest.raises(ValueError, match="random_state"):
        check_random_state(bad, "solver")


def test_generator_is_shared_not_copied():
    g = np.random.default_rng(0)
    assert check_random_state(g, "solver") is g


def test_same_seed_same_draws_across_numpy_like_namespaces():
    a = RandomSource(7, stream="solver").normal((3, 4), like=np.zeros(1))
    b = RandomSource(7, stream="solver").normal(
        (3, 4), like=array_api_strict.zeros(1, dtype=array_api_strict.float64)
    )
    expected = np.random.default_rng(stream_seed(7, "solver")).standard_normal((3, 4))
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(to_numpy(b), expected)


def test_draws_take_dtype_of_like():
    out = RandomSource(0, stream="solver").normal((5,), like=np.zeros(1, dtype=np.float32))
    assert out.dtype == np.float32


def test_torch_draws_are_reproducible_and_seeded_from_numpy():
    t1 = RandomSource(3, stream="solver").normal((4,), like=torch.zeros(1, dtype=torch.float64))
    t2 = RandomSource(3, stream="solver").normal((4,), like=torch.zeros(1, dtype=torch.float64))
    t3 = RandomSource(4, stream="solver").normal((4,), like=torch.zeros(1, dtype=torch.float64))
    assert torch.equal(t1, t2) and not torch.equal(t1, t3)


def test_state_round_trip_reproduces_later_draws():
    src = RandomSource(11, stream="solver")
    src.normal((2,), like=np.zeros(1))
    src.normal((2,), like=torch.zeros(1))
    state = src.get_state()
    a = (src.normal((3,), like=np.zeros(1)), src.normal((3,), like=torch.zeros(1)))
    src.set_state(state)
    b = (src.normal((3,), like=np.zeros(1)), src.normal((3,), like=torch.zeros(1)))
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_numpy_to_torch_is_zero_copy():
    x = np.arange(12.0).reshape(3, 4)
    t = to_torch(x)
    assert t.data_ptr() == x.ctypes.data
    t[0, 0] = -1.0  # shared memory: the NumPy array sees the write
    assert x[0, 0] == -1.0


def test_torch_to_numpy_is_zero_copy():
    t = torch.arange(6.0).reshape(2, 3)
    x = from_torch(t)
    assert isinstance(x, np.ndarray) and x.ctypes.data == t.data_ptr()


def test_non_contiguous_and_negative_strides_are_copied_correctly():
    x = np.arange(20.0).reshape(4, 5)[::-1, ::2]
    np.testing.assert_array_equal(to_torch(x).numpy(), x)
    t = torch.arange(20.0).reshape(4, 5).T
    np.testing.assert_array_equal(from_torch(t), t.numpy())


def test_tensors_that_require_grad_or_are_conjugated_come_back():
    t = torch.ones(3, requires_grad=True) * 2
    np.testing.assert_array_equal(from_torch(t), np.full(3, 2.0))
    c = torch.tensor([1 + 2j, 3 - 1j]).conj()
    np.testing.assert_array_equal(from_torch(c), np.array([1 - 2j, 3 + 1j]))


def test_from_torch_into_strict_namespace():
    out = from_torch(torch.arange(3.0), like=array_api_strict.zeros(1))
    assert get_namespace(out) is array_api_strict
    np.testing.assert_array_equal(to_numpy(out), [0.0, 1.0, 2.0])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA device")
def test_cupy_torch_round_trip_is_zero_copy():  # pragma: no cover - GPU only
    import cupy

    x = cupy.arange(8.0)
    t = to_torch(x)
    assert t.is_cuda and t.data_ptr() == x.data.ptr
    back = from_torch(t)
    assert back.data.ptr == x.data.ptr


def test_streams_of_one_seed_are_independent_and_named():
    """Equal integer seeds in two consumers give uncorrelated draws; a stream is reproducible."""
    n = 20_000
    draws = {name: check_random_state(5, name).standard_normal(n) for name in ("truth", "noise", "solver")}
    draws["plain"] = np.random.default_rng(5).standard_normal(n)
    names = sorted(draws)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            # |corr| of independent N(0,1) samples is ~ 1/sqrt(n) = 0.007
            assert abs(np.corrcoef(draws[a], draws[b])[0, 1]) < 0.04, (a, b)
    np.testing.assert_array_equal(draws["solver"], check_random_state(5, "solver").standard_normal(n))
    np.testing.assert_array_equal(
        RandomSource(5, stream="solver").normal((n,), like=np.zeros(1)), draws["solver"]
    )


def test_an_integer_seed_needs_a_stream_name():
    with pytest.raises(ValueError, match="stream"):
        RandomSource(5)
    with pytest.raises(ValueError, match="stream"):
        stream_seed(5, "")


def test_spawn_streams_from_a_generator_gives_independent_children():
    parent = np.random.default_rng(0)
    a, b = spawn_streams(parent, "truth", "noise")
    assert a is not parent and b is not parent
    assert abs(np.corrcoef(a.standard_normal(10_000), b.standard_normal(10_000))[0, 1]) < 0.05
    ints = spawn_streams(3, "truth", "noise")
    np.testing.assert_array_equal(
        ints[0].standard_normal(4), check_random_state(3, "truth").standard_normal(4)
    )


def test_only_the_backend_imports_array_api_compat():
    """Layering (issue 14, item 6): array-library plumbing lives in kalmandiff._backend alone."""
    import ast
    from pathlib import Path

    import kalmandiff

    root = Path(kalmandiff.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "_backend.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("array_api_compat", "cupy") for n in names):
                offenders.append(str(path.relative_to(root)))
    assert not offenders, offenders


def test_forward_model_modules_import_no_priors():
    """Layering (issue 14, item 6): only the fixture factories beside the problem registry attach priors."""
    import ast
    from pathlib import Path

    import kalmandiff

    folder = Path(kalmandiff.__file__).parent / "problems"
    for path in folder.glob("*.py"):
        if path.name == "_fixtures.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "priors" not in (node.module or ""), f"{path.name} imports {node.module}"
