"""kernels/step_end.py on the CPU: finish_step adds exactly what the trainer added before it
existed, np.float64(recon.mean() + kl.mean()), bit for bit, and advances the two counters (the
uint64 one wrapping at 2**64, silently, as on the GPU); the loss against a float64 mean.
The CUDA twin runs under the simulator (tests/cudasim/test_step_end_cuda.py), compiles to PTX
(tests/test_ptx.py) and, where a GPU is present, is compared here.
"""
import inspect
import warnings

import numpy as np
import pytest

from dvae_cupy.kernels import _cuda, step_end
from dvae_cupy.kernels._cuda import cupy_usable
from launches import as_if_no_gpu, record_launches, registered


def scalars(loss=0.0, count=0, step=0):
    return (np.array([loss], np.float64), np.array([count], np.uint64),
            np.array([step], np.int64))


def losses(rng, R, B):
    return ((rng.standard_normal(R) * 30 + 200).astype(np.float32),
            (rng.random(B) * 3).astype(np.float32))


@pytest.mark.parametrize("R, B", [(100, 100), (300, 100), (1, 1), (1000, 1000), (7, 3)], ids=str)
def test_loss_is_the_former_trainer_sum_bit_for_bit(R, B):
    # the sequence it replaces: loss_sum (a 0-d float64) += recon.mean() + kl.mean() per step
    rng = np.random.default_rng(R + B)
    loss_sum, count, step = scalars(count=41, step=40)
    expected = np.zeros((), np.float64)
    for t in range(3):
        recon, kl = losses(rng, R, B)
        step_end.finish_step(recon, kl, loss_sum, count, step)
        expected += recon.mean() + kl.mean()
        assert loss_sum.view(np.uint64)[0] == expected.reshape(1).view(np.uint64)[0]
        assert int(count[0]) == 42 + t and int(step[0]) == 41 + t
    exact = 0.0
    rng = np.random.default_rng(R + B)
    for _ in range(3):
        recon, kl = losses(rng, R, B)
        exact += recon.astype(np.float64).mean() + kl.astype(np.float64).mean()
    assert loss_sum[0] == pytest.approx(exact, rel=1e-6)  # float32 means: ~1e-7 relative


def test_counters_wrap_and_stay_exact_above_float64_integers():
    loss_sum, count, step = scalars(count=2**64 - 1, step=2**53 + 1)
    recon = np.ones(2, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning: the wrap is intended
        step_end.finish_step(recon, recon, loss_sum, count, step)
    assert count.dtype == np.uint64 and int(count[0]) == 0
    assert step.dtype == np.int64 and int(step[0]) == 2**53 + 2
    step_end.finish_step(recon, recon, loss_sum, count, step)
    assert int(count[0]) == 1 and loss_sum[0] == 4.0


ARGS = ["recon", "kl", "loss_sum", "counter", "adam_step"]


def valid_args():
    loss_sum, count, step = scalars()
    return dict(recon=np.ones(6, np.float32), kl=np.ones(2, np.float32), loss_sum=loss_sum,
                counter=count, adam_step=step)


BAD_ARGS = [
    ("recon", np.ones(6, np.float64), "recon must be float32"),
    ("recon", np.ones((6, 1), np.float32), "recon must be 1-D"),
    ("recon", np.ones(0, np.float32), "at least one value"),
    ("kl", np.ones(0, np.float32), "at least one value"),
    ("kl", np.ones(4, np.float32)[::2], "kl must be C-contiguous"),
    ("loss_sum", np.zeros(1, np.float32), "loss_sum must be a 1-element 1-D float64 array"),
    ("loss_sum", np.zeros((), np.float64), "loss_sum must be a 1-element 1-D float64 array"),
    ("counter", np.zeros(1, np.int64), "counter must be a 1-element 1-D uint64 array"),
    ("counter", 3, "counter must be a 1-element 1-D uint64 array"),
    ("adam_step", np.zeros(1, np.uint64), "adam_step must be a 1-element 1-D int64 array"),
    ("adam_step", np.zeros(2, np.int64), "adam_step must be a 1-element 1-D int64 array"),
]


@pytest.mark.parametrize("op", [step_end.finish_step, step_end.finish_step_cuda],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", BAD_ARGS, ids=lambda b: f"{b[0]}-{b[2][:24]}")
def test_bad_arguments_are_named(op, bad):
    name, value, match = bad
    args = valid_args()
    good = dict(args)
    args[name] = value
    with pytest.raises(ValueError, match=match):
        op(*[args[n] for n in ARGS])
    assert good["counter"][0] == 0 and good["loss_sum"][0] == 0  # nothing done


def test_cpu_twin_and_launcher_take_the_same_arguments():
    assert list(inspect.signature(step_end.finish_step).parameters) == ARGS
    assert list(inspect.signature(step_end.finish_step_cuda).parameters) == ARGS + ["stream"]


def test_launcher_refuses_host_scalars_on_a_gpu(monkeypatch):
    monkeypatch.setattr(_cuda, "cupy_usable", lambda: True)
    with pytest.raises(ValueError, match="loss_sum must be a device array"):
        step_end.finish_step_cuda(*[valid_args()[n] for n in ARGS])


def test_launcher_passes_the_registered_types(monkeypatch):
    as_if_no_gpu(monkeypatch)
    launches = record_launches(monkeypatch, step_end, "finish_step_kernel")
    step_end.finish_step_cuda(*[valid_args()[n] for n in ARGS], stream=0)
    (config, types), = launches
    assert types in registered(step_end)["finish_step_kernel"]
    assert config == (1, step_end.THREADS, 0)  # one block


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    import cupy

    rng = np.random.default_rng(3)
    for R, B in [(1, 1), (100, 100), (300, 100), (1000, 1000)]:
        recon, kl = losses(rng, R, B)
        cpu = scalars(5.0, 2**64 - 1, 7)
        step_end.finish_step(recon, kl, *cpu)
        gpu = [cupy.asarray(a) for a in scalars(5.0, 2**64 - 1, 7)]
        step_end.finish_step_cuda(cupy.asarray(recon), cupy.asarray(kl), *gpu)
        assert float(gpu[0][0]) == pytest.approx(float(cpu[0][0]), rel=1e-6)
        assert int(gpu[1][0]) == 0 and int(gpu[2][0]) == 8
    for kernel, sigs in step_end.CUDA_KERNELS:
        assert set(kernel.overloads) <= {tuple(s) for s in sigs}, (kernel, list(kernel.overloads))
