"""The CPU fast path (NumPy + @njit kernels) against the float64 reference, through dvae-check's
own checks: every op, the candidate losses, and whole estimator steps with the reference's noise."""
from types import SimpleNamespace

import pytest

from dvae_cupy import check
from dvae_cupy.backend import get_backend
from dvae_cupy.cli import check_main

CPU = get_backend("cpu")


@pytest.mark.parametrize("op", check.CHECK_NAMES)
def test_cpu_backend_matches_reference(op):
    results = check.run_checks(CPU, only=[op])
    assert results, f"no check ran for {op}"
    failed = [r for r in results if not r.passed]
    assert not failed, check.format_table(failed)


def test_checks_fail_when_an_op_is_wrong():
    """A broken kernel must show up as FAIL (here: eps mis-scaled inside the direct gradient)."""
    ops = {name: getattr(CPU.ops, name) for name in CPU.ops.__all__}
    original = ops["direct_logit_grad"]
    ops["direct_logit_grad"] = lambda *a: original(*a[:6], a[6] * 1.5, *a[7:])
    broken = type(CPU)(CPU.name, CPU.xp, SimpleNamespace(**ops))
    results = check.run_checks(broken, only=["direct_step"])
    assert results and not any(r.passed for r in results)


def test_dvae_check_command_prints_a_table_and_exits_zero(capsys):
    assert check_main(["--backend", "cpu", "--only", "bias_act", "softmax_kl"]) == 0
    out = capsys.readouterr().out
    assert "bias_act" in out and "softmax_kl" in out and "0 failed" in out


def test_gpu_backend_refuses_clearly_without_a_gpu(capsys, monkeypatch):
    monkeypatch.setenv("DVAE_CUPY_BACKEND", "cpu")
    assert check_main(["--backend", "gpu"]) == 2
    assert "not usable" in capsys.readouterr().err


def test_bench_mode_times_each_op_beside_its_check(capsys):
    assert check_main(["--backend", "cpu", "--bench", "--only", "bias_act", "finish_step"]) == 0
    out = capsys.readouterr().out
    timed = [line for line in out.splitlines() if line.startswith(("bias_act", "finish_step"))
             and line.split()[1] in ("100x300", "100x100")]
    assert len(timed) == 2 and all(float(line.split()[-1]) > 0 for line in timed), out


def test_only_rejects_unknown_checks(capsys):
    with pytest.raises(SystemExit):
        check_main(["--backend", "cpu", "--only", "bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_the_table_columns_fit_the_longest_names():
    rows = [check.CheckResult("a_very_long_operation_name_of_30", "12x345x6789", 1e-9, 1e-6, None),
            check.CheckResult("op", "1", 0.0, 0.0, None)]
    header, first, second, _ = check.format_table(rows).splitlines()
    assert first.split()[:2] == ["a_very_long_operation_name_of_30", "12x345x6789"]
    starts = [line.index(word) for line, word in ((header, "shape"), (first, "12x345x6789"), (second, " 1 "))]
    assert starts[0] == starts[1] == starts[2] + 1
