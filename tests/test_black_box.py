"""BlackBox: per-sample black boxes mapped over particles by executors, Dask included."""

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import kalmandiff as kd

A = np.arange(12.0).reshape(3, 4) / 10


def affine(x):
    return A @ x + 1.0


def threads_seen(x):
    from threadpoolctl import threadpool_info

    counts = [lib["num_threads"] for lib in threadpool_info()]
    return np.full(2, max(counts) if counts else 1.0)


X = np.random.default_rng(0).standard_normal((11, 4))
EXPECTED = X @ A.T + 1.0


@pytest.mark.parametrize("chunksize", [1, 3, 20])
@pytest.mark.parametrize("pool", [None, "threads", "processes"])
def test_order_is_kept_whatever_the_executor(pool, chunksize):
    if pool is None:
        box = kd.problems.BlackBox(affine, (4,), (3,), chunksize=chunksize)
        np.testing.assert_allclose(box(X), EXPECTED)
        return
    Pool = ThreadPoolExecutor if pool == "threads" else ProcessPoolExecutor
    with Pool(max_workers=2) as ex:
        box = kd.problems.BlackBox(affine, (4,), (3,), executor=ex, chunksize=chunksize)
        np.testing.assert_allclose(box(X), EXPECTED)
        assert box.last_failures == {}


def test_vectorized_chunks():
    box = kd.problems.BlackBox(lambda Xc: Xc @ A.T + 1.0, (4,), (3,), chunksize=4, vectorized=True)
    np.testing.assert_allclose(box(X), EXPECTED)


def test_result_comes_back_in_the_input_namespace():
    import array_api_strict as xps

    box = kd.problems.BlackBox(affine, (4,), (3,))
    out = box(xps.asarray(X))
    assert kd._backend.get_namespace(out) is xps
    np.testing.assert_allclose(kd._backend.to_numpy(out), EXPECTED)


def test_blas_threads_are_limited_inside_workers():
    with ThreadPoolExecutor(max_workers=1) as ex:
        box = kd.problems.BlackBox(threads_seen, (4,), (2,), executor=ex, blas_threads=1)
        assert np.all(box(X[:2]) == 1)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(fn=3), "callable"),
        (dict(chunksize=0), "chunksize"),
        (dict(timeout=1.0), "executor"),
        (dict(timeout=-1.0, executor=ThreadPoolExecutor(1)), "timeout"),
        (dict(executor=object()), "submit"),
    ],
)
def test_bad_arguments(bad, match):
    kw = dict(fn=affine, x_shape=(4,), y_shape=(3,))
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        kd.problems.BlackBox(**kw)


@pytest.mark.slow
def test_dask_local_cluster_gives_the_serial_particles():
    distributed = pytest.importorskip("distributed")
    inst = kd.problems.make("navier-stokes", size="small", dtype="float64")

    def make():
        return kd.EnKGSolver(inst.prior, n_particles=8, n_steps=8, n_updates=1, random_state=0, verbose=False)

    serial = make().fit(inst.y, inst.problem)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cl,
        distributed.Client(cl) as client,
    ):
        box = kd.problems.BlackBox(
            inst.problem,
            inst.problem.x_shape,
            inst.problem.y_shape,
            noise_std=inst.problem.noise_std,
            executor=client.get_executor(),
            chunksize=4,
            vectorized=True,
        )
        parallel = make().fit(inst.y, box)
    np.testing.assert_allclose(parallel.particles_, serial.particles_, rtol=1e-10, atol=1e-10)


def test_a_wrapped_problem_keeps_its_declared_geometry():
    """Wrapping a problem in BlackBox must not change what localization="auto" does."""
    inst = kd.problems.make("navier-stokes", size="small")
    box = kd.problems.BlackBox(inst.problem, inst.problem.x_shape, inst.problem.y_shape, vectorized=True)
    assert box.geometry is inst.problem.geometry is not None
    assert kd.problems.BlackBox(lambda x: x, (3,), (3,)).geometry is None
