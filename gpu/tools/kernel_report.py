"""Register and spill report of the CUDA kernels, from nvcc's ptxas.

    python -m gpu.tools.kernel_report [--arch sm_80] [file.cu ...]    (default: gpu/kernels/*.cu)

Each file is compiled through a generated .cu that includes it and takes the address of every
kernel instantiation (template kernels for float and double, as gpu.kernels launches them):
    nvcc -cubin -arch=sm_80 -std=c++17 -Xptxas -v --Werror all-warnings
and one line per kernel gives registers, stack frame, spill stores/loads and static shared memory.
nvcc accepts host headers that NVRTC rejects, so tests/test_gpu_compile.py (NVRTC) is the compile
gate; this report is for reading register pressure and spotting spills.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GPU_EMULATOR", "1")   # only the .cu parser of gpu.kernels is needed here
from gpu import kernels  # noqa: E402

ENTRY = re.compile(r"Compiling entry function '([^']+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")
SHARED = re.compile(r"(\d+) bytes smem")
COLUMNS = ("registers", "stack", "spill_stores", "spill_loads", "smem")


def instantiating_source(path):
    """A .cu that includes `path` and instantiates each of its kernels (the address of each)."""
    names = [e for k in kernels.kernels(path).values() for e in k.expressions()]
    addresses = ", ".join(f"(void*)&{name}" for name in names)
    return (f'#include "{Path(path).resolve()}"\n'
            f"extern void* const kernel_report_instances[];\n"
            f"void* const kernel_report_instances[] = {{{addresses}}};\n")


def ptxas_report(path, arch):
    """{mangled kernel name: {column: int}} from `nvcc -Xptxas -v` on `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / "instances.cu"
        unit.write_text(instantiating_source(path))
        command = ["nvcc", "-cubin", f"-arch={arch}", "-std=c++17", "-Xptxas", "-v",
                   "--Werror", "all-warnings", "-o", os.devnull, str(unit)]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nvcc failed on {path}:\n{result.stderr}")
    report, current = {}, None
    for line in result.stderr.splitlines():
        if entry := ENTRY.search(line):
            current = report.setdefault(entry.group(1), dict.fromkeys(COLUMNS, 0))
        elif current is not None and (frame := FRAME.search(line)):
            current.update(stack=int(frame[1]), spill_stores=int(frame[2]),
                           spill_loads=int(frame[3]))
        elif current is not None and (used := USED.search(line)):
            shared = SHARED.search(line)
            current.update(registers=int(used[1]), smem=int(shared[1]) if shared else 0)
    return report


def demangle(names):
    """Readable kernel names ("axpb<float>") for mangled ones, through c++filt when present."""
    if not names or shutil.which("c++filt") is None:
        return list(names)
    lines = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                           check=True).stdout.splitlines()
    return [line.split("(")[0].removeprefix("void ") for line in lines]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=lambda p: Path(p).resolve(),
                        help="kernel files (default: gpu/kernels/*.cu)")
    parser.add_argument("--arch", default="sm_80", help="architecture for ptxas (default sm_80)")
    args = parser.parse_args(argv)
    if shutil.which("nvcc") is None:
        sys.exit("nvcc is not on PATH: install the CUDA toolkit to get the register report")
    files = args.files or sorted(kernels.KERNEL_DIR.glob("*.cu"))
    print(f"{'file':24} {'kernel':32} " + " ".join(f"{c:>12}" for c in COLUMNS))
    for path in files:
        report = ptxas_report(path, args.arch)
        for name, row in zip(demangle(list(report)), report.values()):
            print(f"{Path(path).name:24} {name:32} " + " ".join(f"{row[c]:>12}" for c in COLUMNS))


if __name__ == "__main__":
    main()
