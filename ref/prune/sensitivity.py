"""Measurements of a pruned network: layer sensitivity, compression, channels still present, and
the per-layer statistics of the kept weights that the sparsity paper plots.

Notation: W_eff = W * M the effective weight of a prunable layer (ref.prune.masks), a weight
"kept" when W_eff != 0; for a conv W (o, c, kh, kw) a kernel is one W[j, i] (kh, kw), a filter
one W[j] (c, kh, kw).

    compression_ratio     prunable weights / kept weights            (10 at 90% sparsity)
    channels_present      filters with at least one kept weight / filters   (DNR's measure)
    kernel_kept_counts    counts[v] = #kernels with exactly v kept weights, v = 0 .. kh kw
    kept_per_channel      kept weights per output channel (o,) and per input channel (c,)
    magnitude_histogram   counts of log10 |W_eff| over the kept weights, fixed bin edges
    layer_sensitivity     prune one layer alone by a fraction (LUP rule) and measure the drop
                          of clean and robust accuracy (DNR Fig. 2b); the layer is restored
"""
import numpy as np

import ref
from ref.prune.budgets import check_keep
from ref.prune.magnitude import lup_masks
from ref.prune.masks import MASK, apply_masks, effective_weights, prunable_layers, set_mask


def compression_ratio(report):
    """Prunable weights / kept weights of a ref.prune.sparsity() report."""
    g = report["global"]
    return g["size"] / g["kept"] if g["kept"] else float("inf")


def channels_present(model, **selection):
    """{"layers": {name: fraction of output channels with a kept weight}, "global": fraction over
    all prunable layers' output channels}."""
    layers, present, total = {}, 0, 0
    for name, W in effective_weights(model, **selection).items():
        alive = int(ref.asarray(W.reshape(W.shape[0], -1).astype(bool).any(axis=1)).sum())
        layers[name] = alive / W.shape[0]
        present, total = present + alive, total + W.shape[0]
    return {"layers": layers, "global": present / total}


def kernel_kept_counts(W):
    """counts (kh kw + 1,): counts[v] = number of kernels W[j, i] with exactly v kept weights."""
    o, c, kh, kw = W.shape
    kept = ref.asarray(W.reshape(o * c, kh * kw).astype(bool).sum(axis=1))             # (o c,)
    return np.bincount(kept, minlength=kh * kw + 1)                                # (kh kw + 1,)


def kept_per_channel(W):
    """(kept per output channel (o,), kept per input channel (c,)) of a conv or linear weight."""
    kept = ref.asarray(W.astype(bool))                                             # (o, c, ...)
    per_out = kept.reshape(kept.shape[0], -1).sum(axis=1)                          # (o,)
    per_in = kept.sum(axis=(0,) + tuple(range(2, kept.ndim)))                      # (c,)
    return per_out, per_in


HISTOGRAM_EDGES = np.linspace(-6, 1, 36)   # log10 |w| from 1e-6 to 10, 0.2 decades a bin


def magnitude_histogram(W, edges=HISTOGRAM_EDGES):
    """counts (len(edges) - 1,) of log10 |w| over the kept weights (values outside the edges
    go to the first or last bin)."""
    a = np.abs(ref.asarray(W)).ravel()
    logs = np.log10(a[a > 0])                                                      # (kept,)
    return np.histogram(np.clip(logs, edges[0], edges[-1]), edges)[0]


def layer_statistics(model, **selection):
    """{name: {kind, shape, magnitude_histogram, kept_per_output, kept_per_input and, for a conv,
    kernel_kept_counts}} as plain lists (for report.json and the plots)."""
    stats = {}
    layers = prunable_layers(model, **selection)
    for name, W in effective_weights(model, **selection).items():
        per_out, per_in = kept_per_channel(W)
        entry = dict(shape=list(W.shape), magnitude_histogram=magnitude_histogram(W).tolist(),
                     kept_per_output=per_out.tolist(), kept_per_input=per_in.tolist())
        if W.ndim == 4:
            entry["kernel_kept_counts"] = kernel_kept_counts(W).tolist()
        stats[name] = dict(kind=type(layers[name]).__name__, **entry)
    return {"histogram_edges": HISTOGRAM_EDGES.tolist(), "layers": stats}


def layer_sensitivity(model, measure, fraction, names=None):
    """Prune each named layer alone (the LUP rule at keep = 1 - fraction on its effective weight,
    so on top of any mask it has: the pruned positions are zeros, which the rule drops first),
    call measure(model) -> {metric: value}, and restore the layer exactly.

    Returns {"base": measure(unpruned), "layers": {name: {metric: value, metric_drop:
    base - value}}}; names defaults to every prunable layer.
    """
    keep = check_keep(1 - fraction, "1 - fraction")
    base = measure(model)
    layers = prunable_layers(model)
    results = {}
    for name in names or list(layers):
        layer = layers[name]
        saved_W, saved_mask = layer.weight.data.copy(), layer._buffers.get(MASK)  # (W.shape)
        apply_masks(model, lup_masks({name: effective_weights(model)[name]}, keep))
        try:
            values = measure(model)
        finally:
            layer.weight.data = saved_W
            set_mask(layer, saved_mask)
        results[name] = {**values, **{f"{k}_drop": base[k] - v for k, v in values.items()}}
    return {"base": base, "fraction": fraction, "layers": results}
