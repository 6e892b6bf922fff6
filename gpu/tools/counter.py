"""Kernel launches, host synchronisations and device bytes allocated, counted on the emulator.

    with counting() as counts:          # needs GPU_EMULATOR=1: the emulated cupy is patched
        step()
    print(counts.table())               # per op: launches, syncs, bytes
    python -m gpu.tools.counter [--model resnet18] [--objective madry] [--batch 2] [--by call]
                                (runs itself with GPU_EMULATOR=1)

Everything the emulated cupy (gpu.emulator.fakecupy) is asked to do inside the block is recorded
as one event, attributed to the innermost frame of `gpu.ops` or `ref` on the Python stack (e.g.
"gpu.ops.conv Conv2d.forward", "ref.tensor Tensor.backward"; "other" when there is none). What
counts as what (real CuPy is the yardstick; its Python code is not run here):

  kernel  a launch of our own CUDA kernel (RawKernel / RawModule function), by kernel name.
  cupy    a call of a cupy function, ufunc or ndarray method or operator that launches a kernel
          in CuPy: one launch for each call that writes device memory, i.e. returns an array
          that is not a view of (or the same array as) one of its device arguments, or updates
          one in place (operators like +=, __setitem__, fill, out=, copyto, random draws).
          Views (reshape of a contiguous array, transpose, slicing, broadcast_to), pass-through
          conversions (asarray of a device array of the right dtype) and empty / empty_like
          (memory only) launch nothing. A nested call inside the stand-in is not counted again.
          Real CuPy launches a few more for some calls (var and std: two reductions;
          concatenate of many arrays; matmul of a strided operand: a copy first); this count
          is one per call.
  sync    a device -> host read, which waits for every queued kernel: .get(), cupy.asnumpy,
          .item(), .tolist(), .tobytes(), float() / int() / bool() / complex() of a device
          array, printing one (repr, str, format), Device.synchronize / deviceSynchronize, and
          the calls whose result size depends on the data (nonzero, flatnonzero, unique,
          indexing with a boolean array), which CuPy sizes with a read of the count. (Implicit
          conversion, numpy.asarray(device array), raises in CuPy and in the stand-in.)
  alloc   empty / empty_like: device memory, no launch.
  upload  a host -> device copy: cupy.asarray / cupy.array of host data, ndarray.set.
  bytes   device memory the call's fresh arrays take (requested from the memory pool; views
          and in-place updates take none; nothing is subtracted when arrays are freed).

The counts do not depend on the batch size or on the emulator's thread order. Launch overhead
and synchronisations cost real time only on a GPU (bench/gpu_bench.py times them there).
"""
import argparse
import collections
import contextlib
import functools
import os
import sys

import numpy as np

import gpu

KINDS = ("kernel", "cupy", "alloc", "sync", "upload")
SYNCS = ("get", "item", "tolist", "tobytes", "__float__", "__int__", "__bool__", "__complex__",
         "__repr__", "__str__", "__format__", "asnumpy", "synchronize", "deviceSynchronize")
IN_PLACE = tuple(f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                         "and", "or", "xor"))
SIZED_BY_DATA = ("nonzero", "flatnonzero", "unique")   # CuPy reads the count back: a sync
ALLOCATE_ONLY = ("empty", "empty_like")
UPLOADS = ("asarray", "array")                         # when the argument is host data
NOT_DEVICE_WORK = ("get_array_module", "is_available", "result_type", "can_cast", "isscalar",
                   "shape", "ndim", "__init__", "__len__", "__iter__", "__copy__", "__deepcopy__",
                   "__array_function__")
OWN_FRAMES = ("gpu.ops.", "ref.")


class Counts:
    """Events recorded by `counting`: {(op, kind, name): [calls, bytes]}."""

    def __init__(self):
        self.events = collections.defaultdict(lambda: [0, 0])

    def add(self, kind, name, nbytes=0):
        entry = self.events[(_op(), kind, name)]
        entry[0] += 1
        entry[1] += nbytes

    def total(self, kind):
        """Number of events of `kind` (one of KINDS; see the module docstring)."""
        return sum(calls for (_, k, _), (calls, _) in self.events.items() if k == kind)

    @property
    def launches(self):
        """Kernel launches: own kernels plus cupy's."""
        return self.total("kernel") + self.total("cupy")

    @property
    def syncs(self):
        return self.total("sync")

    @property
    def bytes(self):
        """Device bytes allocated (fresh arrays; nothing subtracted when they are freed)."""
        return sum(nbytes for _, nbytes in self.events.values())

    def summary(self):
        """{launches, kernel, cupy, alloc, sync, upload, bytes}: the totals."""
        return dict(launches=self.launches, **{k: self.total(k) for k in KINDS},
                    bytes=self.bytes)

    def rows(self, by="op"):
        """{key: {kernel, cupy, alloc, sync, upload, bytes}} where key is the op ("op") or the
        kernel or cupy call ("call", e.g. "cupy ndarray.__mul__", "kernel im2col<float>")."""
        rows = collections.defaultdict(lambda: dict.fromkeys(KINDS + ("bytes",), 0))
        for (op, kind, name), (calls, nbytes) in self.events.items():
            row = rows[op if by == "op" else f"{kind} {name}"]
            row[kind] += calls
            row["bytes"] += nbytes
        return dict(rows)

    def table(self, by="op", top=None):
        """A markdown table of rows(by), most launches first, and a total line."""
        rows = sorted(self.rows(by).items(), key=lambda kv: (-kv[1]["kernel"] - kv[1]["cupy"],
                                                             -kv[1]["sync"], kv[0]))
        lines = [f"| {by} | launches | own kernels | cupy | syncs | uploads | MiB allocated |",
                 "|---|---|---|---|---|---|---|"]
        for key, r in rows[:top]:
            lines.append(_line(key, r))
        lines.append(_line("**total**", self.summary()))
        return "\n".join(lines)


def _line(key, r):
    return (f"| {key} | {r['kernel'] + r['cupy']} | {r['kernel']} | {r['cupy']} | {r['sync']} | "
            f"{r['upload']} | {r['bytes'] / 2**20:.2f} |")


def _op():
    """The innermost gpu.ops / ref frame on the stack as "module qualname", or "other"."""
    frame = sys._getframe(3)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith(OWN_FRAMES):
            return f"{module} {frame.f_code.co_qualname.split('.<locals>')[0]}"
        frame = frame.f_back
    return "other"


# ---- patching the emulated cupy ------------------------------------------------------------------
class _Recorder:
    """Wraps callables of the stand-in so that each outermost call records its event."""

    def __init__(self, counts):
        self.counts, self.depth = counts, 0

    def wrap(self, function, name):
        @functools.wraps(function)
        def recorded(*args, **kwargs):
            if self.depth:
                return function(*args, **kwargs)
            self.depth += 1
            try:
                result = function(*args, **kwargs)
            finally:
                self.depth -= 1
            self.record(name, args, kwargs, result)
            return result
        return recorded

    def record(self, name, args, kwargs, result):
        method = name.rpartition(".")[2]
        if name.startswith("ufunc."):   # named by the ufunc: "ufunc.maximum", "ufunc.add.at"
            name = f"ufunc.{args[0].name}" + ("" if method == "__call__" else f".{method}")
        inputs = _device_arrays(list(args) + list(kwargs.values()))
        fresh = [a for a in _device_arrays([result]) if not _aliases(a, inputs)]
        kind = _kind(method, bool(inputs), bool(fresh), result, kwargs)
        if kind is not None:
            self.counts.add(kind, name, sum(a.nbytes for a in fresh))
        if method in SIZED_BY_DATA or method == "__getitem__" and _boolean_index(args[1]):
            self.counts.add("sync", name)


def _kind(method, device_inputs, fresh, result, kwargs):
    """The event kind of one call (module docstring), or None when it does no device work."""
    if method in SYNCS:
        return "sync"
    if method in UPLOADS and not device_inputs or method == "set":
        return "upload"
    if method in ALLOCATE_ONLY:
        return "alloc"
    in_place = result is None or kwargs.get("out") is not None or method in IN_PLACE
    return "cupy" if fresh or in_place else None


def _device_arrays(values):
    """The numpy memory of every device array in values (one level of tuples and lists)."""
    found = []
    for v in values:
        if isinstance(v, gpu.cupy.ndarray):
            found.append(v._array)
        elif isinstance(v, (tuple, list)):
            found.extend(_device_arrays(v))
    return found


def _aliases(a, inputs):
    return any(np.may_share_memory(a, b) for b in inputs)


def _boolean_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, gpu.cupy.ndarray) and i.dtype == np.bool_ for i in items)


def _targets():
    """(owner, attribute name, event name) of every stand-in callable to instrument."""
    from gpu.emulator import fakecupy
    from gpu.emulator.fakecupy import _functions, cuda, random

    yield from ((fakecupy, n, n) for n in _functions.__all__ + ["asnumpy"]
                if n not in NOT_DEVICE_WORK and callable(getattr(fakecupy, n)))
    for cls, prefix in ((fakecupy.ndarray, "ndarray"), (fakecupy.ufunc, "ufunc"),
                        (random.RandomState, "random"), (random._Generator, "random")):
        yield from ((cls, n, f"{prefix}.{n}") for n, v in vars(cls).items()
                    if callable(v) and n not in NOT_DEVICE_WORK
                    and (not n.startswith("_") or n.endswith("__")))
    yield cuda.Device, "synchronize", "synchronize"
    yield cuda.runtime, "deviceSynchronize", "deviceSynchronize"


@contextlib.contextmanager
def counting():
    """Record what the emulated cupy does inside the block into the Counts it yields."""
    if not gpu.EMULATED:
        raise RuntimeError("the counter instruments the emulated cupy: set GPU_EMULATOR=1 "
                           "before importing gpu (python -m gpu.tools.counter does)")
    from gpu.emulator.fakecupy import _raw

    counts = Counts()
    recorder = _Recorder(counts)
    saved = [(owner, name, vars(owner)[name], event) for owner, name, event in _targets()]
    for owner, name, original, event in saved:
        setattr(owner, name, recorder.wrap(original, event))
    launch = _raw.RawKernel.__call__

    def counted_launch(kernel, *args, **kwargs):
        counts.add("kernel", kernel._kernel.expression)
        return launch(kernel, *args, **kwargs)
    _raw.RawKernel.__call__ = counted_launch
    try:
        yield counts
    finally:
        _raw.RawKernel.__call__ = launch
        for owner, name, original, _ in saved:
            setattr(owner, name, original)


# ---- one training step -------------------------------------------------------------------------
def training_step(model="resnet18", objective="madry", batch=2, steps=10, seed=0):
    """A function running one training step on the gpu backend: objective (its attack inside),
    backward, SGD (momentum 0.9, weight decay 5e-4); model `model` of ref.models at CIFAR shape
    (3, 32, 32), 10 classes; madry-type objectives use eps 8/255, alpha 2/255 and `steps`."""
    import ref
    from ref import objectives

    net = ref.models.get(model, num_classes=10, rng=seed).to("gpu").train()
    attack = dict(eps=8 / 255, alpha=2 / 255, steps=steps) if objective != "natural" else {}
    data = np.random.default_rng(seed)
    x = gpu.asarray(data.random((batch, 3, 32, 32), dtype=np.float32))      # (n, 3, 32, 32)
    y = gpu.asarray(data.integers(0, 10, batch))                             # (n,)
    return sgd_step(net, objectives.get(objective, **attack), x, y, seed)


def sgd_step(model, objective, x, y, seed=0):
    """A function running one training step of `model` on (x, y): objective(model, x, y, rng),
    backward, SGD (lr 0.1, momentum 0.9, weight decay 5e-4); it returns the loss Tensor."""
    from ref import optim

    sgd = optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)

    def step():
        loss = objective(model, x, y, rng)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        return loss
    return step


def count_step(warmup=1, **step_options):
    """Counts of one training_step(**step_options) after `warmup` uncounted steps (the first
    step also allocates the momentum buffers and compiles the kernels)."""
    step = training_step(**step_options)
    for _ in range(warmup):
        step()
    with counting() as counts:
        step()
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", help="a ref.models name (default resnet18)")
    p.add_argument("--objective", default="madry", help="a ref.objectives name (default madry)")
    p.add_argument("--batch", type=int, default=2,
                   help="batch size; the counts do not depend on it (default 2)")
    p.add_argument("--steps", type=int, default=10, help="attack steps (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="uncounted steps first (default 1)")
    p.add_argument("--by", choices=("op", "call"), default="op", help="group rows by")
    p.add_argument("--top", type=int, default=None, help="print only the first TOP rows")
    p.add_argument("--json", action="store_true", help="print the totals as JSON only")
    args = p.parse_args(argv)
    if not gpu.EMULATED:   # `python -m` imported gpu with real CuPy: run again on the emulator
        argv = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, "-m", "gpu.tools.counter", *argv],
                  {**os.environ, "GPU_EMULATOR": "1"})
    counts = count_step(args.warmup, model=args.model, objective=args.objective,
                        batch=args.batch, steps=args.steps)
    if args.json:
        import json
        print(json.dumps(counts.summary()))
        return 0
    print(f"one {args.objective} training step of {args.model} (batch {args.batch}, attack steps "
          f"{args.steps}) on the emulated cupy\n")
    print(counts.table(args.by, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
