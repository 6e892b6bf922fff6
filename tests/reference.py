"""Naive loop definitions of the ops, in float64: the math written out, not an implementation.

Tests compare each ref op (and, through the backend tests, each gpu op) against these.
"""
import numpy as np


# ---- reductions, matrix products, softmax family, losses, batch norm ------------------------
import math  # noqa: E402


def max_grad(x, axes, gy):
    """Gradient of max over `axes` (a tuple): each gy value goes to the first maximal element of
    its slice, scanning the reduced axes in C order; gy has the kept axes of x."""
    kept = [a for a in range(x.ndim) if a not in axes]
    gx = np.zeros_like(x)
    for out in np.ndindex(*[x.shape[a] for a in kept]):
        best, where = -math.inf, None
        for red in np.ndindex(*[x.shape[a] for a in axes]):
            index = [0] * x.ndim
            for a, i in zip(kept, out):
                index[a] = i
            for a, i in zip(axes, red):
                index[a] = i
            if x[tuple(index)] > best:
                best, where = x[tuple(index)], tuple(index)
        gx[where] += gy[out]
    return gx


def matmul(a, b):
    """y[..., i, j] = sum_k a[..., i, k] b[..., k, j], leading axes broadcast."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a, b = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
    y = np.zeros(batch + (a.shape[-2], b.shape[-1]))
    for index in np.ndindex(*y.shape):
        *lead, i, j = index
        y[index] = sum(a[(*lead, i, k)] * b[(*lead, k, j)] for k in range(a.shape[-1]))
    return y


def linear(x, W, b=None):
    """y[n, o] = sum_i x[n, i] W[o, i] + b[o]"""
    y = np.zeros((x.shape[0], W.shape[0]))
    for n in range(x.shape[0]):
        for o in range(W.shape[0]):
            y[n, o] = sum(x[n, i] * W[o, i] for i in range(x.shape[1])) + (0 if b is None else b[o])
    return y


def log_softmax(z, axis=-1):
    """z[j] - log sum_k exp(z[k]) along `axis`, one slice at a time (shifted by the slice max)."""
    moved = np.moveaxis(np.asarray(z, dtype=np.float64), axis, -1)
    y = np.empty_like(moved)
    for index in np.ndindex(*moved.shape[:-1]):
        row = moved[index]
        top = max(row)
        lse = top + math.log(math.fsum(math.exp(v - top) for v in row))
        y[index] = [v - lse for v in row]
    return np.moveaxis(y, -1, axis)


def _reduce(terms, reduction, divisor):
    if reduction == "none":
        return np.array(terms)
    total = math.fsum(np.ravel(terms))
    return total if reduction == "sum" else total / divisor


def cross_entropy(z, labels, reduction="mean"):
    """loss_i = log sum_k exp(z[i, k]) - z[i, labels_i]; mean over samples, sum or none."""
    log_p = log_softmax(z, axis=1)
    losses = [-log_p[i, labels[i]] for i in range(z.shape[0])]
    return _reduce(losses, reduction, z.shape[0])


def kl_div(log_q, p, reduction="mean"):
    """torch.nn.functional.kl_div(log_q, p): terms p (log p - log_q) with 0 log 0 = 0; "mean"
    divides by the number of terms, "batchmean" by the first dimension."""
    terms = np.zeros(np.shape(p))
    for index in np.ndindex(*terms.shape):
        if p[index] != 0:
            terms[index] = p[index] * (math.log(p[index]) - log_q[index])
    divisor = p.shape[0] if reduction == "batchmean" else terms.size
    return _reduce(terms, "mean" if reduction == "batchmean" else reduction, divisor)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, biased_running_var=False):
    """Per channel ch over m = n*h*w values (PyTorch's batch norm). Returns (y, new running_mean,
    new running_var); the running statistics (None allowed when training) are not modified."""
    y = np.empty(x.shape)
    new_mean = None if running_mean is None else np.array(running_mean, dtype=np.float64)
    new_var = None if running_var is None else np.array(running_var, dtype=np.float64)
    for ch in range(x.shape[1]):
        values = np.ravel(x[:, ch])
        m = len(values)
        if training:
            mean = math.fsum(values) / m
            var = math.fsum((v - mean) ** 2 for v in values) / m
            if new_mean is not None:
                new_mean[ch] = (1 - momentum) * new_mean[ch] + momentum * mean
                stat = var if biased_running_var else var * m / (m - 1)
                new_var[ch] = (1 - momentum) * new_var[ch] + momentum * stat
        else:
            mean, var = running_mean[ch], running_var[ch]
        scale = 1 if weight is None else weight[ch]
        shift = 0 if bias is None else bias[ch]
        y[:, ch] = scale * (x[:, ch] - mean) / math.sqrt(var + eps) + shift
    return y, new_mean, new_var


# ---- convolution and pooling (explicit loops over output positions) --------------------------

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d(x, W, b=None, stride=1, padding=0, dilation=1):
    """y[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] x[n, c, r, s],
    r = i sy - ph + p dy, s = j sx - pw + q dx, leaving out the terms whose (r, s) lies outside x
    (in the zero padding)."""
    (sy, sx), (ph, pw), (dy, dx) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    oh = (h + 2 * ph - dy * (kh - 1) - 1) // sy + 1
    ow = (w + 2 * pw - dx * (kw - 1) - 1) // sx + 1
    y = np.zeros((n, o, oh, ow))
    for m, f, i, j in np.ndindex(n, o, oh, ow):
        total = 0.0 if b is None else b[f]
        for ch, p, q in np.ndindex(c, kh, kw):
            r, s = i * sy - ph + p * dy, j * sx - pw + q * dx
            if 0 <= r < h and 0 <= s < w:
                total += W[f, ch, p, q] * x[m, ch, r, s]
        y[m, f, i, j] = total
    return y


def conv2d_input_grad(gy, W, x_shape, stride=1, padding=0, dilation=1):
    """gx[n, c, r, s] = sum of gy[n, o, i, j] W[o, c, p, q] over the (i, j, o, p, q) whose window
    reads x[n, c, r, s] (r = i sy - ph + p dy, s = j sx - pw + q dx): the adjoint of conv2d in x,
    as a scatter loop."""
    (sy, sx), (ph, pw), (dy, dx) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = x_shape
    o, _, kh, kw = W.shape
    gx = np.zeros(x_shape)
    for m, f, i, j in np.ndindex(*gy.shape):
        for ch, p, q in np.ndindex(c, kh, kw):
            r, s = i * sy - ph + p * dy, j * sx - pw + q * dx
            if 0 <= r < h and 0 <= s < w:
                gx[m, ch, r, s] += gy[m, f, i, j] * W[f, ch, p, q]
    return gx


def conv2d_weight_grad(gy, x, W_shape, stride=1, padding=0, dilation=1):
    """gW[o, c, p, q] = sum over n, i, j of gy[n, o, i, j] x[n, c, r, s] with r = i sy - ph + p dy,
    s = j sx - pw + q dx inside x: the adjoint of conv2d in W, as a loop."""
    (sy, sx), (ph, pw), (dy, dx) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    gW = np.zeros(W_shape)
    for m, f, i, j in np.ndindex(*gy.shape):
        for ch, p, q in np.ndindex(*W_shape[1:]):
            r, s = i * sy - ph + p * dy, j * sx - pw + q * dx
            if 0 <= r < h and 0 <= s < w:
                gW[f, ch, p, q] += gy[m, f, i, j] * x[m, ch, r, s]
    return gW


def _pool_windows(x, kernel_size, stride, padding):
    """Yield (m, ch, i, j, [(r, s, inside), ...]) for every pooling window, in row-major order."""
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    sy, sx = _pair(kernel_size if stride is None else stride)
    n, c, h, w = x.shape
    oh, ow = (h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1
    for m, ch, i, j in np.ndindex(n, c, oh, ow):
        cells = [(i * sy - ph + p, j * sx - pw + q) for p in range(kh) for q in range(kw)]
        yield m, ch, i, j, [(r, s, 0 <= r < h and 0 <= s < w) for r, s in cells]


def _pool_output_shape(x, kernel_size, stride, padding):
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    sy, sx = _pair(kernel_size if stride is None else stride)
    n, c, h, w = x.shape
    return n, c, (h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1


def max_pool2d(x, kernel_size, stride=None, padding=0, gy=None):
    """y = max over each window (padding never wins). With gy, also returns gx: each gy value goes
    to the first maximal input of its window, scanning the window row by row."""
    y = np.zeros(_pool_output_shape(x, kernel_size, stride, padding))
    gx = np.zeros(x.shape)
    for m, ch, i, j, cells in _pool_windows(x, kernel_size, stride, padding):
        best, where = -math.inf, None
        for r, s, inside in cells:
            if inside and x[m, ch, r, s] > best:
                best, where = x[m, ch, r, s], (m, ch, r, s)
        y[m, ch, i, j] = best
        if gy is not None:
            gx[where] += gy[m, ch, i, j]
    return y if gy is None else (y, gx)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """y = sum of the window's inputs / (kh kw): padded cells count as zeros (count_include_pad)."""
    kh, kw = _pair(kernel_size)
    y = np.zeros(_pool_output_shape(x, kernel_size, stride, padding))
    for m, ch, i, j, cells in _pool_windows(x, kernel_size, stride, padding):
        y[m, ch, i, j] = math.fsum(x[m, ch, r, s] for r, s, inside in cells if inside) / (kh * kw)
    return y


def adaptive_avg_pool2d(x, output_size):
    """y[n, c, i, j] = mean of x[n, c, rows i, columns j], rows i = floor(i h/oh):ceil((i+1) h/oh)
    (columns likewise)"""
    oh, ow = _pair(output_size)
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    for m, ch, i, j in np.ndindex(n, c, oh, ow):
        r0, r1 = math.floor(i * h / oh), math.ceil((i + 1) * h / oh)
        s0, s1 = math.floor(j * w / ow), math.ceil((j + 1) * w / ow)
        y[m, ch, i, j] = np.mean(x[m, ch, r0:r1, s0:s1])
    return y
