"""The CPU emulator of CUDA kernels (gpu/emulator) and the kernel loader (gpu/kernels).

Correct kernels (tests/planted/correct.cu) must agree with numpy under every re-run check (on a
real GPU the same tests run them through CuPy); each planted bug (tests/planted/*.cu) must make
the emulator or the loader raise. The launcher's own tests run it directly on numpy arrays.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu
from gpu import kernels
from gpu.emulator import build, launcher, options
from gpu.emulator.launcher import CheckError, LaunchError

PLANTED = Path(__file__).parent / "planted"
ROOT = Path(__file__).parent.parent
emulated = pytest.mark.skipif(not gpu.EMULATED, reason="checks of the emulator (GPU_EMULATOR=1)")
cp = gpu.cupy


def inline_kernel(code, expression):
    """A kernel from a CUDA snippet, run by the launcher on numpy arrays."""
    return launcher.Module(textwrap.dedent(code), (expression,)).get_function(expression)


def run_axpb(dtype, n, m, block, seed):
    """y = 1.5 x + b[i % m] by the kernel, checked against numpy within one rounding of each term
    (a GPU may fuse the multiply-add; g++ on x86-64 does not, so there it is exact)."""
    rng = np.random.default_rng(seed)
    x, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(m).astype(dtype)
    y = cp.empty(n, dtype=dtype)
    args = (cp.asarray(x), cp.asarray(b), y, np.int64(n), np.int32(m), dtype(1.5))
    kernels.launch(PLANTED / "correct.cu", "axpb", dtype, n, args, block=block)
    bias = b[np.arange(n) % m]                                    # (n,)
    bound = 2 * np.finfo(dtype).eps * (np.abs(1.5 * x) + np.abs(bias))
    assert (np.abs(y.get() - (1.5 * x + bias)) <= bound).all()


# ---- correct kernels ----------------------------------------------------------------------------
@given(dtype=st.sampled_from([np.float32, np.float64]), n=st.integers(1, 3000), m=st.integers(1, 7),
       block=st.sampled_from([32, 64, 256]), seed=st.integers(0, 2**32 - 1))
def test_grid_stride_kernel_matches_numpy_under_every_check(dtype, n, m, block, seed):
    with options.checks("order", "one_block"):
        run_axpb(dtype, n, m, block, seed)


@settings(max_examples=15)
@given(dtype=st.sampled_from([np.float32, np.float64]), n=st.integers(1, 2000),
       seed=st.integers(0, 2**32 - 1))
def test_reduction_with_barriers_and_shuffles_matches_numpy(dtype, n, seed):
    x = np.random.default_rng(seed).random(n).astype(dtype)
    total = cp.zeros(1, dtype=dtype)
    with options.checks("order", "one_block"):
        kernels.launch(PLANTED / "correct.cu", "block_sum", dtype, n,
                       (cp.asarray(x), total, np.int64(n)), block=128)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(total.get()[0], x.sum(dtype=np.float64), rtol=rtol)


def test_extern_c_kernel_with_mixed_pointer_types():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500).astype(np.float32)
    labels = rng.integers(0, 10, 500).astype(np.int32)
    y = cp.empty(500, dtype=cp.float32)
    with options.checks("order", "one_block"):
        kernels.launch(PLANTED / "correct.cu", "relu_where", None, 500,
                       (cp.asarray(x), cp.asarray(labels), y, np.int32(500), np.int32(7)))
    np.testing.assert_array_equal(y.get(), np.where(labels < 7, np.maximum(x, 0), -1))


@emulated
def test_loader_caps_the_grid_and_launches_nothing_for_no_elements(monkeypatch):
    monkeypatch.setattr(kernels, "MAX_BLOCKS", 2)
    run_axpb(np.float64, 3000, 5, 64, seed=0)   # 2 blocks of 64 threads loop over 3000 elements
    ones, y = cp.ones(3000, dtype=cp.float32), cp.empty(3000, dtype=cp.float32)
    scale = (PLANTED / "no_grid_stride.cu", "scale", np.float32)
    kernels.launch(*scale, 3000, (ones, y, np.int64(3000), np.float32(2)), block=64)
    written = ~np.isnan(y.get())
    assert written[:128].all() and not written[128:].any()   # only the 2 x 64 threads' elements
    y = cp.empty(3000, dtype=cp.float32)
    kernels.launch(*scale, 0, (ones, y, np.int64(3000), np.float32(2)), block=64)
    assert np.isnan(y.get()).all()


# ---- planted bugs, each caught ----------------------------------------------------------------
@emulated
def test_kernel_without_grid_stride_loop_is_caught_by_the_one_block_rerun():
    x = cp.asarray(np.arange(1000, dtype=np.float32))
    y = cp.empty(1000, dtype=cp.float32)
    kernels.launch(PLANTED / "no_grid_stride.cu", "scale", np.float32, 1000,
                   (x, y, np.int64(1000), np.float32(3)))   # a grid of ceil(n / block) covers n
    np.testing.assert_array_equal(y.get(), 3 * np.arange(1000, dtype=np.float32))
    with options.checks("one_block"), pytest.raises(CheckError, match="grid-stride loop"):
        kernels.launch(PLANTED / "no_grid_stride.cu", "scale", np.float32, 1000,
                       (x, cp.empty(1000, dtype=cp.float32), np.int64(1000), np.float32(3)))


@emulated
def test_missing_barrier_is_caught_by_the_order_rerun():
    x = np.random.default_rng(1).random(1000)
    total = cp.zeros(1)
    kernels.launch(PLANTED / "missing_barrier.cu", "block_sum", np.float64, 1000,
                   (cp.asarray(x), total, np.int64(1000)), block=64)
    assert abs(total.get()[0] - x.sum()) > 1e-3   # fiber mode already runs it like a racing GPU
    with options.checks("order"), pytest.raises(CheckError, match="data race"):
        kernels.launch(PLANTED / "missing_barrier.cu", "block_sum", np.float64, 1000,
                       (cp.asarray(x), cp.zeros(1), np.int64(1000)), block=64)


@emulated
def test_barrier_divergence_is_detected():
    x = cp.asarray(np.arange(100, dtype=np.float32))
    divergence = r"barrier divergence.*divergent_barrier.cu:11.*has exited"
    with pytest.raises(LaunchError, match=divergence):
        kernels.launch(PLANTED / "divergent_barrier.cu", "shift_left", np.float32, 100,
                       (x, cp.empty(100, dtype=cp.float32), np.int32(100)), block=64)


# ---- argument checks of the loader (real or emulated cupy) -----------------------------------
def axpb_args(**change):
    args = dict(x=cp.zeros(10, dtype=cp.float32), b=cp.zeros(3, dtype=cp.float32),
                y=cp.zeros(10, dtype=cp.float32), n=np.int64(10), m=np.int32(3),
                alpha=np.float32(2))
    args.update(change)
    return tuple(args.values())


@pytest.mark.parametrize("change, message", [
    (dict(m=np.int64(3)), r"`const int m`: expected numpy.int32, got int64"),
    (dict(m=3), r"`const int m`: expected numpy.int32, got int 3"),
    (dict(n=10), r"`const long long n`: expected numpy.int64, got int"),
    (dict(alpha=np.float64(2)), r"`const T alpha`: expected numpy.float32, got float64"),
    (dict(alpha=2.0), r"`const T alpha`: expected numpy.float32, got float"),
    (dict(x=cp.zeros(10)), r"`const T\* x`: expected a cupy array of float32, got one of float64"),
    (dict(b=cp.zeros(3, dtype=cp.int32)), r"`const T\* b`: expected a cupy array of float32"),
    (dict(y=cp.zeros((10, 2), dtype=cp.float32)[:, 0]), r"`T\* y`: .*not C-contiguous"),
    (dict(x=np.zeros(10, dtype=np.float32)), r"`const T\* x`: expected a cupy .* got ndarray"),
])
def test_loader_rejects_wrong_arguments_naming_kernel_and_parameter(change, message):
    with pytest.raises(TypeError, match=r"correct.cu::axpb parameter " + message):
        kernels.launch(PLANTED / "correct.cu", "axpb", np.float32, 10, axpb_args(**change))


def test_loader_rejects_wrong_count_dtype_block_and_name():
    with pytest.raises(TypeError, match=r"axpb takes 6 arguments \(const T\* x, .*\), got 5"):
        kernels.launch(PLANTED / "correct.cu", "axpb", np.float32, 10, axpb_args()[:5])
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        kernels.launch(PLANTED / "correct.cu", "axpb", np.int32, 10, axpb_args())
    with pytest.raises(ValueError, match=r"declares `// block: 128`; launched with block=256"):
        kernels.launch(PLANTED / "correct.cu", "block_sum", np.float32, 10,
                       (cp.zeros(10, dtype=cp.float32), cp.zeros(1, dtype=cp.float32),
                        np.int64(10)))
    with pytest.raises(ValueError, match=r"'nope' is not declared in .*correct.cu; it has \['ax"):
        kernels.launch(PLANTED / "correct.cu", "nope", np.float32, 10, ())


def test_loader_reads_declarations(tmp_path):
    found = kernels.kernels(PLANTED / "correct.cu")
    assert list(found) == ["axpb", "block_sum", "relu_where"]
    axpb = found["axpb"]
    assert [(p.name, p.ctype, p.pointer) for p in axpb.params] == [
        ("x", "T", True), ("b", "T", True), ("y", "T", True), ("n", "long long", False),
        ("m", "int", False), ("alpha", "T", False)]
    assert axpb.expressions() == ["axpb<float>", "axpb<double>"] and axpb.block is None
    assert found["block_sum"].block == (128,)
    assert found["relu_where"].expressions() == ["relu_where"]
    unsized = tmp_path / "unsized.cu"
    unsized.write_text("template <typename T>\n__global__ void f(T* y)\n{ __syncthreads(); }\n")
    with pytest.raises(ValueError, match=r"unsized.cu::f: uses barriers .* `// block: 256`"):
        kernels.kernels(unsized)


# ---- the launcher's own checks and modes (numpy arrays) --------------------------------------
COPY_INT = """
extern "C" __global__ void copy_int(const int* x, int* y, const int n, const long long m)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = x[i] + m;
}
"""


def test_launcher_checks_the_types_the_compiler_reports():
    kernel = inline_kernel(COPY_INT, "copy_int")
    assert [p.ctype for p in kernel.params] == ["const int*", "int*", "int", "long long"]
    x, y = np.arange(5, dtype=np.int32), np.zeros(5, dtype=np.int32)
    kernel((1,), (32,), (x, y, np.int32(5), 7))   # a Python int is a long long, as in CuPy
    np.testing.assert_array_equal(y, x + 7)
    read_only = y.copy()
    read_only.flags.writeable = False
    for args, message in [
            ((x, y, np.int64(5), 7), r"argument 2 \(int\): expected numpy.int32, got int64"),
            ((x, y, 5, 7), r"argument 2 \(int\): expected numpy.int32, got int 5"),
            ((x.astype(np.int64), y, np.int32(5), 7), r"argument 0 \(const int\*\): .*of int64"),
            ((x, y[::2], np.int32(3), 7), r"argument 1 \(int\*\): .*not C-contiguous"),
            ((x, read_only, np.int32(5), 7), "read-only"),
            ((x, y, np.int32(5)), "takes 4 arguments, got 3")]:
        with pytest.raises(TypeError, match=message):
            kernel((1,), (32,), args)


@emulated
def test_fake_cupy_kernels_refuse_host_arrays():
    kernel = cp.RawModule(code=COPY_INT).get_function("copy_int")
    args = (np.zeros(5, np.int32), cp.zeros(5, dtype=cp.int32), np.int32(5), np.int64(0))
    with pytest.raises(TypeError, match="numpy .host. array was passed to a kernel"):
        kernel((1,), (32,), args)


BARRIER_AFTER_WRITE = """
extern "C" __global__ void count_then_sync(int* counter)
{
    atomicAdd(counter, 1);   // done by thread 0 in simple mode before the barrier stops the launch
    __syncthreads();
}
"""


def test_simple_mode_refuses_barriers_and_auto_mode_reruns_with_fibers_from_restored_memory():
    kernel = inline_kernel(BARRIER_AFTER_WRITE, "count_then_sync")
    counter = np.zeros(1, dtype=np.int32)
    refused = r"__syncthreads\(\) at .*:5 needs fiber mode"
    with options.mode("simple"), pytest.raises(LaunchError, match=refused):
        kernel((2,), (64,), (counter,))
    counter[0] = 0
    with options.mode("auto"):
        kernel((3,), (64,), (counter,))
    assert counter[0] == 3 * 64 and kernel.needs_fibers


SHUFFLES = """
extern "C" __global__ void shuffles(const int* x, int* y, const int width)
{
    const int t = threadIdx.x, v = x[t], n = blockDim.x;
    y[t] = __shfl_sync(0xffffffffu, v, 3, width);
    y[n + t] = __shfl_up_sync(0xffffffffu, v, 2, width);
    y[2 * n + t] = __shfl_down_sync(0xffffffffu, v, 5, width);
    y[3 * n + t] = __shfl_xor_sync(0xffffffffu, v, 9, width);
}
"""


@pytest.mark.parametrize("width", [32, 16, 8])
def test_warp_shuffles_follow_cuda_semantics(width):
    n = 64
    x = np.random.default_rng(width).integers(-1000, 1000, n).astype(np.int32)
    y = np.zeros(4 * n, dtype=np.int32)
    with options.mode("fiber"):
        inline_kernel(SHUFFLES, "shuffles")((1,), (n,), (x, y, np.int32(width)))
    lane = np.arange(n)
    start = lane - lane % width                      # first lane of each width-group
    xor = lane ^ 9
    expected = [x[start + 3 % width],
                np.where(lane % width >= 2, x[lane - 2], x),
                np.where(lane % width + 5 < width, x[np.minimum(lane + 5, n - 1)], x),
                np.where(xor - xor % width > start, x, x[np.minimum(xor, n - 1)])]
    np.testing.assert_array_equal(y.reshape(4, n), np.stack(expected))


PARTIAL_MASK = """
extern "C" __global__ void partial(float* y)
{
    y[threadIdx.x] = __shfl_down_sync(0x0000ffffu, y[threadIdx.x], 1);
}
"""


def test_shuffles_need_full_masks_and_full_warps():
    kernel = inline_kernel(PARTIAL_MASK, "partial")
    with pytest.raises(LaunchError, match="only the full mask"):
        kernel((1,), (32,), (np.zeros(32, np.float32),))
    full = inline_kernel(PARTIAL_MASK.replace("0x0000ffffu", "0xffffffffu"), "partial")
    with pytest.raises(LaunchError, match="not a whole number of 32-thread warps"):
        full((1,), (48,), (np.zeros(48, np.float32),))


INDICES = """
extern "C" __global__ void indices(int* y)
{
    const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    y[b * blockDim.x * blockDim.y * blockDim.z + t] = 1000 * b + t;
}
"""


def test_three_dimensional_grids_and_blocks():
    y = np.zeros(2 * 3 * 2 * 4 * 2 * 3, dtype=np.int32)
    with options.checks("order"):
        inline_kernel(INDICES, "indices")((2, 3, 2), (4, 2, 3), (y,))
    b, t = np.divmod(np.arange(y.size), 24)
    np.testing.assert_array_equal(y, 1000 * b + t)


def test_trap_and_bad_launch_configurations_raise():
    code = 'extern "C" __global__ void stop(int* y) { if (threadIdx.x == 3) __trap(); }'
    trap = inline_kernel(code, "stop")
    with pytest.raises(LaunchError, match=r"__trap\(\) at .*:1 .*thread \(3,0,0\)"):
        trap((1,), (8,), (np.zeros(1, np.int32),))
    with pytest.raises(LaunchError, match="more than 1024 threads"):
        trap((1,), (64, 32), (np.zeros(1, np.int32),))
    with pytest.raises(LaunchError, match="dynamic shared memory"):
        trap((1,), (8,), (np.zeros(1, np.int32),), shared_mem=128)


def test_compile_errors_point_at_the_cu_line(tmp_path):
    source = ('#line 1 "gpu/kernels/broken.cu"\n'
              'extern "C" __global__ void f(float* y)\n{\n    y[0] = undefined_name;\n}\n')
    with pytest.raises(build.CompileError, match=r"kernels/broken.cu:3:\d+: error: .undefined_"):
        launcher.Module(source).get_function("f")


# ---- sanitizer build (subprocesses with libasan preloaded) -----------------------------------
def run_sanitized(arguments):
    env = {**os.environ, **build.sanitizer_env(), "GPU_EMULATOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *arguments], cwd=ROOT, env=env, capture_output=True,
                          text=True)


@pytest.mark.slow
def test_sanitizer_finds_the_out_of_bounds_read_with_its_line():
    path = PLANTED / "out_of_bounds.cu"
    script = textwrap.dedent(f"""
        import numpy as np
        from gpu.emulator import launcher
        code = '#line 1 "{path}"\\n' + open("{path}").read()
        name = "next_difference<double>"
        kernel = launcher.Module(code, (name,)).get_function(name)
        kernel((4,), (256,), (np.zeros(1000), np.zeros(1000), np.int64(1000)))
        """)
    result = run_sanitized(["-c", script])
    assert result.returncode != 0
    assert "heap-buffer-overflow" in result.stderr and "out_of_bounds.cu:7" in result.stderr


@pytest.mark.slow
def test_kernel_tests_are_clean_under_the_sanitizer():
    files = sorted({str(p) for p in [Path(__file__), *ROOT.glob("tests/test_*kernel*.py")]})
    result = run_sanitized(["-m", "pytest", *files, "-q", "-x", "-m", "not slow",
                            "-p", "no:cacheprovider"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
