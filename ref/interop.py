"""PyTorch state dicts in and out: `from_torch(model, state_dict_or_path)` and `to_torch(model)`.

PyTorch is optional (`pip install -e ".[torch]"`) and imported only here, when a function runs.

to_torch(model) builds a torch.nn.Module twin of any ref model, once for every architecture:
    leaves      Conv2d, Linear (and their subnet / masked / rewiring forms: the weight is the
                effective W * M, zeros where pruned), BatchNorm1d/2d (running statistics
                copied), ReLU, pooling, Flatten, Identity, Dropout, Sequential and the input
                Normalize become their torch.nn layers;
    composites  (blocks, the networks) become a twin holding the torch children under the same
                names and running OUR class's forward code on torch tensors: that code calls
                x.ops.<op> (a torch tensor subclass answers x.ops with torch.nn.functional) and
                Tensor methods that torch shares (relu, flatten, +).
So the twin's state_dict() has our names (plus torch's BatchNorm num_batches_tracked), its
parameters have our dtype, and it computes the same function in eval and train mode.

from_torch(model, source) loads a PyTorch state dict into a ref model. source: a .pt / .pth path,
a dict (also wrapped as {"state_dict": ...} or {"model": ...}) or a torch.nn.Module. Keys are
matched after removing DataParallel's "module." prefix and, when every other key has it, the
"model." prefix of RobustBench's normalize_model wrapper, whose normalize.mean / .std must equal
the model's normalize=(mean, std) option; a key the model lacks is renamed by the first rule of
NAME_RULES that gives a name the model has (torchvision, HYDRA, torch.nn.utils.prune layouts).
Every missing, unexpected and mis-shaped entry is named in one ValueError before anything is
written, so a failed load leaves the model unchanged.
"""
import functools
import os
import re
from collections.abc import Mapping

import numpy as np

import ref
from ref.models.common import Normalize
from ref.nn import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout,
                    Flatten, Identity, Linear, MaxPool2d, Module, ReLU, Sequential)
from ref.tensor import Tensor, no_grad

# (pattern, replacement) for a checkpoint key the model lacks, tried in order
NAME_RULES = (
    (r"^(.*)\.popup_scores$", r"\1.scores"),            # HYDRA's subnet layers
    (r"^(.*)\.weight_orig$", r"\1.weight"),             # torch.nn.utils.prune (+ weight_mask)
    (r"^(.*)\.downsample\.(\d+)\.", r"\1.shortcut.\2."),   # torchvision's ResNet
    (r"^fc\.", "linear."),                              # torchvision's ResNet classifier
    (r"^linear\.", "fc."),                              # a "linear" head into an "fc" one
)
# keys that hold no state of ours: BN batch counters, the unused sub_block1 of TRADES' / HYDRA's WRN
IGNORED = re.compile(r"(^|\.)num_batches_tracked$|^sub_block1\.")
# RobustBench's input normalisation (checked against the model's Normalize, then dropped)
NORMALIZE_KEYS = ("normalize.mean", "normalize.std")


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError('ref.interop needs PyTorch: pip install -e ".[torch]"') from error
    return torch


# ---- to_torch -----------------------------------------------------------------------------------
def to_torch(model):
    """A torch.nn.Module computing the same function as `model` (module docstring), on the CPU,
    in `model`'s dtype and training mode; pruned weights are exact zeros."""
    twin = _twin(model, _torch_classes())
    twin.unwrap_output = True
    return twin.train(model.training)


@functools.cache
def _torch_classes():
    """The torch-side classes, created once PyTorch is imported."""
    torch = _torch()
    F = torch.nn.functional

    class TorchOps:
        """The ops our composite forwards call through x.ops, on torch tensors (only those whose
        torch.nn.functional twin has our signature)."""
        adaptive_avg_pool2d = staticmethod(F.adaptive_avg_pool2d)
        relu = staticmethod(F.relu)

    class OpsTensor(torch.Tensor):
        """A torch tensor that answers x.ops (results of torch functions keep the class)."""
        ops = TorchOps

    class TorchNormalize(torch.nn.Module):
        """(x - mean) / std per channel, in x's dtype; mean, std non-persistent float64
        buffers (not in state_dict), as ref.models.common.Normalize."""

        def __init__(self, mean, std):
            super().__init__()
            for name, value in (("mean", mean), ("std", std)):
                self.register_buffer(name, torch.tensor(value, dtype=torch.float64)
                                     .reshape(1, -1, 1, 1), persistent=False)       # (1, c, 1, 1)

        def forward(self, x):
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    class Twin(torch.nn.Module):
        """Runs the forward of the ref class `ours` (set per subclass) on torch children."""
        ours = None
        unwrap_output = False

        def forward(self, x):
            out = self.ours.forward(self, x.as_subclass(OpsTensor))
            return out.as_subclass(torch.Tensor) if self.unwrap_output else out

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                if not hasattr(self.ours, name):
                    raise
                value = getattr(self.ours, name)    # a method (Network.head) or a constant
                return value.__get__(self) if callable(value) else value

    return dict(torch=torch, Twin=Twin, TorchNormalize=TorchNormalize)


@functools.cache
def _twin_class(ours, Twin):
    """Twin subclass named after the ref class `ours`."""
    return type(ours.__name__, (Twin,), {"ours": ours, "__qualname__": ours.__name__})


def _twin(module, classes):
    """The torch twin of one ref module, recursively."""
    torch = classes["torch"]
    nn = torch.nn
    for kind, make in (
            (Sequential, lambda m: nn.Sequential(*[_twin(c, classes) for c in m])),
            (Conv2d, lambda m: _weight_layer(nn.Conv2d(
                m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                bias=m.bias is not None), m, torch)),
            (Linear, lambda m: _weight_layer(nn.Linear(
                m.in_features, m.out_features, bias=m.bias is not None), m, torch)),
            (BatchNorm1d, lambda m: _batch_norm(nn.BatchNorm1d, m, torch)),
            (BatchNorm2d, lambda m: _batch_norm(nn.BatchNorm2d, m, torch)),
            (ReLU, lambda m: nn.ReLU()),
            (MaxPool2d, lambda m: nn.MaxPool2d(m.kernel_size, m.stride, m.padding)),
            (AvgPool2d, lambda m: nn.AvgPool2d(m.kernel_size, m.stride, m.padding)),
            (AdaptiveAvgPool2d, lambda m: nn.AdaptiveAvgPool2d(m.output_size)),
            (Flatten, lambda m: nn.Flatten(m.start_dim, m.end_dim)),
            (Identity, lambda m: nn.Identity()),
            (Dropout, lambda m: nn.Dropout(m.p)),
            (Normalize, lambda m: classes["TorchNormalize"](m.mean, m.std))):
        if isinstance(module, kind):
            return make(module)
    return _composite(module, classes)


def _composite(module, classes):
    """A Twin with the module's plain attributes and the twins of its children."""
    if module._parameters or module._buffers:
        raise TypeError(f"to_torch: {type(module).__name__} holds parameters or buffers of its "
                        f"own; only the layers of ref.nn may")
    twin = _twin_class(type(module), classes["Twin"])()
    for name, value in vars(module).items():
        if not (name.startswith("_") or name == "training" or isinstance(value, (Tensor, Module))):
            setattr(twin, name, value)
    for name, child in module._modules.items():
        twin.add_module(name, _twin(child, classes))
    return twin


def _tensor(array, torch):
    return torch.from_numpy(np.array(ref.asarray(array)))      # a host copy


def _weight_layer(layer, ours, torch):
    """The torch layer with our effective weight (W * M for pruned layers) and bias."""
    with no_grad():
        W = ours.effective_weight().data                                           # (o, c, ...)
    layer.weight = torch.nn.Parameter(_tensor(W, torch))
    if ours.bias is not None:
        layer.bias = torch.nn.Parameter(_tensor(ours.bias.data, torch))
    return layer


def _batch_norm(cls, ours, torch):
    """torch BatchNorm with our eps, momentum, affine parameters and running statistics.
    (A biased_running_var layer's twin updates running_var with the unbiased variance, as
    torch does; its outputs agree, its statistics after a train-mode step do not.)"""
    state = {name: _tensor(t.data, torch) for name, t in
             [*ours._parameters.items(), *ours._buffers.items()] if t is not None}
    layer = cls(ours.num_features, eps=ours.eps, momentum=ours.momentum, affine=ours.affine,
                dtype=state["running_mean"].dtype)
    layer.load_state_dict({**state, "num_batches_tracked": torch.tensor(0)})
    return layer


# ---- from_torch ---------------------------------------------------------------------------------
def from_torch(model, source):
    """Load the PyTorch state dict `source` (module docstring) into `model` in place; returns
    the model. Raises ValueError naming every missing, unexpected or mis-shaped entry (nothing
    is loaded then), and ValueError for a file that is not a readable PyTorch checkpoint."""
    name = repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "the state dict"
    state = _state_dict(source)
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    state = _check_normalize(model, _strip_prefixes(state, own), name)
    renamed = {_our_name(key, own): key for key in state if not IGNORED.search(key)}  # ours: key
    problems = {
        "missing": sorted(set(own) - set(renamed)),
        "unexpected": sorted(renamed[k] for k in set(renamed) - set(own)),
        "shape mismatch": [f"{key}: checkpoint {tuple(state[key].shape)} vs model {own[k].shape}"
                           for k, key in renamed.items()
                           if k in own and tuple(state[key].shape) != own[k].shape]}
    if any(problems.values()):
        raise ValueError(f"cannot load {name} into {type(model).__name__}: " + "; ".join(
            f"{label} ({len(items)}): {', '.join(items)}" for label, items in problems.items()
            if items))
    model.load_state_dict({k: _numpy(state[key]) for k, key in renamed.items()})
    return model


def _state_dict(source):
    """{key: tensor} from a path, a (wrapped) dict or a torch module."""
    torch = _torch()
    if isinstance(source, torch.nn.Module):
        return source.state_dict()
    if isinstance(source, (str, os.PathLike)):
        source = _load_file(os.fspath(source), torch)
    while isinstance(source, Mapping) and any(isinstance(source.get(k), Mapping)
                                              for k in ("state_dict", "model")):
        source = source["state_dict" if isinstance(source.get("state_dict"), Mapping) else "model"]
    if not isinstance(source, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got a "
                         f"{type(source).__name__}")
    bad = sorted(str(k) for k, v in source.items() if not isinstance(v, torch.Tensor))
    if bad or not source:
        raise ValueError("not a state dict: " + (f"entries that are not tensors: {', '.join(bad)}"
                                                 if bad else "it is empty"))
    return dict(source)


def _load_file(path, torch):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:          # torch raises many types for a truncated or foreign file
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint (truncated, or not "
                         f"written by torch.save): {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}") from error


def _strip_prefixes(state, own):
    """Drop DataParallel's "module." from every key that has it, then RobustBench's "model."
    when every key but normalize.* has it and the model has no such names."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    rest = [k for k in state if k not in NORMALIZE_KEYS]
    if all(k.startswith("model.") for k in rest) and not any(k.startswith("model.") for k in own):
        state = {k[len("model."):] if k in rest else k: v for k, v in state.items()}
    return state


def _check_normalize(model, state, name):
    """Remove RobustBench's normalize.mean / .std from state after checking them against the
    model's Normalize (the model option normalize=(mean, std))."""
    saved = [_numpy(state.pop(k)).ravel() for k in NORMALIZE_KEYS if k in state]     # (c,)
    if not saved:
        return state
    layer = getattr(model, "normalize", None)
    ours = None if layer is None else [np.array(layer.mean), np.array(layer.std)]
    if len(saved) != 2 or ours is None or not all(
            a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-7)
            for a, b in zip(saved, ours)):
        raise ValueError(f"{name} normalises its inputs with mean "
                         f"{saved[0].tolist()} and std {saved[-1].tolist()}; build the model "
                         f"with normalize=(mean, std) equal to them (the model has "
                         f"{'none' if ours is None else [o.tolist() for o in ours]})")
    return state


def _our_name(key, own):
    """key itself when the model has it, else the first NAME_RULES rename the model has."""
    if key in own:
        return key
    for pattern, replacement in NAME_RULES:
        renamed = re.sub(pattern, replacement, key)
        if renamed != key and renamed in own:
            return renamed
    return key


def _numpy(tensor):
    """A host numpy copy; half and bfloat16 tensors (no numpy twin) become float64."""
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.element_size() < 4:
        tensor = tensor.double()
    return tensor.numpy().copy()
