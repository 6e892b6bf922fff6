"""CROWN-IBP: a linear lower bound of the margins, propagated backwards from the specification
with the IBP bounds of every ReLU input (Zhang et al. 2020; HYDRA crown/bound_layers.py), and
the verified accuracy.

Notation: n batch, k classes (k specification rows), A (n, k, ...) the coefficients of the bound
over a layer's output, acc (n, k) the constant collected so far. Starting from A = C
(C[n, j] = e_y - e_j, ibp.margin_spec) at the logits, every layer is walked in reverse so that
A . output + acc <= the margins holds for the layer's input:

    Linear     acc += A b,                  A <- A W
    Conv2d     acc += sum_{h, w}(A) . b,    A <- conv_transpose2d(A, W)   (conv_transpose)
    ReLU       with the input's IBP bounds (l, u), l- = min(l, 0), u+ = max(u, 0, l- + 1e-8):
               d_up = u+ / (u+ - l-), b_up = -l- d_up, d_lo = 1[d_up > 0.5] (adaptive lower slope)
               acc += min(A, 0) . b_up,     A <- d_up min(A, 0) + d_lo max(A, 0)
    Flatten    A reshaped to the input's shape;  Identity: nothing
    Normalize  (x - m) / s:  acc -= A . m / s,  A <- A / s

and at the input box (center mu0, radius r0):  lb = A . mu0 - |A| . r0 + acc  (n, k).
Row y of C is 0, so lb[:, y] = 0. Every slope and bound is a differentiable Tensor expression
(d_lo is a constant), as in the reference.
"""
from ref.certify.ibp import check_eps, ibp_margins
from ref.models.common import Normalize
from ref.nn.layers import Conv2d, Flatten, Linear, ReLU
from ref.tensor import no_grad

METHODS = ("ibp", "crown-ibp")


def conv_transpose(A, layer, W, size):
    """The adjoint of the layer's convolution without bias, A' (m, c, h, w) from A (m, o, oh, ow):
    <A', x> = <A, conv2d(x, W)> for every x of spatial size `size` = (h, w) (torch's
    conv_transpose2d with output_padding h - ((oh - 1) sy - 2 ph + dy (kh - 1) + 1)).

    Made of existing ops: sy - 1 zero rows (sx - 1 zero columns) inserted after every row
    (column) of A, the result padded by P = dy (kh - 1) - ph before and h + ph - oh sy after (a
    negative width crops), then correlated with the flipped kernel, stride 1:

        A'[m, c, i, j] = sum_{o, p, q} W[o, c, kh-1-p, kw-1-q] Apad[m, o, i + p dy, j + q dx]
    """
    ops = A.ops
    m, o, oh, ow = A.shape
    (sy, sx), (ph, pw), (dy, dx) = layer.stride, layer.padding, layer.dilation
    kh, kw = W.shape[2:]
    h, w = size
    if (sy, sx) != (1, 1):
        A = A.reshape(m, o, oh, 1, ow, 1)                                   # (m, o, oh, 1, ow, 1)
        A = ops.pad(A, ((0, 0), (0, 0), (0, 0), (0, sy - 1), (0, 0), (0, sx - 1)))
        A = A.reshape(m, o, oh * sy, ow * sx)                               # (m, o, oh sy, ow sx)
    A = pad_or_crop(A, (dy * (kh - 1) - ph, h + ph - oh * sy),
                    (dx * (kw - 1) - pw, w + pw - ow * sx))         # (m, o, h + dy(kh-1), ...)
    Wt = ops.transpose(W[:, :, ::-1, ::-1], (1, 0, 2, 3))                   # (c, o, kh, kw)
    return ops.conv2d(A, Wt, None, dilation=(dy, dx))                       # (m, c, h, w)


def pad_or_crop(A, rows, columns):
    """A (m, o, a, b) with (before, after) = rows zero rows added (removed where negative), and
    likewise columns."""
    widths = (rows, columns)
    if max(rows + columns) > 0:
        A = A.ops.pad(A, ((0, 0), (0, 0)) + tuple((max(a, 0), max(b, 0)) for a, b in widths))
    if min(rows + columns) < 0:
        crop = tuple(slice(max(-a, 0), size - max(-b, 0))
                     for (a, b), size in zip(widths, A.shape[2:]))
        A = A[(slice(None), slice(None)) + crop]
    return A


def relu_relaxation(lower, upper):
    """(d_up, b_up, d_lo) of the ReLU's linear bounds d_lo x <= relu(x) <= d_up x + b_up on
    [l, u] (module docstring); d_up, b_up Tensors, d_lo a constant array, all of l's shape."""
    ops = lower.ops
    l_neg = -ops.relu(-lower)                                              # min(l, 0)
    floor = l_neg + 1e-8
    u_pos = floor + ops.relu(ops.relu(upper) - floor)                      # max(u, 0, l- + 1e-8)
    d_up = u_pos / (u_pos - l_neg)
    b_up = -l_neg * d_up
    d_lo = (d_up.data > 0.5).astype(d_up.dtype)
    return d_up, b_up, d_lo


def dot(A, a):
    """sum over the feature axes of A (n, k, ...) * a (n or 1, 1, ...) -> (n, k)"""
    n, k = A.shape[:2]
    return (A * a).reshape(n, k, -1).sum(axis=2)


def backward_bound(layers, trace, C):
    """lb (n, k): the CROWN-IBP lower bound of C z over the input box trace[0] (module
    docstring); trace: every layer's input (l, u) from ibp.interval_pass."""
    A, acc = C, 0                                                          # (n, k, k)
    for layer, (lower, upper) in zip(reversed(layers), reversed(trace)):
        n, k = A.shape[:2]
        if isinstance(layer, (Linear, Conv2d)):
            W = layer.effective_weight()
            if layer.bias is not None:
                spatial = A.sum(axis=(3, 4)) if isinstance(layer, Conv2d) else A   # (n, k, o)
                acc = acc + (spatial * layer.bias).sum(axis=2)
            if isinstance(layer, Linear):
                A = A.ops.matmul(A, W)                                     # (n, k, c)
            else:
                A = conv_transpose(A.reshape(n * k, *A.shape[2:]), layer, W, lower.shape[2:])
                A = A.reshape(n, k, *lower.shape[1:])                      # (n, k, c, h, w)
        elif isinstance(layer, ReLU):
            d_up, b_up, d_lo = relu_relaxation(lower, upper)               # (n, ...)
            d_up, b_up = d_up.reshape(n, 1, *d_up.shape[1:]), b_up.reshape(n, 1, *b_up.shape[1:])
            A_pos = A.ops.relu(A)
            A_neg = A - A_pos
            acc = acc + dot(A_neg, b_up)
            A = d_up * A_neg + A_pos * d_lo.reshape(d_up.shape)            # (n, k, ...)
        elif isinstance(layer, Flatten):
            A = A.reshape(n, k, *lower.shape[1:])
        elif isinstance(layer, Normalize):
            shape = (1, 1, -1) + (1,) * (lower.ndim - 2)
            mean = A.xp.asarray(layer.mean, dtype=A.dtype).reshape(shape)  # (1, 1, c, 1, 1)
            std = A.xp.asarray(layer.std, dtype=A.dtype).reshape(shape)    # (1, 1, c, 1, 1)
            acc = acc - dot(A, mean / std)
            A = A / std
    lower, upper = trace[0]
    n, k = A.shape[:2]
    mu, r = (upper + lower) * 0.5, (upper - lower) * 0.5                  # (n, ...)
    shape = (n, 1) + mu.shape[1:]
    return dot(A, mu.reshape(shape)) - dot(A.ops.abs(A), r.reshape(shape)) + acc


def mixed_margin_lower_bounds(model, x, y, eps, beta, clip=True):
    """beta lb_CROWN-IBP + (1 - beta) lb_IBP (n, k), both from one interval pass; IBP alone
    when beta < 1e-5 (the reference's rule), CROWN-IBP alone when beta == 1."""
    if not 0 <= beta <= 1:
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
    lb_ibp, layers, trace, C = ibp_margins(model, x, y, eps, clip)
    if beta < 1e-5:
        return lb_ibp
    lb_crown = backward_bound(layers, trace, type(lb_ibp)(C))
    return lb_crown if beta == 1 else lb_crown * beta + lb_ibp * (1 - beta)


def margin_lower_bounds(model, x, y, eps, method="ibp", clip=True):
    """(n, k) Tensor of lower bounds of z_y - z_j over the eps-box around x (0 at j = y), by
    IBP ("ibp") or CROWN-IBP ("crown-ibp"); the box clipped as ibp.input_box says."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return mixed_margin_lower_bounds(model, x, y, eps, float(method == "crown-ibp"), clip)


def verified_accuracy(model, x, y, eps, method="ibp", clip=True, batch_size=256):
    """The fraction of samples whose every margin lower bound (j != y) is > 0: certified robust
    at l-inf radius eps; no graph is built."""
    check_eps(eps)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    count = 0
    with no_grad():
        for a in range(0, len(y), batch_size):
            lb = margin_lower_bounds(model, x[a:a + batch_size], y[a:a + batch_size], eps,
                                     method, clip)                        # (m, k)
            count += int(certified_rows(lb, y[a:a + batch_size]).sum())
    return count / max(len(y), 1)


def certified_rows(lb, y):
    """Boolean array (n,) from the Tensor lb (n, k): lb[i, j] > 0 for every j != y_i."""
    xp = lb.xp
    y = xp.asarray(y)
    others = xp.arange(lb.shape[1])[None, :] != y[:, None]                # (n, k)
    return ((lb.data > 0) | ~others).all(axis=1)                          # (n,)
