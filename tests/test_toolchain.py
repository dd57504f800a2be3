"""The CUDA toolchain our kernels launch with, checked with no GPU (issue 9's failure modes).

numba-cuda compiles each kernel with NVVM to LTO-IR and links it with nvJitLink to a cubin; the
driver loads that cubin, never PTX, which is how NVVM 13.5 (PTX ISA 9.5) runs beside a CUDA 13.0
driver that accepts ISA 9.0 at most. It breaks before a user sees a training step when:
- nvJitLink is missing: kernels are then built without LTO and their PTX goes to the driver's
  own linker, which rejects an ISA newer than its release;
- nvJitLink is older than NVVM (what pip resolves for numba-cuda[cu13] beside a pin of
  nvidia-nvjitlink==13.0.*): every link fails with ERROR_OUTDATED_LIBRARY;
- a kernel needs PTX newer than the oldest driver we support (CUDA 13.0, ISA 9.0).
Every kernel of tests/test_ptx.py's registry is built as a launch builds it
(tests/kernel_builds.py), once per target, and linked to a cubin for sm_80 and for sm_90 (sm_90a,
as numba-cuda builds for Hopper); its sm_90 PTX goes through ptxas at ISA 9.0 where ptxas is on
the PATH.
"""
import re
import shutil
import subprocess

import pytest

from test_ptx import REGISTRY, TARGETS  # skips this module too under the simulator / without NVVM

from cuda.core import Linker  # noqa: E402
from numba.cuda.cudadrv import driver as cuda_driver  # noqa: E402

from dvae_cupy.gpu_probe import (OLDEST_CUDA, OLDEST_PTX_ISA, nvjitlink_can_link,  # noqa: E402
                                 ptx_cuda_release, ptx_isa_version)
from kernel_builds import launch_build  # noqa: E402

IDS = [f"{e[0].rsplit('.', 1)[1]}.{e[1]}-{i}" for i, e in enumerate(REGISTRY)]
HOPPER = (9, 0)


def test_kernels_are_built_to_link_through_nvjitlink():
    assert cuda_driver._have_nvjitlink(), (
        "nvJitLink >= 12.3 does not load: numba-cuda would build kernels without LTO and hand "
        "their PTX to the driver's linker (pip install -e '.[test]' brings nvidia-nvjitlink)")
    assert str(Linker.which_backend()) == "nvJitLink", Linker.which_backend()
    not_lto = sorted({name for _, name, dispatcher, _ in REGISTRY
                      if not dispatcher.targetoptions.get("lto")})
    assert not not_lto, f"built without LTO (nvJitLink), so linked by the driver: {not_lto}"


def test_nvjitlink_can_link_what_nvvm_emits():
    from cuda.bindings import nvjitlink

    _, _, dispatcher, sig = REGISTRY[0]
    nvvm_release = ptx_cuda_release(launch_build(dispatcher, sig, HOPPER).ptx)
    linker = tuple(nvjitlink.version())
    assert nvvm_release is not None, "NVVM's PTX header names no CUDA release"
    assert nvjitlink_can_link(linker, nvvm_release), (
        f"nvJitLink {linker[0]}.{linker[1]} is older than NVVM {nvvm_release[0]}.{nvvm_release[1]} "
        "or of another major release: every link would fail (ERROR_OUTDATED_LIBRARY); "
        "pip install -e '.[test]' takes both from one cuda-toolkit release")


@pytest.mark.parametrize("cc", TARGETS, ids=lambda cc: "sm_%d%d" % cc)
@pytest.mark.parametrize("module_name, kernel_name, dispatcher, sig", REGISTRY, ids=IDS)
def test_kernel_links_to_a_cubin(module_name, kernel_name, dispatcher, sig, cc):
    build = launch_build(dispatcher, sig, cc)
    cubin = bytes(build.cubin().code)
    assert cubin[:4] == b"\x7fELF", f"{module_name}.{kernel_name}: not a cubin (ELF) for {build.arch}"
    assert build.library._entry_name.encode() in cubin, f"{kernel_name}'s entry is not in its cubin"


def _ptxas_release(ptxas):
    match = re.search(r"release (\d+)\.(\d+)", subprocess.run(
        [ptxas, "--version"], capture_output=True, text=True, timeout=30).stdout)
    return (int(match.group(1)), int(match.group(2))) if match else None


def at_isa(ptx, isa):
    """The PTX text declared at ISA `isa` where it declares a newer one: ptxas then rejects any
    instruction that ISA lacks."""
    declared = ptx_isa_version(ptx)
    if declared is None or declared <= isa:
        return ptx
    return re.sub(r"^(\s*\.version\s+)\d+\.\d+", r"\g<1>%d.%d" % isa, ptx, count=1, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def ptxas():
    path = shutil.which("ptxas")
    if path is None:
        pytest.skip("ptxas is not on the PATH: cannot check the PTX against the oldest driver's ISA "
                    "(install a CUDA 13 toolkit, or put its bin/ on the PATH)")
    release = _ptxas_release(path)
    if release is None or release < OLDEST_CUDA:
        pytest.skip(f"ptxas at {path} is release {release}, older than CUDA "
                    f"{OLDEST_CUDA[0]}.{OLDEST_CUDA[1]}: it cannot assemble PTX ISA "
                    f"{OLDEST_PTX_ISA[0]}.{OLDEST_PTX_ISA[1]}")
    return path


@pytest.mark.parametrize("module_name, kernel_name, dispatcher, sig", REGISTRY, ids=IDS)
def test_kernel_ptx_assembles_for_the_oldest_driver(module_name, kernel_name, dispatcher, sig,
                                                   ptxas, tmp_path):
    build = launch_build(dispatcher, sig, HOPPER)
    source = tmp_path / "kernel.ptx"
    source.write_text(at_isa(build.ptx, OLDEST_PTX_ISA))
    done = subprocess.run([ptxas, f"-arch={build.arch}", "-o", str(tmp_path / "kernel.cubin"),
                           str(source)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        f"{module_name}.{kernel_name}: ptxas {build.arch} at PTX ISA %d.%d failed:\n%s"
        % (*OLDEST_PTX_ISA, done.stderr))


def test_at_isa_lowers_only_a_newer_declaration():
    ptx = "//\n// Cuda compilation tools, release 13.5, V13.5.37\n.version 9.5\n.target sm_90a\n"
    assert ptx_isa_version(at_isa(ptx, (9, 0))) == (9, 0)
    assert ptx_cuda_release(ptx) == (13, 5)
    assert at_isa(ptx.replace("9.5", "8.8"), (9, 0)) == ptx.replace("9.5", "8.8")
