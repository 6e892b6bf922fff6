"""2-D convolution (cross-correlation, as torch.nn.functional.conv2d) by im2col + matrix products.

Notation: n batch, c input channels, h w input size, o output channels, kh kw kernel size,
sy sx stride, ph pw zero padding, dy dx dilation, oh ow output size, hp = h + 2 ph, wp = w + 2 pw;
x (n, c, h, w)  W (o, c, kh, kw)  b (o,)  y (n, o, oh, ow); a g prefix marks a gradient.

    y[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] xpad[n, c, i sy + p dy, j sx + q dx]
    oh = (h + 2 ph - dy (kh - 1) - 1) // sy + 1                    (ow likewise)

Layout: inside the op the input is channels-last and padded, xpad (n, hp, wp, c), so an im2col row
(the window under one output pixel, ordered p, q, c) is made of contiguous runs of c values.
The products leave y and gx channels-last too, and the op returns (n, c, h, w) views of that memory
(as torch's channels_last format): the batch norm, relu and add that follow keep the order, so the
next conv reads its input, and its gy, without a transpose.
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

im2col and col2im are kernels (gpu/kernels/conv.cu): im2col a gather with one thread per column
element, col2im a gather with one thread per input element; the products go to cuBLAS through
cupy.matmul.

Memory: the batch goes through in chunks of m images holding about CHUNK_BYTES of columns, so the
column buffer is never built for a whole large batch (288 MiB for a 64 -> 64 channel 3x3 conv at
32x32, batch 128: 9x the input). The chunk is larger than ref's cache-sized one, because larger
products use a GPU better. Backward rebuilds each chunk's columns from x, which the graph keeps
alive anyway, instead of saving them (ResNet-18 at batch 128 would otherwise hold ~2 GiB of
columns). Forward keeps x only when W needs a gradient and W only when x needs one (an attack's
input gradient needs no columns at all).
"""
from gpu import cupy as cp
from gpu.kernels import launch
from ref.ops.conv import Conv2d as _RefConv2d
from ref.ops.conv import check_input, out_size, pair  # noqa: F401 (shared with ref, as its API)
from ref.tensor import Op

CHUNK_BYTES = 256 * 2 ** 20  # column buffer size per chunk of images (at least one image)


def to_padded_nhwc(x, ph, pw, value=0.0):
    """x (n, c, h, w) -> xpad (n, h + 2 ph, w + 2 pw, c), channels last, border set to value."""
    return pad_nhwc(x.transpose(0, 2, 3, 1), ph, pw, value)


def pad_nhwc(x, ph, pw, value=0.0):
    """x (n, h, w, c) -> xpad (n, h + 2 ph, w + 2 pw, c), border set to value; x itself when
    there is no padding and x is contiguous."""
    n, h, w, c = x.shape
    if ph == pw == 0 and x.flags.c_contiguous:
        return x
    xpad = cp.empty((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)  # (n, hp, wp, c)
    for border in (xpad[:, :ph], xpad[:, ph + h:], xpad[:, :, :pw], xpad[:, :, pw + w:]):
        border[...] = value
    interior(xpad, ph, pw, h, w)[...] = x
    return xpad


def interior(xpad, ph, pw, h, w):
    """The (n, h, w, c) view of xpad (n, h + 2 ph, w + 2 pw, c) without its border."""
    return xpad[:, ph:ph + h, pw:pw + w, :]


def im2col(xpad, kh, kw, sy, sx, dy, dx):
    """cols[n, i, j, p, q, c] = xpad[n, i sy + p dy, j sx + q dx, c], a contiguous copy.

    xpad (n, hp, wp, c) -> cols (n, oh, ow, kh, kw, c) by the im2col kernel. No copy when cols
    would equal xpad (a 1x1 kernel with stride 1).
    """
    n, hp, wp, c = xpad.shape
    if (kh, kw, sy, sx) == (1, 1, 1, 1):
        return xpad[:, :, :, None, None, :]                                  # (n, oh, ow, 1, 1, c)
    oh, ow = out_size(hp, kh, sy, 0, dy), out_size(wp, kw, sx, 0, dx)
    cols = cp.empty((n, oh, ow, kh, kw, c), dtype=xpad.dtype)            # (n, oh, ow, kh, kw, c)
    _launch("im2col", cp.ascontiguousarray(xpad), cols,
            (hp, wp, c, kh, kw, sy, sx, dy, dx, oh, ow))
    return cols


def col2im(gcols, hp, wp, sy, sx, dy, dx):
    """The adjoint of im2col: gxpad[n, i sy + p dy, j sx + q dx, c] += gcols[n, i, j, p, q, c].

    gcols (n, oh, ow, kh, kw, c) -> gxpad (n, hp, wp, c) by the col2im kernel, a gather: each
    element of gxpad sums the column entries that read it.
    """
    n, oh, ow, kh, kw, c = gcols.shape
    gxpad = cp.empty((n, hp, wp, c), dtype=gcols.dtype)            # (n, hp, wp, c)
    _launch("col2im", cp.ascontiguousarray(gcols), gxpad,
            (hp, wp, c, kh, kw, sy, sx, dy, dx, oh, ow))
    return gxpad


def _launch(name, source, target, sizes):
    """Run im2col or col2im of conv.cu, one thread per element of target; sizes: hp wp c kh kw
    sy sx dy dx oh ow."""
    launch("conv.cu", name, target.dtype, target.size,
           (source, target, *(cp.int32(v) for v in sizes), cp.int64(target.size)))


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
        gWm = cp.zeros((o, kh * kw * c), dtype=gy.dtype) if want_gW else None      # (o, kh*kw*c)
        Wm = self.W.transpose(0, 2, 3, 1).reshape(o, kh * kw * c) if want_gx else None
        for a in range(0, n, self.step):
            chunk = slice(a, a + self.step)
            gyN = cp.ascontiguousarray(gy[chunk].transpose(0, 2, 3, 1))          # (m, oh, ow, o)
            gyN = gyN.reshape(-1, o)                                               # (m*oh*ow, o)
            if want_gW:
                gWm += gyN.T @ self._cols(self.x[chunk])                           # (o, kh*kw*c)
            if want_gx:
                gcols = (gyN @ Wm).reshape(-1, oh, ow, kh, kw, c)           # (m, oh, ow, kh, kw, c)
                gxpad = col2im(gcols, h + 2 * self.ph, w + 2 * self.pw,
                               self.sy, self.sx, self.dy, self.dx)                 # (m, hp, wp, c)
                gxN[chunk] = interior(gxpad, self.ph, self.pw, h, w)               # (m, h, w, c)
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
        gWt = cp.zeros((c, kh * kw * o), dtype=gy.dtype) if want_gW else None      # (c, kh*kw*o)
        for a in range(0, n, step):
            chunk = slice(a, a + step)
            gyN = cp.ascontiguousarray(gy[chunk].transpose(0, 2, 3, 1))          # (m, oh, ow, o)
            gypad = pad_nhwc(gyN, *gy_padding)                                     # (m, ., ., o)
            gcols = im2col(gypad, kh, kw, 1, 1, self.dy, self.dx)             # (m, h, w, kh, kw, o)
            gcols = gcols.reshape(-1, kh * kw * o)                               # (m*h*w, kh*kw*o)
            cp.matmul(gcols, Wt, out=gxN[chunk].reshape(-1, c))                   # (m*h*w, c)
            if want_gW:
                xN = self.x[chunk].transpose(0, 2, 3, 1).reshape(-1, c)            # (m*h*w, c)
                gWt += xN.T @ gcols                                                # (c, kh*kw*o)
        gx = gxN.transpose(0, 3, 1, 2)                                             # (n, c, h, w)
        if not want_gW:
            return gx, None
        gW = gWt.reshape(c, kh, kw, o)[:, ::-1, ::-1, :].transpose(3, 0, 1, 2)  # (o, c, kh, kw)
        return gx, gW

    def _cols(self, x):
        """im2col of a chunk of x (m, c, h, w) as a matrix (m*oh*ow, kh*kw*c)."""
        kh, kw = self.W_shape[2:]
        xpad = to_padded_nhwc(x, self.ph, self.pw)                       # (m, hp, wp, c)
        cols = im2col(xpad, kh, kw, self.sy, self.sx, self.dy, self.dx)  # (m, oh, ow, kh, kw, c)
        return cols.reshape(-1, kh * kw * x.shape[1])                    # (m*oh*ow, kh*kw*c)

    _check = staticmethod(_RefConv2d._check)


def conv2d(x, W, b=None, stride=1, padding=0, dilation=1):
    """torch.nn.functional.conv2d: x (n, c, h, w), W (o, c, kh, kw), b (o,) or None;
    stride, padding, dilation: an int or a pair (rows, columns)."""
    return Conv2d.apply(x, W, b, stride=stride, padding=padding, dilation=dilation)
