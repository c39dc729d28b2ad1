"""Vector intrinsics for the tiles: a V-lane vector per pixel, V = ``tile_lanes``.

A vector is 64 bytes of the image dtype: 16 float32 or 8 float64 lanes. The vector code
is LLVM IR written by the intrinsics below (Numba does not expose vector types); on
machines with narrower vectors LLVM splits each operation. No fast-math flags: every
operation rounds as written, lane sums in a fixed order.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit
from numba import types as nbtypes
from numba.extending import intrinsic

__all__ = ["_lanes_bilinear", "_lanes_coord_grad", "_lanes_scatter", "_transpose_block",
           "tile_lanes"]

_VECTOR_BYTES = 64


@njit(cache=True)
def tile_lanes(itemsize):
    """Channels per tile (one vector) for an image dtype of ``itemsize`` bytes."""
    return _VECTOR_BYTES // itemsize


def _transpose_network(V):
    """The shuffles of a V x V transpose, V a power of two: log2(V) stages, each a list of
    (new row, first source row, second source row, mask). Stage b swaps bit b of the row
    index with bit b of the column index."""
    stages = []
    b = 1
    while b < V:
        stage = []
        for r0 in range(V):
            if r0 & b:
                continue
            r1 = r0 | b
            for new in (r0, r1):
                mask = []
                for c in range(V):
                    src_row = (new & ~b) | (c & b)
                    src_col = (c & ~b) | (new & b)
                    mask.append(src_col + (V if src_row == r1 else 0))
                stage.append((new, r0, r1, mask))
        stages.append(stage)
        b <<= 1
    return stages


def _lanes_of(dtype):
    return _VECTOR_BYTES // (dtype.bitwidth // 8)


def _pointer(context, builder, arrty, arr, index, V):
    """Pointer to the V-lane vector at ``arr[index]`` (``index``: i64 value)."""
    data = context.make_array(arrty)(context, builder, arr).data
    vty = ir.VectorType(context.get_data_type(arrty.dtype), V)
    return builder.bitcast(builder.gep(data, [index]), vty.as_pointer())


def _index(context, builder, sig, args, k):
    return context.cast(builder, args[k], sig.args[k], nbtypes.int64)


def _scalar(context, builder, sig, args, k, dtype, V):
    """Argument k cast to ``dtype`` and splatted over V lanes."""
    v = context.cast(builder, args[k], sig.args[k], dtype)
    vty = ir.VectorType(v.type, V)
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), v, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), V), [0] * V))


@intrinsic
def _transpose_block(typingctx, src, s_off, s_stride, dst, d_off, d_stride):
    """dst[d_off + c * d_stride + r] = src[s_off + r * s_stride + c] for r, c < V, the
    lane count (64 bytes of the dtype): a V x V block transposed in registers."""
    dtype = src.dtype
    V = _lanes_of(dtype)
    align = dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        so, ss = _index(context, builder, sig, args, 1), _index(context, builder, sig, args, 2)
        do, ds = _index(context, builder, sig, args, 4), _index(context, builder, sig, args, 5)
        i64 = ir.IntType(64)
        rows = []
        for r in range(V):
            at = builder.add(so, builder.mul(ss, ir.Constant(i64, r)))
            rows.append(builder.load(_pointer(context, builder, sig.args[0], args[0], at, V),
                                     align=align))
        mty = ir.VectorType(ir.IntType(32), V)
        for stage in _transpose_network(V):
            new = [None] * V
            for row, r0, r1, mask in stage:
                new[row] = builder.shuffle_vector(rows[r0], rows[r1], ir.Constant(mty, mask))
            rows = new
        for c in range(V):
            at = builder.add(do, builder.mul(ds, ir.Constant(i64, c)))
            builder.store(rows[c], _pointer(context, builder, sig.args[3], args[3], at, V),
                          align=align)
        return context.get_dummy_value()

    return nbtypes.none(src, s_off, s_stride, dst, d_off, d_stride), codegen


def _taps4(context, builder, sig, args, V, align):
    """The four tap vectors at xt[q], xt[q + V], xt[q + dy], xt[q + dy + V] (args 0..2)."""
    q = _index(context, builder, sig, args, 1)
    dy = _index(context, builder, sig, args, 2)
    step = ir.Constant(ir.IntType(64), V)
    at = [q, builder.add(q, step), builder.add(q, dy), builder.add(builder.add(q, dy), step)]
    return [builder.load(_pointer(context, builder, sig.args[0], args[0], a, V), align=align)
            for a in at], at


@intrinsic
def _lanes_bilinear(typingctx, xt, q, dy, ot, o, w00, w01, w10, w11):
    """ot[o:o+V] = w00 * xt[q] + w01 * xt[q+V] + w10 * xt[q+dy] + w11 * xt[q+dy+V], each
    term a V-lane vector, summed left to right."""
    dtype = xt.dtype
    V = _lanes_of(dtype)
    align = dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        (v00, v01, v10, v11), _ = _taps4(context, builder, sig, args, V, align)
        w = [_scalar(context, builder, sig, args, k, dtype, V) for k in (5, 6, 7, 8)]
        acc = builder.fmul(w[0], v00)
        acc = builder.fadd(acc, builder.fmul(w[1], v01))
        acc = builder.fadd(acc, builder.fmul(w[2], v10))
        acc = builder.fadd(acc, builder.fmul(w[3], v11))
        o_ = _index(context, builder, sig, args, 4)
        builder.store(acc, _pointer(context, builder, sig.args[3], args[3], o_, V), align=align)
        return context.get_dummy_value()

    return nbtypes.none(xt, q, dy, ot, o, w00, w01, w10, w11), codegen


def _hsum(builder, v, V):
    """Sum of the V lanes of v, halves added pairwise (a fixed order)."""
    mty = ir.IntType(32)
    while V > 1:
        half = V // 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(mty, half), list(range(half))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(mty, half),
                                                      list(range(half, V))))
        v = builder.fadd(lo, hi)
        V = half
    return builder.extract_element(v, ir.Constant(mty, 0))


@intrinsic
def _lanes_coord_grad(typingctx, xt, q, dy, gt, o, tx, ty):
    """(sum over lanes of g * ((v01 - v00) * (1 - ty) + (v11 - v10) * ty),
        sum over lanes of g * ((v10 - v00) * (1 - tx) + (v11 - v01) * tx)),
    g = gt[o:o+V], the taps as in _lanes_bilinear: d(sample)/d(pixel x, y) summed over a
    tile's channels."""
    dtype = xt.dtype
    V = _lanes_of(dtype)
    align = dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        (v00, v01, v10, v11), _ = _taps4(context, builder, sig, args, V, align)
        o_ = _index(context, builder, sig, args, 4)
        g = builder.load(_pointer(context, builder, sig.args[3], args[3], o_, V), align=align)
        tx_ = _scalar(context, builder, sig, args, 5, dtype, V)
        ty_ = _scalar(context, builder, sig, args, 6, dtype, V)
        one = ir.Constant(tx_.type, [ir.Constant(tx_.type.element, 1.0)] * V)
        tx1, ty1 = builder.fsub(one, tx_), builder.fsub(one, ty_)
        dx = builder.fadd(builder.fmul(builder.fsub(v01, v00), ty1),
                          builder.fmul(builder.fsub(v11, v10), ty_))
        dyv = builder.fadd(builder.fmul(builder.fsub(v10, v00), tx1),
                           builder.fmul(builder.fsub(v11, v01), tx_))
        gix = _hsum(builder, builder.fmul(g, dx), V)
        giy = _hsum(builder, builder.fmul(g, dyv), V)
        return context.make_tuple(builder, sig.return_type, [gix, giy])

    return nbtypes.UniTuple(dtype, 2)(xt, q, dy, gt, o, tx, ty), codegen


@intrinsic
def _lanes_scatter(typingctx, gxt, q, dy, gt, o, w00, w01, w10, w11):
    """gxt[q] += w00 * g, gxt[q+V] += w01 * g, gxt[q+dy] += w10 * g, gxt[q+dy+V] += w11 * g,
    in that order, g = gt[o:o+V]: a sample's gradient added to its four taps' lanes."""
    dtype = gxt.dtype
    V = _lanes_of(dtype)
    align = dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        o_ = _index(context, builder, sig, args, 4)
        g = builder.load(_pointer(context, builder, sig.args[3], args[3], o_, V), align=align)
        taps, at = _taps4(context, builder, sig, args, V, align)
        for k, tap, a in zip((5, 6, 7, 8), taps, at):
            w = _scalar(context, builder, sig, args, k, dtype, V)
            p = _pointer(context, builder, sig.args[0], args[0], a, V)
            builder.store(builder.fadd(tap, builder.fmul(w, g)), p, align=align)
        return context.get_dummy_value()

    return nbtypes.none(gxt, q, dy, gt, o, w00, w01, w10, w11), codegen
