"""2-D convolution (cross-correlation, as torch.nn.functional.conv2d) by im2col + matrix products.

Notation: n batch, c input channels, h w input size, o output channels, kh kw kernel size,
sy sx stride, ph pw zero padding, dy dx dilation, oh ow output size, hp = h + 2 ph, wp = w + 2 pw;
x (n, c, h, w)  W (o, c, kh, kw)  b (o,)  y (n, o, oh, ow); a g prefix marks a gradient.

    y[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] xpad[n, c, i sy + p dy, j sx + q dx]
    oh = (h + 2 ph - dy (kh - 1) - 1) // sy + 1                    (ow likewise)

Layout: the columns are built channels-last, so an im2col row (the window under one output pixel,
ordered p, q, c) is made of runs of c values; the im2col kernel reads x in either memory order
through its strides and writes zeros for the padding, so no padded copy of x is made. The products
leave y and gx channels-last too, and the op returns (n, c, h, w) views of that memory (as torch's
channels_last format): the batch norm, relu and add that follow keep the order, so the next conv
reads its input, and its gy, without a transpose.
With cols (n oh ow, kh kw c), Wm (o, kh kw c) = W reordered to (o, p, q, c), yN the output as
(n oh ow, o) rows and gyN its gradient likewise:

    yN = cols Wm^T + b,    gWm = gyN^T cols,    gcols = gyN Wm,    gx = col2im(gcols),
    gb = sum_{n, i, j} gy

where col2im adds each window's gradient back onto the pixels it was read from. With stride 1
(and ph <= dy (kh - 1), pw <= dx (kw - 1), as in every 'same' conv) gx is instead the correlation
of gy, padded by P = dy (kh - 1) - ph and Q = dx (kw - 1) - pw, with the flipped kernel: again an
im2col and one product, without col2im's scattered adds; the same columns of gy give gW from x
channels-last, xN (n h w, c), with no im2col of x:

    gx[n, c, i, j] = sum_{o, p, q} W[o, c, kh-1-p, kw-1-q] gypad[n, o, i + p dy, j + q dx]
    gW[o, c, kh-1-p, kw-1-q] = sum_{n, i, j} xN[n, i, j, c] gypad[n, o, i + p dy, j + q dx]

im2col and col2im are kernels (gpu/kernels/conv.cu) on a 2-D grid (channels x rows), with the
padding inside: im2col a gather with one thread per (output pixel, channel), col2im a gather with
one thread per (input pixel, channel) writing the unpadded gx; the products go to cuBLAS through
cupy.matmul. Launches per conv (one chunk): forward the weight reorder Wm (a copy, none for a 1x1
kernel), im2col (none for a 1x1 stride-1 conv of channels-last x) and the product (+ bias);
backward the weight reorder, one or two products, im2col or col2im, the gW reorder and the bias
sum.

Memory: the batch goes through in chunks of m images holding about CHUNK_BYTES of columns, so the
column buffer is never built for a whole large batch (288 MiB for a 64 -> 64 channel 3x3 conv at
32x32, batch 128: 9x the input). The chunk is larger than ref's cache-sized one, because larger
products use a GPU better. Backward rebuilds each chunk's columns from x, which the graph keeps
alive anyway, instead of saving them (ResNet-18 at batch 128 would otherwise hold ~2 GiB of
columns). Forward keeps x only when W needs a gradient and W only when x needs one (an attack's
input gradient needs no columns at all).
"""
from gpu import cupy as cp
from gpu.kernels import channel_block, launch
from ref.ops.conv import Conv2d as _RefConv2d
from ref.ops.conv import check_input, out_size, pair  # noqa: F401 (shared with ref, as its API)
from ref.tensor import Op

CHUNK_BYTES = 256 * 2 ** 20  # column buffer size per chunk of images (at least one image)


def im2col(x, kh, kw, sy, sx, ph, pw, dy, dx):
    """cols[n, i, j, p, q, c] = x[n, c, i sy + p dy - ph, j sx + q dx - pw] (0 outside x).

    x (m, c, h, w) in either memory order -> cols (m, oh, ow, kh, kw, c), contiguous, by the
    im2col kernel; x's channels-last memory itself (no launch) for a 1x1 kernel with stride 1
    and no padding.
    """
    m, c, h, w = x.shape
    oh, ow = out_size(h, kh, sy, ph, dy), out_size(w, kw, sx, pw, dx)
    if (kh, kw, sy, sx, ph, pw) == (1, 1, 1, 1, 0, 0) and is_channels_last(x):
        return x.transpose(0, 2, 3, 1)[:, :, :, None, None, :]            # (m, oh, ow, 1, 1, c)
    cols = cp.empty((m, oh, ow, kh, kw, c), dtype=x.dtype)               # (m, oh, ow, kh, kw, c)
    memory, strides = _memory_and_strides(x)
    rows = _rows(m * oh * ow, kh * kw * c)
    launch("conv.cu", "im2col", x.dtype, (c, rows), (memory, cols, *strides,
           *_ints(h, w, c, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow, rows)), block=channel_block(c))
    return cols


def col2im(gcols, h, w, sy, sx, ph, pw, dy, dx, out):
    """The adjoint of im2col, into out (m, h, w, c) contiguous: out[n, r, s, c] = the sum of
    gcols[n, i, j, p, q, c] over r + ph = i sy + p dy, s + pw = j sx + q dx, by the col2im
    kernel (a gather: each element of out sums the column entries that read it)."""
    m, oh, ow, kh, kw, c = gcols.shape
    rows = _rows(m * h * w, kh * kw * c)
    launch("conv.cu", "col2im", gcols.dtype, (c, rows), (cp.ascontiguousarray(gcols), out,
           *_ints(h, w, c, kh, kw, sy, sx, ph, pw, dy, dx, oh, ow, rows)), block=channel_block(c))
    return out


def is_channels_last(x):
    """Whether x (n, c, h, w) is a view of contiguous NHWC memory (as conv2d returns)."""
    return x.transpose(0, 2, 3, 1).flags.c_contiguous


def _memory_and_strides(x):
    """(contiguous memory, element strides of its n, h, w, c axes) of x (n, c, h, w): x's own
    memory when it is NHWC or NCHW contiguous, else a contiguous copy."""
    n, c, h, w = x.shape
    if is_channels_last(x):
        return x.transpose(0, 2, 3, 1), _longs(h * w * c, w * c, c, 1)
    x = cp.ascontiguousarray(x)                                           # (n, c, h, w)
    return x, _longs(c * h * w, w, 1, h * w)


def _rows(rows, width):
    """rows, checked so that the kernels' int arithmetic cannot overflow."""
    if rows * width >= 2 ** 31:
        raise ValueError(f"conv2d: one chunk of images needs {rows * width} column entries, "
                         f"more than the 2^31 the kernels index (chunks hold one image or "
                         f"CHUNK_BYTES of columns); use smaller images or fewer channels")
    return rows


def _ints(*values):
    return tuple(cp.int32(v) for v in values)


def _longs(*values):
    return tuple(cp.int64(v) for v in values)


class Conv2d(Op):
    """y[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] xpad[n, c, i sy + p dy, j sx + q dx]

    gx = col2im(gyN Wm),  gW = gyN^T cols reordered to (o, c, kh, kw),  gb = sum_{n, i, j} gy
    (stride 1: gx and gW from the columns of gy; see the module docstring)
    """

    def forward(self, x, W, b=None, stride=1, padding=0, dilation=1):
        self._check(x, W, b)
        n, c, h, w = x.shape
        o, _, kh, kw = W.shape
        self.sy, self.sx = pair(stride, "stride", 1)
        self.ph, self.pw = pair(padding, "padding", 0)
        self.dy, self.dx = pair(dilation, "dilation", 1)
        oh = out_size(h, kh, self.sy, self.ph, self.dy)
        ow = out_size(w, kw, self.sx, self.pw, self.dx)
        if oh < 1 or ow < 1:
            raise ValueError(f"conv2d: output size ({oh}, {ow}) < 1 for input ({h}, {w}), kernel "
                             f"({kh}, {kw}), stride {stride}, padding {padding}, "
                             f"dilation {dilation}")
        self.x_shape, self.W_shape = x.shape, W.shape
        self.step = max(1, CHUNK_BYTES // (oh * ow * kh * kw * c * x.itemsize))  # m images
        Wm = W.transpose(0, 2, 3, 1).reshape(o, kh * kw * c)                     # (o, kh*kw*c)
        yN = cp.empty((n, oh, ow, o), dtype=x.dtype)                             # (n, oh, ow, o)
        for a in range(0, n, self.step):
            rows = yN[a:a + self.step].reshape(-1, o)                            # (m*oh*ow, o)
            cp.matmul(self._cols(x[a:a + self.step]), Wm.T, out=rows)
            if b is not None:
                rows += b
        self.x = x if self.needs_grad[1] else None                               # for gW's columns
        self.W = W if self.needs_grad[0] else None                               # for gx
        return yN.transpose(0, 3, 1, 2)                                          # (n, o, oh, ow)

    def backward(self, gy):                                                      # gy (n, o, oh, ow)
        want_gx, want_gW, want_gb = self.needs_grad
        gy_padding = self._gy_padding() if want_gx else None
        if gy_padding is None:
            gx, gW = self._backward_col2im(gy, want_gx, want_gW)
        else:
            gx, gW = self._backward_correlation(gy, gy_padding, want_gW)
        gb = gy.sum(axis=(0, 2, 3)) if want_gb else None                           # (o,)
        return gx, None if gW is None else cp.ascontiguousarray(gW), gb

    def _gy_padding(self):
        """(P, Q) when gx is the correlation of gy padded by P, Q with the flipped kernel (stride
        1 and P = dy (kh - 1) - ph >= 0, Q = dx (kw - 1) - pw >= 0), else None (col2im)."""
        kh, kw = self.W_shape[2:]
        P, Q = self.dy * (kh - 1) - self.ph, self.dx * (kw - 1) - self.pw
        return (P, Q) if (self.sy, self.sx) == (1, 1) and P >= 0 and Q >= 0 else None

    def _backward_col2im(self, gy, want_gx, want_gW):
        """gx = col2im(gyN Wm), gWm = gyN^T cols, chunk by chunk."""
        n, c, h, w = self.x_shape
        o, _, kh, kw = self.W_shape
        oh, ow = gy.shape[2:]
        gxN = cp.empty((n, h, w, c), dtype=gy.dtype) if want_gx else None          # (n, h, w, c)
        gWm = None                                                                 # (o, kh*kw*c)
        Wm = self.W.transpose(0, 2, 3, 1).reshape(o, kh * kw * c) if want_gx else None
        for a in range(0, n, self.step):
            chunk = slice(a, a + self.step)
            gyN = cp.ascontiguousarray(gy[chunk].transpose(0, 2, 3, 1))          # (m, oh, ow, o)
            gyN = gyN.reshape(-1, o)                                               # (m*oh*ow, o)
            if want_gW:
                gWm = _accumulate(gWm, gyN.T, self._cols(self.x[chunk]))           # (o, kh*kw*c)
            if want_gx:
                gcols = (gyN @ Wm).reshape(-1, oh, ow, kh, kw, c)           # (m, oh, ow, kh, kw, c)
                col2im(gcols, h, w, self.sy, self.sx, self.ph, self.pw, self.dy, self.dx,
                       out=gxN[chunk])                                             # (m, h, w, c)
        gx = gxN.transpose(0, 3, 1, 2) if want_gx else None                        # (n, c, h, w)
        gW = gWm.reshape(o, kh, kw, c).transpose(0, 3, 1, 2) if want_gW else None  # (o, c, kh, kw)
        return gx, gW

    def _backward_correlation(self, gy, gy_padding, want_gW):
        """Stride 1: with gcols the im2col of gy padded by gy_padding and Wt the flipped kernel,
        gx = gcols Wt and gWt = xN^T gcols (xN: x channels-last), in chunks of m images holding
        about CHUNK_BYTES of gcols (o / c times x's columns, so its own chunk size)."""
        n, c, h, w = self.x_shape
        o, _, kh, kw = self.W_shape
        step = max(1, CHUNK_BYTES // (h * w * kh * kw * o * gy.itemsize))          # m images
        Wt = self.W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)                       # (kh, kw, o, c)
        Wt = Wt.reshape(kh * kw * o, c)                                            # (kh*kw*o, c)
        gxN = cp.empty((n, h, w, c), dtype=gy.dtype)                               # (n, h, w, c)
        gWt = None                                                                 # (c, kh*kw*o)
        for a in range(0, n, step):
            chunk = slice(a, a + step)
            gcols = im2col(gy[chunk], kh, kw, 1, 1, *gy_padding, self.dy, self.dx)
            gcols = gcols.reshape(-1, kh * kw * o)                               # (m*h*w, kh*kw*o)
            cp.matmul(gcols, Wt, out=gxN[chunk].reshape(-1, c))                   # (m*h*w, c)
            if want_gW:
                xN = self.x[chunk].transpose(0, 2, 3, 1).reshape(-1, c)            # (m*h*w, c)
                gWt = _accumulate(gWt, xN.T, gcols)                                # (c, kh*kw*o)
        gx = gxN.transpose(0, 3, 1, 2)                                             # (n, c, h, w)
        if not want_gW:
            return gx, None
        gW = gWt.reshape(c, kh, kw, o)[:, ::-1, ::-1, :].transpose(3, 0, 1, 2)  # (o, c, kh, kw)
        return gx, gW

    def _cols(self, x):
        """im2col of a chunk of x (m, c, h, w) as a matrix (m*oh*ow, kh*kw*c)."""
        kh, kw = self.W_shape[2:]
        cols = im2col(x, kh, kw, self.sy, self.sx, self.ph, self.pw, self.dy,
                      self.dx)                                           # (m, oh, ow, kh, kw, c)
        return cols.reshape(-1, kh * kw * x.shape[1])                    # (m*oh*ow, kh*kw*c)

    _check = staticmethod(_RefConv2d._check)


def _accumulate(total, a, b):
    """a @ b, added to total unless total is None (the first chunk: no zero fill, no add)."""
    if total is None:
        return a @ b
    total += a @ b
    return total


def conv2d(x, W, b=None, stride=1, padding=0, dilation=1):
    """torch.nn.functional.conv2d: x (n, c, h, w), W (o, c, kh, kw), b (o,) or None;
    stride, padding, dilation: an int or a pair (rows, columns)."""
    return Conv2d.apply(x, W, b, stride=stride, padding=padding, dilation=dilation)
