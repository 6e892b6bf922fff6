"""Module: a tree of layers holding parameters (trainable Tensors) and buffers (state Tensors
such as BatchNorm running statistics or pruning masks), as in torch.nn.Module.

Assigning a Tensor attribute registers it as a parameter, a Module attribute as a child; buffers
are registered with `register_buffer`. Names in `named_parameters()` / `state_dict()` are dotted
paths ("layer1.0.conv1.weight") in registration order, the same as PyTorch's for the same model.
"""
import importlib

import numpy as np

from ref.tensor import Tensor


def backend(name):
    """The package of a backend by name: "numpy" -> ref, "gpu" -> gpu (imports cupy)."""
    if name in ("numpy", "ref", "cpu"):
        return importlib.import_module("ref")
    if name in ("gpu", "cupy", "cuda"):
        return importlib.import_module("gpu")
    raise ValueError(f"unknown backend {name!r}: use 'numpy' or 'gpu'")


def array_module(a):
    """The array module of `a`: numpy for host arrays, the gpu backend's cupy for device arrays
    (shared code that gets plain arrays, not Tensors, reaches numpy or cupy through this)."""
    if isinstance(a, (np.ndarray, np.generic)):
        return np
    return backend("gpu").cupy


class Module:
    training = True

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- registration -------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call Module.__init__() before "
                                 f"assigning attributes")
        if name in self._buffers:                 # re-assigning a buffer keeps it a buffer
            self._buffers[name] = value
        elif isinstance(value, Tensor):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:                                     # e.g. bias = None, or a plain attribute
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def register_buffer(self, name, value):
        """Register a state Tensor (or None) that is saved but not trained."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    # ---- traversal ----------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def get_submodule(self, path):
        """The module at the dotted `path` ("layer1.0.conv1"; "" is self), as in PyTorch."""
        module = self
        for name in path.split(".") if path else []:
            if name not in module._modules:
                raise AttributeError(f"{type(self).__name__} has no submodule {path!r} "
                                     f"({type(module).__name__} has no child {name!r})")
            module = module._modules[name]
        return module

    def children(self):
        return list(self._modules.values())

    def named_parameters(self):
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if p is not None:
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{prefix}.{name}" if prefix else name), b

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    # ---- modes and state ----------------------------------------------------------------------
    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def state_dict(self):
        """{dotted name: array} for every parameter and buffer (the arrays themselves, not
        copies)."""
        state = {name: p.data for name, p in self.named_parameters()}
        state.update((name, b.data) for name, b in self.named_buffers())
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters and buffers of the same names.

        Raises KeyError naming every missing or unexpected entry (when strict) and ValueError
        naming every entry whose shape differs. Arrays are converted to each tensor's backend and
        dtype, so a state saved on one backend loads on the other.
        """
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise KeyError(f"state does not match the model: missing {missing}, "
                           f"unexpected {unexpected}")
        wrong = [f"{name}: saved {tuple(state[name].shape)} vs model {t.shape}"
                 for name, t in own.items()
                 if name in state and tuple(state[name].shape) != t.shape]
        if wrong:
            raise ValueError("shape mismatch: " + "; ".join(wrong))
        for name, t in own.items():
            if name in state:
                t.data = to_backend_of(t, state[name]).astype(t.dtype, copy=True)
        return missing, unexpected

    def astype(self, dtype):
        """Convert every floating parameter and buffer (and gradient) to `dtype` in place, keeping
        each Tensor object (so references held elsewhere stay valid); returns self."""
        for t in self.parameters() + self.buffers():
            if t.dtype.kind == "f":
                t.data = t.data.astype(dtype)
                t.grad = None if t.grad is None else t.grad.astype(dtype)
        return self

    def to(self, backend_name):
        """Move every parameter and buffer to the backend "numpy" or "gpu" (in place; returns self).

        Each Tensor is replaced by a Tensor of the target backend's class with the same data, so
        create optimizers after moving the model.
        """
        target = backend(backend_name)
        for module in self.modules():
            for registry in (module._parameters, module._buffers):
                for name, t in registry.items():
                    if t is not None:
                        moved = target.Tensor(target.asarray(t.data), requires_grad=t.requires_grad)
                        registry[name] = moved
                        object.__setattr__(module, name, moved)
        return self

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"

    def extra_repr(self):
        return ""


def to_backend_of(t, array):
    """`array` (numpy or cupy) on the same backend as Tensor `t`."""
    return backend("numpy" if t.xp.__name__ == "numpy" else "gpu").asarray(array)
