"""Compile check: every CUDA file through NVRTC (the compiler CuPy uses) for sm_80 and sm_90.

Each gpu/kernels/*.cu (and each tests/planted/*.cu, which the emulator tests run) is compiled with
CuPy's own options plus warnings as errors, every template kernel instantiated for float and
double as gpu.kernels launches them, and each kernel must appear as an entry in the PTX. NVRTC
needs no GPU; only CuPy's Python package and the NVRTC library (pip install -e .[test]).
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpu import kernels

cupy = pytest.importorskip("cupy", reason="cupy is not installed: pip install -e .[test]")
nvrtc = cupy.cuda.nvrtc

ROOT = Path(__file__).parent.parent
PLANTED = ROOT / "tests" / "planted"
FILES = sorted((ROOT / "gpu" / "kernels").glob("*.cu")) + sorted(PLANTED.glob("*.cu"))
OPTIONS = ("-std=c++17", "-ftz=true", "--device-as-default-execution-space", "-Werror=all-warnings")


def compile_to_ptx(path, arch):
    """(PTX text, {expression: lowered name}) of kernels/<path> compiled by NVRTC for `arch`."""
    found = kernels.kernels(path).values()
    expressions = [e for k in found if k.template for e in k.expressions()]
    program = nvrtc.createProgram(kernels.source(path), path.name, [], [])
    try:
        for expression in expressions:
            nvrtc.addNameExpression(program, expression)
        try:
            nvrtc.compileProgram(program, [*OPTIONS, f"-arch={arch}"])
        except nvrtc.NVRTCError:
            pytest.fail(f"NVRTC rejected {path} for {arch}:\n{nvrtc.getProgramLog(program)}")
        lowered = {e: nvrtc.getLoweredName(program, e) for e in expressions}
        lowered.update((k.name, k.name) for k in found if not k.template)
        return nvrtc.getPTX(program).decode(errors="replace"), lowered
    finally:
        nvrtc.destroyProgram(program)


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_cuda_file_compiles_with_nvrtc_without_warnings(path, arch):
    ptx, lowered = compile_to_ptx(path, arch)
    assert lowered, f"{path} declares no kernel the loader can read"
    for expression, name in lowered.items():
        assert f".entry {name}(" in ptx, f"{expression} ({name}) is missing from the PTX of {path}"


def test_a_broken_kernel_fails_the_check_with_its_line(tmp_path):
    broken = tmp_path / "broken.cu"
    broken.write_text('extern "C" __global__ void f(float* y, const int n)\n{\n    int unused;\n'
                      "    y[0] = n;\n}\n")
    with pytest.raises(pytest.fail.Exception, match=r"broken.cu\(3\): error.*unused"):
        compile_to_ptx(broken, "compute_80")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not on PATH")
def test_register_report_lists_every_kernel_instantiation():
    result = subprocess.run([sys.executable, "-m", "gpu.tools.kernel_report",
                             str(PLANTED / "correct.cu")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert sorted(row[1] for row in rows) == ["axpb<double>", "axpb<float>", "block_sum<double>",
                                              "block_sum<float>", "relu_where"]
    assert all(int(row[2]) > 0 for row in rows)                        # registers
    shared = {row[1]: int(row[6]) for row in rows}
    assert shared["block_sum<float>"] == 128 * 4 and shared["axpb<float>"] == 0   # T partial[128]
