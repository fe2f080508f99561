"""Triton kernels of DWNet's two dynamic depth-wise convolutions (forward and backward).

Only imported when Triton is importable. Every kernel takes explicit element strides, so NCHW and channels-last
tensors are both read in place; the host picks tile shapes that keep the contiguous dimension innermost.
Tiles are 3-D, `(channels, rows, columns)`; masked loads give the zero padding. Accumulation is in float32
(float64 for float64 tensors).

Interpreter note: Triton's own `@triton.jit` helpers (`tl.zeros`, `tl.sum`, ...) are compiled or interpreted
according to `TRITON_INTERPRET` at the moment `triton` is first imported, and `import transformers` already imports
it. So that `hf_localvit.ops` can run these kernels in Triton's interpreter for CPU tensors whatever that variable
was, they use only builtins: `tl.full` for zeros, and `tl.reduce` with Triton's sum combiner (`tl.sum` is exactly
that; the interpreter recognises the combiner and sums with numpy). No kernel calls another `@triton.jit` function.

Do not add `from __future__ import annotations` here: the interpreter finds `tl.constexpr` parameters through
the real annotation objects.
"""

import triton
import triton.language as tl

# The combiner `tl.sum` reduces with. Should a Triton version rename it, an equivalent one serves (the compiled
# kernels are unchanged; only the interpreter then reduces element by element, slowly).
_sum_combine = getattr(getattr(tl, "standard", None), "_sum_combine", None)
if _sum_combine is None:  # pragma: no cover - depends on the Triton version

    @triton.jit
    def _sum_combine(a, b):
        return a + b


@triton.jit
def dynamic_dwconv_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    C, H, W, OUT_H, OUT_W, padding,
    sx_b, sx_c, sx_h, sx_w,
    sw_b, sw_c, sw_i, sw_j,
    so_b, so_c, so_h, so_w,
    n_cblk, n_th, n_tw,
    K: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr, FP64: tl.constexpr,
    BC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):
    """`out[b, c, h, w] = bias[c] + sum_ij x[b, c, h - padding + i, w - padding + j] * w[b, c, i, j]`.

    With `FLIP` the kernel is read rotated by 180 degrees (`w[b, c, K-1-i, K-1-j]`): run on the output gradient
    with padding `K - 1 - padding`, that is the gradient with respect to the input. One program per
    (image, channel block, spatial tile); the per-image kernel taps are loaded once per program.
    """
    pid = tl.program_id(0)
    tw = pid % n_tw
    pid = pid // n_tw
    th = pid % n_th
    pid = pid // n_th
    cb = pid % n_cblk
    b = (pid // n_cblk).to(tl.int64)

    c = cb * BC + tl.arange(0, BC)[:, None, None]
    oh = th * BH + tl.arange(0, BH)[None, :, None]
    ow = tw * BW + tl.arange(0, BW)[None, None, :]
    cmask = c < C
    x_base = x_ptr + b * sx_b + c * sx_c
    w_base = w_ptr + b * sw_b + c * sw_c

    if FP64:
        acc = tl.full([BC, BH, BW], 0.0, tl.float64)
    else:
        acc = tl.full([BC, BH, BW], 0.0, tl.float32)
    for i in range(K):
        ih = oh - padding + i
        row_mask = cmask & (ih >= 0) & (ih < H)
        for j in tl.static_range(K):
            iw = ow - padding + j
            mask = row_mask & (iw >= 0) & (iw < W)
            xv = tl.load(x_base + ih * sx_h + iw * sx_w, mask=mask, other=0.0)
            if FLIP:
                wv = tl.load(w_base + (K - 1 - i) * sw_i + (K - 1 - j) * sw_j, mask=cmask, other=0.0)
            else:
                wv = tl.load(w_base + i * sw_i + j * sw_j, mask=cmask, other=0.0)
            acc += xv.to(acc.dtype) * wv.to(acc.dtype)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=cmask, other=0.0).to(acc.dtype)
    out_mask = cmask & (oh < OUT_H) & (ow < OUT_W)
    out_ptrs = out_ptr + b * so_b + c * so_c + oh * so_h + ow * so_w
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def dynamic_dwconv_bwd_weight_kernel(
    x_ptr, go_ptr, gw_ptr, gb_ptr,
    B, C, H, W, OUT_H, OUT_W, padding, rows_per_chunk,
    sx_b, sx_c, sx_h, sx_w,
    sg_b, sg_c, sg_h, sg_w,
    n_cblk, n_chunks,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, FP64: tl.constexpr,
    BC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):
    """Per-chunk partial sums of the weight (and bias) gradients.

    `gw[chunk, b, c, i * K + j] = sum_{(h, w) in chunk} x[b, c, h - padding + i, w - padding + j] * go[b, c, h, w]`
    and `gb[chunk, b, c] = sum_{(h, w) in chunk} go[b, c, h, w]`, where a chunk is `rows_per_chunk` output rows.
    One program per (image, channel block, chunk); it sweeps its chunk once per tap with an element-wise
    accumulator and reduces it once per tap, so there are no atomics and the result is deterministic. The host
    sums the chunks.
    """
    pid = tl.program_id(0)
    chunk = pid % n_chunks
    pid = pid // n_chunks
    cb = pid % n_cblk
    b = pid // n_cblk

    c1 = cb * BC + tl.arange(0, BC)
    c = c1[:, None, None]
    cmask = c < C
    rows = tl.arange(0, BH)[None, :, None]
    cols = tl.arange(0, BW)[None, None, :]
    h_start = chunk * rows_per_chunk
    h_end = tl.minimum(h_start + rows_per_chunk, OUT_H)
    x_base = x_ptr + b.to(tl.int64) * sx_b + c * sx_c
    g_base = go_ptr + b.to(tl.int64) * sg_b + c * sg_c
    # Rows `(chunk, b, c)` of the contiguous `(n_chunks, B, C, K * K)` and `(n_chunks, B, C)` partial buffers.
    row = (chunk.to(tl.int64) * B + b) * C + c1
    gw_base = gw_ptr + row * (K * K)

    if FP64:
        bias_acc = tl.full([BC, BH, BW], 0.0, tl.float64)
    else:
        bias_acc = tl.full([BC, BH, BW], 0.0, tl.float32)
    for i in tl.static_range(K):
        for j in tl.static_range(K):
            if FP64:
                acc = tl.full([BC, BH, BW], 0.0, tl.float64)
            else:
                acc = tl.full([BC, BH, BW], 0.0, tl.float32)
            for h0 in range(h_start, h_end, BH):
                oh = h0 + rows
                ih = oh - padding + i
                out_rows = cmask & (oh < h_end)
                in_rows = out_rows & (ih >= 0) & (ih < H)
                for w0 in range(0, OUT_W, BW):
                    ow = w0 + cols
                    iw = ow - padding + j
                    gmask = out_rows & (ow < OUT_W)
                    g = tl.load(g_base + oh * sg_h + ow * sg_w, mask=gmask, other=0.0).to(acc.dtype)
                    xmask = in_rows & (ow < OUT_W) & (iw >= 0) & (iw < W)
                    xv = tl.load(x_base + ih * sx_h + iw * sx_w, mask=xmask, other=0.0).to(acc.dtype)
                    acc += xv * g
                    if HAS_BIAS:
                        if i == 0:
                            if j == 0:
                                bias_acc += g
            tl.store(gw_base + (i * K + j), tl.reduce(tl.reduce(acc, 2, _sum_combine), 1, _sum_combine), mask=c1 < C)
    if HAS_BIAS:
        tl.store(gb_ptr + row, tl.reduce(tl.reduce(bias_acc, 2, _sum_combine), 1, _sum_combine), mask=c1 < C)


@triton.jit
def inhomogeneous_dwconv_fwd_kernel(
    x_ptr, w_ptr, out_ptr,
    C, CPG, H, W, OUT_H, OUT_W, padding,
    sx_b, sx_c, sx_h, sx_w,
    sw_b, sw_g, sw_i, sw_j, sw_h, sw_w,
    so_b, so_c, so_h, so_w,
    G, n_cblk, n_th, n_tw,
    K: tl.constexpr, FP64: tl.constexpr,
    BC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):
    """`out[b, c, h, w] = sum_ij x[b, c, h - padding + i, w - padding + j] * w[b, c // CPG, i, j, h, w]`.

    One program per (image, group, channel block of the group, spatial tile): each tap's weight tile is loaded
    once and shared by the block's channels. The channel block varies fastest between programs, so the programs
    that reread a weight tile run together and find it in L2.
    """
    pid = tl.program_id(0)
    cb = pid % n_cblk
    pid = pid // n_cblk
    tw = pid % n_tw
    pid = pid // n_tw
    th = pid % n_th
    pid = pid // n_th
    g = pid % G
    b = (pid // G).to(tl.int64)

    cl = cb * BC + tl.arange(0, BC)[:, None, None]
    c = g * CPG + cl
    cmask = cl < CPG
    oh = th * BH + tl.arange(0, BH)[None, :, None]
    ow = tw * BW + tl.arange(0, BW)[None, None, :]
    pos_mask = (oh < OUT_H) & (ow < OUT_W)
    x_base = x_ptr + b * sx_b + c * sx_c
    w_base = w_ptr + b * sw_b + g.to(tl.int64) * sw_g + oh * sw_h + ow * sw_w

    if FP64:
        acc = tl.full([BC, BH, BW], 0.0, tl.float64)
    else:
        acc = tl.full([BC, BH, BW], 0.0, tl.float32)
    for i in range(K):
        ih = oh - padding + i
        row_mask = cmask & (ih >= 0) & (ih < H)
        for j in tl.static_range(K):
            iw = ow - padding + j
            xv = tl.load(x_base + ih * sx_h + iw * sx_w, mask=row_mask & (iw >= 0) & (iw < W), other=0.0)
            wv = tl.load(w_base + i * sw_i + j * sw_j, mask=pos_mask, other=0.0)
            acc += xv.to(acc.dtype) * wv.to(acc.dtype)
    out_ptrs = out_ptr + b * so_b + c * so_c + oh * so_h + ow * so_w
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=cmask & pos_mask)


@triton.jit
def inhomogeneous_dwconv_bwd_input_kernel(
    go_ptr, w_ptr, gx_ptr,
    C, CPG, H, W, OUT_H, OUT_W, padding,
    sg_b, sg_c, sg_h, sg_w,
    sw_b, sw_g, sw_i, sw_j, sw_h, sw_w,
    sx_b, sx_c, sx_h, sx_w,
    G, n_cblk, n_th, n_tw,
    K: tl.constexpr, FP64: tl.constexpr,
    BC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):
    """`gx[b, c, y, x] = sum_ij go[b, c, y + padding - i, x + padding - j] * w[b, c // CPG, i, j, y + padding - i,
    x + padding - j]` over the output positions in range. Same program layout as the forward, over input tiles."""
    pid = tl.program_id(0)
    cb = pid % n_cblk
    pid = pid // n_cblk
    tw = pid % n_tw
    pid = pid // n_tw
    th = pid % n_th
    pid = pid // n_th
    g = pid % G
    b = (pid // G).to(tl.int64)

    cl = cb * BC + tl.arange(0, BC)[:, None, None]
    c = g * CPG + cl
    cmask = cl < CPG
    y = th * BH + tl.arange(0, BH)[None, :, None]
    x = tw * BW + tl.arange(0, BW)[None, None, :]
    g_base = go_ptr + b * sg_b + c * sg_c
    w_base = w_ptr + b * sw_b + g.to(tl.int64) * sw_g

    if FP64:
        acc = tl.full([BC, BH, BW], 0.0, tl.float64)
    else:
        acc = tl.full([BC, BH, BW], 0.0, tl.float32)
    for i in range(K):
        oh = y + padding - i
        row_ok = (oh >= 0) & (oh < OUT_H)
        for j in tl.static_range(K):
            ow = x + padding - j
            pos_ok = row_ok & (ow >= 0) & (ow < OUT_W)
            wv = tl.load(w_base + i * sw_i + j * sw_j + oh * sw_h + ow * sw_w, mask=pos_ok, other=0.0)
            gv = tl.load(g_base + oh * sg_h + ow * sg_w, mask=cmask & pos_ok, other=0.0)
            acc += gv.to(acc.dtype) * wv.to(acc.dtype)
    gx_ptrs = gx_ptr + b * sx_b + c * sx_c + y * sx_h + x * sx_w
    tl.store(gx_ptrs, acc.to(gx_ptr.dtype.element_ty), mask=cmask & (y < H) & (x < W))


@triton.jit
def inhomogeneous_dwconv_bwd_weight_kernel(
    x_ptr, go_ptr, gw_ptr,
    C, CPG, H, W, OUT_H, OUT_W, padding,
    sx_b, sx_c, sx_h, sx_w,
    sg_b, sg_c, sg_h, sg_w,
    sw_b, sw_g, sw_i, sw_j, sw_h, sw_w,
    G, n_th, n_tw,
    K: tl.constexpr, FP64: tl.constexpr, ONE_CBLK: tl.constexpr,
    BC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):
    """`gw[b, g, i, j, h, w] = sum_{c in group g} x[b, c, h - padding + i, w - padding + j] * go[b, c, h, w]`.

    One program per (image, group, spatial tile) writes every tap of its tile once (no atomics). The group's
    channels are summed in blocks of `BC`; with a single block (`ONE_CBLK`) the output-gradient tile is loaded
    once for all taps.
    """
    pid = tl.program_id(0)
    tw = pid % n_tw
    pid = pid // n_tw
    th = pid % n_th
    pid = pid // n_th
    g = pid % G
    b = (pid // G).to(tl.int64)

    cl = tl.arange(0, BC)[:, None, None]
    oh = th * BH + tl.arange(0, BH)[None, :, None]
    ow = tw * BW + tl.arange(0, BW)[None, None, :]
    pos_mask = (oh < OUT_H) & (ow < OUT_W)
    oh2 = th * BH + tl.arange(0, BH)[:, None]
    ow2 = tw * BW + tl.arange(0, BW)[None, :]
    gw_base = gw_ptr + b * sw_b + g.to(tl.int64) * sw_g + oh2 * sw_h + ow2 * sw_w
    gw_mask = (oh2 < OUT_H) & (ow2 < OUT_W)
    x_base = x_ptr + b * sx_b + (g * CPG) * sx_c
    g_base = go_ptr + b * sg_b + (g * CPG) * sg_c

    if ONE_CBLK:
        cmask = cl < CPG
        gv = tl.load(g_base + cl * sg_c + oh * sg_h + ow * sg_w, mask=cmask & pos_mask, other=0.0)
        if FP64:
            gv = gv.to(tl.float64)
        else:
            gv = gv.to(tl.float32)
    for i in tl.static_range(K):
        ih = oh - padding + i
        for j in tl.static_range(K):
            iw = ow - padding + j
            in_mask = pos_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            if ONE_CBLK:
                xv = tl.load(x_base + cl * sx_c + ih * sx_h + iw * sx_w, mask=cmask & in_mask, other=0.0)
                tap = tl.reduce(xv.to(gv.dtype) * gv, 0, _sum_combine)
            else:
                if FP64:
                    tap = tl.full([BH, BW], 0.0, tl.float64)
                else:
                    tap = tl.full([BH, BW], 0.0, tl.float32)
                for c0 in range(0, CPG, BC):
                    cmask = (c0 + cl) < CPG
                    gv = tl.load(g_base + (c0 + cl) * sg_c + oh * sg_h + ow * sg_w, mask=cmask & pos_mask, other=0.0)
                    xv = tl.load(x_base + (c0 + cl) * sx_c + ih * sx_h + iw * sx_w, mask=cmask & in_mask, other=0.0)
                    tap += tl.reduce(xv.to(tap.dtype) * gv.to(tap.dtype), 0, _sum_combine)
            tl.store(gw_base + i * sw_i + j * sw_j, tap.to(gw_ptr.dtype.element_ty), mask=gw_mask)
