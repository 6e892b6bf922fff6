"""HDF5 checkpoints (h5py) of a model, its optimizer and arbitrary extras.

Layout of one file:

    /               attrs: format, format_version, model_class ("module.QualName") and
                    optimizer_class when an optimizer was saved
    /parameters     one dataset per parameter, named by its dotted path ("layer1.0.conv1.weight")
    /buffers        one dataset per buffer (BatchNorm statistics, masks, ...)
    /optimizer      arrays of optimizer.state_dict() as datasets, its other entries (lr, step,
                    ...) as JSON attributes
    /extra          array extras as datasets, a dict holding arrays as a subgroup (recursively),
                    every other extra (dicts, lists, numbers, strings, a numpy Generator's
                    bit_generator.state) as a JSON attribute; tuples come back as lists,
                    nested numpy values as Python values

Arrays are written from the host (`ref.asarray`) with their dtype, so a round trip is bit-exact
and a checkpoint written on one backend loads on the other. A save goes to a temporary file in
the same directory, is fsync'ed and then renamed over the target, so an interrupted save leaves
the previous checkpoint intact
(a killed process may leave "<path>.tmp<pid>" behind).
"""
import json
import os

import h5py
import numpy as np

import ref
from ref.tensor import Tensor

FORMAT = "robustprune-checkpoint"
FORMAT_VERSION = 1


def save(path, model, optimizer=None, **extra):
    """Write model parameters and buffers, optimizer state and `extra` to `path` atomically."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        # v108 or later stores attributes above 64 KiB (long JSON histories) densely
        with h5py.File(tmp, "w", libver=("v108", "latest")) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["model_class"] = _class_name(model)
            _write(f.create_group("parameters"),
                   {name: p.data for name, p in model.named_parameters()})
            _write(f.create_group("buffers"), {name: b.data for name, b in model.named_buffers()})
            if optimizer is not None:
                f.attrs["optimizer_class"] = _class_name(optimizer)
                _write(f.create_group("optimizer"), optimizer.state_dict())
            _write(f.create_group("extra"), extra)
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def load(path, model, optimizer=None):
    """Load a checkpoint into `model` (and `optimizer`); return the dict of extras.

    Parameters and buffers go through model.load_state_dict, which converts them to the model's
    backend and dtype and raises KeyError (missing / unexpected names) or ValueError (shapes)
    naming the entries.
    """
    saved = read(path)
    state = {**saved["parameters"], **saved["buffers"]}
    try:
        model.load_state_dict(state)
        if optimizer is not None:
            if "optimizer" not in saved:
                raise KeyError("it holds no optimizer state")
            optimizer.load_state_dict(saved["optimizer"])
    except (KeyError, ValueError) as error:
        raise type(error)(f"checkpoint {path!r}: {error.args[0]}") from error
    return saved["extra"]


def read(path):
    """The whole checkpoint as plain dicts of numpy arrays and JSON values, without a model:
    {"attrs", "parameters", "buffers", "extra"} and "optimizer" if one was saved."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with h5py.File(path, "r") as f:
            attrs = {key: _scalar(value) for key, value in f.attrs.items()}
            if attrs.get("format") != FORMAT:
                raise ValueError(f"format attribute is {attrs.get('format')!r}, not {FORMAT!r}")
            if attrs["format_version"] > FORMAT_VERSION:
                raise ValueError(f"format_version {attrs['format_version']} is newer than "
                                 f"this reader's {FORMAT_VERSION}")
            saved = {"attrs": attrs}
            saved.update((name, _read(f[name])) for name in ("parameters", "buffers", "extra"))
            if "optimizer" in f:
                saved["optimizer"] = _read(f["optimizer"])
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path!r} is not a valid checkpoint: {error}") from error
    return saved


def _write(group, entries):
    """Arrays (numpy or cupy) as datasets, a dict holding arrays as a subgroup (recursively),
    every other value as a JSON attribute."""
    for key, value in entries.items():
        if not isinstance(key, str) or "/" in key or not key:
            raise ValueError(f"{group.name}: name {key!r} must be a non-empty string without '/'")
        if _is_array(value):
            group.create_dataset(key, data=ref.asarray(value))
        elif isinstance(value, dict) and any(_is_array(v) or isinstance(v, dict)
                                             for v in value.values()):
            _write(group.create_group(key), value)
        else:
            try:
                group.attrs[key] = json.dumps(value, default=_to_json)
            except TypeError as error:
                raise TypeError(f"{group.name}: {key!r} is neither an array nor "
                                f"JSON-serialisable: {error}") from error


def _read(group):
    entries = {key: _read(item) if isinstance(item, h5py.Group) else np.asarray(item[()])
               for key, item in group.items()}
    entries.update((key, json.loads(value)) for key, value in group.attrs.items())
    return entries


def _is_array(value):
    """numpy or cupy arrays: anything with shape and dtype but a numpy scalar or a Tensor (whose
    .data is the array to save)."""
    return (hasattr(value, "shape") and hasattr(value, "dtype")
            and not isinstance(value, (np.generic, Tensor)))


def _to_json(value):
    """numpy scalars and arrays nested in extras (an MT19937 state key) become Python values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def _class_name(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _fsync_directory(directory):
    """Make the rename durable (POSIX; directories cannot be opened on Windows)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
