"""Building blocks of the fused loops, compiled with numba: ``jit``, ``tanh``,
``sigmoid``, ``copy``, ``row_sums`` (and ``centred_squares``, ``dot``), ``matmul_rows`` (and ``matmul_add_rows``),
``project_rows`` (and ``project_steps``), ``product`` (and ``product_add``),
``transposed_product``, ``rows_at`` (and ``add_row_products``,
``add_column_products``), ``unowned`` (and ``keep_alive``), ``bernoulli_fill``.

Each cell's loops (``elman_loops.py``, ``lstm_loops.py``, ``gru_loops.py``) are
written from these pieces, so that what makes them fast is written once:

* :func:`jit` compiles without the GIL (so that directions and batch chunks
  run on several threads), with numpy's error model (no exception checks in
  the inner loops, which would stop vectorisation) and with a disk cache.
* :func:`tanh` is a rational approximation that vectorises; ``math.tanh`` is
  a libm call per element (about 20 ns here, more than the whole matrix-vector
  product of a step at ``H = 32``).
* :func:`sigmoid` is ``1 / (1 + e^-x)`` with an exponential of our own that
  vectorises, for the same reason (``math.exp`` is a libm call too).
* :func:`copy` copies a row by a loop (numba's slice assignment costs more).
* :func:`unowned` is an array without its reference count, which every view
  of an owned array (a row of a step) would change atomically: the sequence
  loops take their arrays through it first.
* :func:`rows_at` is the array at a tensor's address, for the one-step
  loops; :func:`add_row_products` and :func:`add_column_products` are their
  products going back (``dz @ w``, ``dz^T @ a``), small enough for plain loops.
* :func:`row_sums` is ``(sum(u), sum(u * v))`` over a row in several vector
  sums at once, and :func:`centred_squares` ``sum((v - c)^2)``: layer norm's
  statistics; :func:`dot` is ``sum(u * v)``, for the one-step loops.
* :func:`matmul_rows` is ``a @ w`` for a block of batch rows, a register-tiled
  kernel written in LLVM IR with explicit vector types; ``w`` is packed for it
  once per call (``fused_common.step_weights``).
* :func:`project_rows` is a piece's share of a layer's input projection, by
  :func:`matmul_add_rows` from the bias, in the thread that runs the piece
  (:func:`project_steps` the same by a BLAS, where the products go to one).
* :func:`product` is the per-step product the loops call: ``matmul_rows``, or
  a BLAS GEMM called through its address (:mod:`rnnkit.kernels.blas`);
  :func:`product_add` adds it to what its output holds (a step's gates,
  whose input projection is there already), through ``matmul_add_rows``;
  :func:`transposed_product` is a piece of a weight's gradient by a BLAS
  (``rnnkit.kernels.dense``).
* :func:`bernoulli_fill` draws the options' masks (recurrent dropout,
  zoneout) from one seed, twenty times as fast as torch's CPU generator.

Numba's disk cache checks only each function's own source file: after
editing this module, delete ``rnnkit/kernels/__pycache__/*.nbi`` and
``*.nbc``, or the loops of other modules keep their compiled copies of the
old building blocks.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload


CONTRACT = frozenset({"contract"})
"""fastmath flags of the element-wise loops: fused multiply-add only, no
reordering, so every result depends on its own inputs only."""


def jit(function=None, *, fastmath=CONTRACT, inline="never"):
    """``numba.njit`` with the options every fused loop wants.

    The compiled code is cached next to the source (or in numba's user-wide
    cache); where neither is writable, as in a read-only install without a
    home directory, it compiles in memory on first use instead of failing.
    """

    def decorate(f):
        options = dict(nogil=True, error_model="numpy", fastmath=set(fastmath), inline=inline)
        try:
            return numba.njit(cache=True, **options)(f)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **options)(f)

    return decorate if function is None else decorate(function)


# -- tanh ----------------------------------------------------------------------------
#
# tanh(x) = x P(x^2) / Q(x^2) on |x| <= c, and +-1 beyond, where tanh rounds to
# +-1 in the dtype. P and Q are near-minimax for the relative error, fitted by
# tools/fit_tanh.py: degrees 4/4 give 2.1e-8 (float32, c = 9.02), 9/9 give
# 7.2e-17 (float64, c = 19.1). Evaluated in the dtype itself, the result is
# within 5 ulp (float32) and 7 ulp (float64) of the exact tanh.

_P32 = tuple(np.float32(v) for v in (
    0.9999999790095512, 0.13379715391236227, 0.0034940315851460274,
    2.058343450578329e-05, 1.3319011409621017e-08,
))
_Q32 = tuple(np.float32(v) for v in (
    1.0, 0.4671303062906932, 0.025871061745346258,
    0.0003283088068471886, 7.761993759779468e-07,
))
_P64 = (
    0.9999999999999999, 0.15180302845252522, 0.005974364109646573,
    9.358974117041072e-05, 6.828479699391214e-07, 2.4391487301502827e-09,
    4.1668545381587726e-12, 3.0587038283890406e-15, 7.395421667250276e-19,
    2.4925739802060262e-23,
)
_Q64 = (
    1.0, 0.4851363617858576, 0.034353151371601, 0.0008280459285086659,
    8.751820532362868e-06, 4.4614044695991236e-08, 1.1103147658306252e-10,
    1.2687871744942416e-13, 5.620260745065576e-17, 6.204750476033685e-21,
)
_C32, _ONE32 = np.float32(9.02), np.float32(1.0)
_C64 = 19.1


def tanh(x):
    """Hyperbolic tangent of a float32 or float64 scalar, in compiled code only."""
    return math.tanh(x)  # what the compiled versions below approximate


@overload(tanh, jit_options=dict(fastmath=set(CONTRACT), error_model="numpy"))
def _tanh_overload(x):
    if x == types.float32:
        p0, p1, p2, p3, p4 = _P32
        _, q1, q2, q3, q4 = _Q32

        def tanh32(x):
            x = min(max(x, -_C32), _C32)
            s = x * x
            p = x * (p0 + s * (p1 + s * (p2 + s * (p3 + s * p4))))
            q = _ONE32 + s * (q1 + s * (q2 + s * (q3 + s * q4)))
            return min(max(p / q, -_ONE32), _ONE32)

        return tanh32
    if x == types.float64:
        p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 = _P64
        _, q1, q2, q3, q4, q5, q6, q7, q8, q9 = _Q64

        def tanh64(x):
            x = min(max(x, -_C64), _C64)
            s = x * x
            p = x * (p0 + s * (p1 + s * (p2 + s * (p3 + s * (p4 + s * (
                p5 + s * (p6 + s * (p7 + s * (p8 + s * p9)))))))))
            q = 1.0 + s * (q1 + s * (q2 + s * (q3 + s * (q4 + s * (
                q5 + s * (q6 + s * (q7 + s * (q8 + s * q9))))))))
            return min(max(p / q, -1.0), 1.0)

        return tanh64
    return None


# -- sigmoid ---------------------------------------------------------------------------
#
# sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with e = exp(-|x|),
# so that neither side loses digits to cancellation. The exponential of y <= 0 is
# the textbook one: y = k ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, the first
# with few enough bits that k * ln2_hi is exact), e^r by its Taylor polynomial (up
# to r^7 in float32, r^13 in float64, whose remainders are below half an ulp), and
# 2^k built from its bits. y is clamped where 2^k would leave the normal range, so
# results below the smallest normal number (sigmoid(x) for x < -87.3 in float32,
# x < -708 in float64) come out within that number of the exact value, not to the
# ulp. Elsewhere the result is within 3 ulp (float32) and 4 ulp (float64) of the
# exact sigmoid (tests/test_kernels.py measures it).

_EXP32 = dict(
    low=np.float32(-87.3366),  # just below ln(2^-126): 2^k stays normal, e^low <= 2^-126
    log2e=np.float32(1.4426950408889634),
    ln2_hi=np.float32(0.693359375),
    ln2_lo=np.float32(-2.1219444005469057e-4),
    bias=np.float32(127), mantissa=np.float32(2.0**23),
    taylor=tuple(np.float32(1 / math.factorial(k)) for k in range(8)),
)
_EXP64 = dict(
    low=-708.3965,  # just below ln(2^-1022)
    log2e=1.4426950408889634,
    ln2_hi=6.93147180369123816490e-01,
    ln2_lo=1.90821492927058770002e-10,
    bias=1023.0, mantissa=2.0**52,
    taylor=tuple(1 / math.factorial(k) for k in range(14)),
)


@intrinsic
def _from_bits(typingctx, bits):
    """The float whose bit pattern is the integer ``bits`` (int32 -> float32,
    int64 -> float64): how 2^k is built without a libm call."""
    if bits == types.int32:
        signature, float_type = types.float32(types.int32), ir.FloatType()
    elif bits == types.int64:
        signature, float_type = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], float_type)

    return signature, codegen


def sigmoid(x):
    """Logistic sigmoid of a float32 or float64 scalar, in compiled code only."""
    return 1 / (1 + math.exp(-x))  # what the compiled versions below compute


@overload(sigmoid, jit_options=dict(fastmath=set(CONTRACT), error_model="numpy"))
def _sigmoid_overload(x):
    if x == types.float32:
        c, integer, one = _EXP32, np.int32, np.float32(1)
        t0, t1, t2, t3, t4, t5, t6, t7 = c["taylor"]

        def exp_taylor(r):
            return t0 + r * (t1 + r * (t2 + r * (t3 + r * (t4 + r * (t5 + r * (t6 + r * t7))))))

    elif x == types.float64:
        c, integer, one = _EXP64, np.int64, 1.0
        t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13 = c["taylor"]

        def exp_taylor(r):
            high = t7 + r * (t8 + r * (t9 + r * (t10 + r * (t11 + r * (t12 + r * t13)))))
            return t0 + r * (t1 + r * (t2 + r * (t3 + r * (t4 + r * (t5 + r * (t6 + r * high))))))

    else:
        return None
    exp_taylor = numba.njit(inline="always", fastmath=set(CONTRACT), error_model="numpy")(exp_taylor)
    low, log2e, ln2_hi, ln2_lo = c["low"], c["log2e"], c["ln2_hi"], c["ln2_lo"]
    bias, mantissa, half = c["bias"], c["mantissa"], one / 2

    def sigmoid_impl(x):
        y = max(-abs(x), low)
        k = np.floor(y * log2e + half)  # np.floor keeps the dtype; math.floor gives an int
        r = (y - k * ln2_hi) - k * ln2_lo
        e = exp_taylor(r) * _from_bits(integer((k + bias) * mantissa))  # exp(-|x|), in (0, 1]
        return (one if x >= 0 else e) / (one + e)

    return sigmoid_impl


@jit(inline="always")
def copy(dst, src):
    """``dst[k] = src[k]`` for every ``k`` of the 1-D ``dst``: a loop, where
    numba's slice assignment checks shapes and broadcasts at every call
    (measured: two of them per row made the LSTM's step 1.5 times slower)."""
    for k in range(dst.shape[0]):
        dst[k] = src[k]


# -- sums over a row ------------------------------------------------------------------

SUM_CHAINS = 4
"""Vector accumulators :func:`row_sums` adds into in turn: one alone would make
every addition wait for the last (measured: 34 ns for 256 floats, a chain of
dependent vector additions, against 5 with four)."""


@intrinsic
def _centred_sums(typingctx, u, v, centre):
    """``(sum(u - c), sum((u - c) * (v - c)))``, ``c = centre``, over two rows
    of the same length with unit steps, in a fixed order whatever the row:
    whole vectors go to :data:`SUM_CHAINS` vector sums in turn (each
    multiply-add fused), the lanes of those are added pairwise, then the
    last elements short of a vector one at a time."""
    if not (isinstance(u, types.Array) and u.ndim == 1 and u.dtype in (types.float32, types.float64)):
        return None
    sig = types.UniTuple(u.dtype, 2)(u, v, u.dtype)

    def codegen(context, builder, signature, args):
        real = context.get_value_type(u.dtype)
        size = context.get_abi_sizeof(real)
        lanes = VECTOR_BYTES // size
        vector = ir.VectorType(real, lanes)
        int64 = ir.IntType(64)
        fma_v = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{lanes}f{8 * size}"
        )
        fma_s = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(real, [real] * 3), f"llvm.fma.f{8 * size}"
        )

        def row(array_type, value):
            array = context.make_array(array_type)(context, builder, value)
            return builder.bitcast(array.data, real.as_pointer()), cgutils.unpack_tuple(builder, array.shape)[0]

        u_p, n = row(signature.args[0], args[0])
        v_p, _ = row(signature.args[1], args[1])
        c = args[2]
        cs = builder.shuffle_vector(
            builder.insert_element(ir.Constant(vector, ir.Undefined), c, ir.IntType(32)(0)),
            ir.Constant(vector, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes),
        )
        zero = ir.Constant(vector, None)
        sums = [cgutils.alloca_once_value(builder, zero) for _ in range(SUM_CHAINS)]
        products = [cgutils.alloca_once_value(builder, zero) for _ in range(SUM_CHAINS)]

        def vector_at(row_pointer, start):
            return builder.load(builder.bitcast(builder.gep(row_pointer, [start]), vector.as_pointer()), align=size)

        def add_vector(chain, start):
            uv, vv = builder.fsub(vector_at(u_p, start), cs), builder.fsub(vector_at(v_p, start), cs)
            builder.store(builder.fadd(builder.load(sums[chain]), uv), sums[chain])
            builder.store(builder.call(fma_v, [uv, vv, builder.load(products[chain])]), products[chain])

        block = int64(SUM_CHAINS * lanes)
        blocks = builder.sdiv(n, block)
        with cgutils.for_range(builder, blocks) as loop:
            start = builder.mul(loop.index, block)
            for chain in range(SUM_CHAINS):
                add_vector(chain, builder.add(start, int64(chain * lanes)))
        done = builder.mul(blocks, block)
        singles = builder.sdiv(builder.sub(n, done), int64(lanes))  # whole vectors after the blocks
        with cgutils.for_range(builder, singles) as loop:
            add_vector(0, builder.add(done, builder.mul(loop.index, int64(lanes))))
        tail = builder.add(done, builder.mul(singles, int64(lanes)))

        def total(chains):
            values = [builder.load(c) for c in chains]
            while len(values) > 1:  # chains pairwise, then lanes pairwise
                values = [builder.fadd(values[i], values[i + 1]) for i in range(0, len(values), 2)]
            values = [builder.extract_element(values[0], int64(i)) for i in range(lanes)]
            while len(values) > 1:
                values = [builder.fadd(values[i], values[i + 1]) for i in range(0, len(values), 2)]
            return cgutils.alloca_once_value(builder, values[0])

        sum_u, sum_uv = total(sums), total(products)
        with cgutils.for_range(builder, builder.sub(n, tail)) as loop:
            k = builder.add(tail, loop.index)
            x = builder.fsub(builder.load(builder.gep(u_p, [k])), c)
            y = builder.fsub(builder.load(builder.gep(v_p, [k])), c)
            builder.store(builder.fadd(builder.load(sum_u), x), sum_u)
            builder.store(builder.call(fma_s, [x, y, builder.load(sum_uv)]), sum_uv)
        return context.make_tuple(builder, signature.return_type, [builder.load(sum_u), builder.load(sum_uv)])

    return sig, codegen


@jit(inline="always")
def row_sums(u, v):
    """``(sum(u), sum(u * v))`` over two rows of the same length with unit
    steps, in a fixed order (see :func:`_centred_sums`)."""
    return _centred_sums(u, v, u.dtype.type(0))


@jit(inline="always")
def dot(u, v):
    """``sum(u * v)`` over two rows of the same length with unit steps, in a
    fixed order (see :func:`_centred_sums`): a product's row for calls too
    small to pack the weights for :func:`product`."""
    return _centred_sums(u, v, u.dtype.type(0))[1]


@jit(inline="always")
def centred_squares(v, centre):
    """``sum((v - centre) ** 2)`` over a row with unit steps, in a fixed order
    (see :func:`_centred_sums`): a variance's sum without a row of ``v - centre``
    written first and read back."""
    return _centred_sums(v, v, centre)[1]


# -- the per-step product --------------------------------------------------------------
#
# ``res = a @ w`` for a block of batch rows, as a register-blocked micro-kernel:
# a tile of ``rows`` rows by ``vectors`` SIMD vectors of outputs keeps its sums
# in registers for the whole of ``K``; at each ``j`` it loads ``vectors`` vectors
# of ``w``'s row ``j`` and broadcasts one ``a[n, j]`` per row, so every load
# serves several fused multiply-adds and no horizontal sums are needed. The
# tile is written in LLVM IR with explicit vector types, so its shape does not
# hang on what the loop vectoriser makes of a loop.


def _vector_registers() -> tuple[int, int]:
    """``(bytes, count)`` of the SIMD registers numba compiles for: AVX-512
    (64 bytes, 32 registers), AVX2 (32, 16), else 16-byte vectors (SSE: 16,
    NEON: 32)."""
    from llvmlite import binding

    features = numba.config.CPU_FEATURES or binding.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(","):
        return 64, 32
    if "+avx2" in features.split(","):
        return 32, 16
    return 16, 32 if binding.get_process_triple().startswith(("aarch64", "arm64")) else 16


VECTOR_BYTES, _REGISTERS = _vector_registers()

TILE_VECTORS = (
    {8: 2, 4: 3, 2: 4, 1: 8} if _REGISTERS >= 32 else {8: 1, 4: 2, 2: 3, 1: 4}
)
"""Vectors of outputs per tile, for each tile height in rows: as wide as the
registers allow (sums plus the loaded vectors plus one broadcast). Measured
here (AMD EPYC, AVX-512, one thread, float32, ``(N, P) @ (P, 4P)``): 8 x 2
runs 255-270 GFLOP/s from ``N = 8`` with ``P`` 64-128 and 180-195 at ``P`` 256-512,
4 x 3 about 245 at ``N = 4``; one row is bound by reading ``w``, 60-200.
One row takes 8 vectors where there are 32 registers: each vector's sum is
a chain of dependent multiply-adds, and it takes 8 chains to keep two FMA
units busy at four cycles each; the vectors left over go in tiles of 4, 2
and 1, not one at a time (measured on an Intel Xeon: the LSTM's backward
loop at ``T=1000 N=1 H=32``, two vectors of 128 multiply-adds a step, 0.37
-> 0.27 ms; inference of that layer 1.15x faster)."""


ROW_BLOCK = 2
"""Batch rows the chunks given to different threads are whole multiples of,
so that each chunk's rows fill whole tiles of two or more. (A row's result
does not depend on the split either way: every tile sums in the same order.)
Two, not four: at batch 4 two threads of two rows each ran a training step
1.0-1.2 times as fast as one of four (AMD EPYC, 2 cores, ``T = 1000``,
``H = 64``; layer norm 1.1-1.2x), where a single row per thread lost at
batch 2 (0.8x at ``H = 32``)."""


PANEL_BYTES = 256 * 1024
"""The most of ``w`` one panel of :func:`matmul_rows` reads: half of a
core's L2 cache on current x86 CPUs (1-2 MiB), so that it stays there while
every row is done against it."""


def padded_width(m: int, itemsize: int) -> int:
    """``m`` rounded up to whole vectors: the columns of a per-step weight;
    and one vector more where a row would be a multiple of 4 KiB, whose rows
    then fall in the same few sets of the L1 cache and evict each other
    (measured: ``(64, 512) @ (512, 2048)`` at 195 GFLOP/s, 261 with 16 more
    columns)."""
    lanes = VECTOR_BYTES // itemsize
    width = -(-m // lanes) * lanes
    return width + lanes if (width * itemsize) % 4096 == 0 else width


@intrinsic(prefer_literal=True)
def _row_tiles(typingctx, rows, accumulate, a, arow, acol, w, res, rrow, i0, i1):
    """``res[rrow + r, i0:i1] = a[arow + r, acol : acol + K] @ w[:, i0:i1]`` for
    ``r < rows`` (a literal: 8, 4, 2 or 1), tile by tile; ``+=`` where
    ``accumulate`` is true (the sums start from ``res``).

    Shapes: ``w (K, M)`` C-contiguous; ``a`` and ``res`` 2-D with unit steps
    along their rows; ``i0`` and ``i1`` whole vectors of columns."""
    if not isinstance(rows, types.IntegerLiteral):
        return None
    height = rows.literal_value
    sig = types.void(rows, accumulate, a, arow, acol, w, res, rrow, i0, i1)

    def codegen(context, builder, signature, args):
        _, adding, a_v, arow_v, acol_v, w_v, res_v, rrow_v, i0_v, i1_v = args
        real = context.get_value_type(res.dtype)
        size = context.get_abi_sizeof(real)
        lanes = VECTOR_BYTES // size
        vector = ir.VectorType(real, lanes)
        int32, int64 = ir.IntType(32), ir.IntType(64)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{lanes}f{8 * size}"
        )

        def matrix(array_type, value):
            """(data as real*, row stride in elements, shape)"""
            array = context.make_array(array_type)(context, builder, value)
            stride = builder.sdiv(cgutils.unpack_tuple(builder, array.strides)[0], int64(size))
            return builder.bitcast(array.data, real.as_pointer()), stride, cgutils.unpack_tuple(builder, array.shape)

        a_p, a_stride, _ = matrix(signature.args[2], a_v)
        w_p, w_stride, (k, _) = matrix(signature.args[5], w_v)
        r_p, r_stride, _ = matrix(signature.args[6], res_v)
        a_rows = [
            builder.gep(a_p, [builder.add(builder.mul(builder.add(arow_v, int64(r)), a_stride), acol_v)])
            for r in range(height)
        ]
        r_rows = [builder.gep(r_p, [builder.mul(builder.add(rrow_v, int64(r)), r_stride)]) for r in range(height)]
        undef = ir.Constant(vector, ir.Undefined)
        splat = ir.Constant(ir.VectorType(int32, lanes), [0] * lanes)

        def vector_at(row_pointer, column):
            return builder.bitcast(builder.gep(row_pointer, [column]), vector.as_pointer())

        def tile(i0, width):
            """Rows by ``width`` vectors of outputs from column ``i0``."""
            zero = ir.Constant(vector, None)
            sums = [
                [
                    cgutils.alloca_once_value(builder, builder.select(
                        adding,
                        builder.load(vector_at(r_rows[r], builder.add(i0, int64(v * lanes))), align=size),
                        zero,
                    ))
                    for v in range(width)
                ]
                for r in range(height)
            ]
            with cgutils.for_range(builder, k) as loop:
                j = loop.index
                w_row = builder.gep(w_p, [builder.add(builder.mul(j, w_stride), i0)])
                ws = [builder.load(vector_at(w_row, int64(v * lanes)), align=size) for v in range(width)]
                for r in range(height):
                    x = builder.load(builder.gep(a_rows[r], [j]))
                    xs = builder.shuffle_vector(builder.insert_element(undef, x, int32(0)), undef, splat)
                    for v in range(width):
                        builder.store(builder.call(fma, [ws[v], xs, builder.load(sums[r][v])]), sums[r][v])
            for r in range(height):
                for v in range(width):
                    column = builder.add(i0, int64(v * lanes))
                    builder.store(builder.load(sums[r][v]), vector_at(r_rows[r], column), align=size)

        wide = int64(TILE_VECTORS[height] * lanes)
        full = builder.sdiv(builder.sub(i1_v, i0_v), wide)
        with cgutils.for_range(builder, full) as block:
            tile(builder.add(i0_v, builder.mul(block.index, wide)), TILE_VECTORS[height])
        done = builder.add(i0_v, builder.mul(full, wide))
        if height > 1:  # the vectors left, one at a time: the rows' sums are independent already
            with cgutils.for_range(builder, builder.sdiv(builder.sub(i1_v, done), int64(lanes))) as block:
                tile(builder.add(done, builder.mul(block.index, int64(lanes))), 1)
        else:  # one row: the vectors left in tiles of halving widths, each as many chains of sums
            width = TILE_VECTORS[1] // 2
            while width:
                span = int64(width * lanes)
                with builder.if_then(builder.icmp_signed(">=", builder.sub(i1_v, done), span)):
                    tile(done, width)
                taken = builder.icmp_signed(">=", builder.sub(i1_v, done), span)
                done = builder.select(taken, builder.add(done, span), done)
                width //= 2
        return context.get_dummy_value()

    return sig, codegen


@jit(inline="always")
def matmul_rows(a, acol, w, res, n0, n1):
    """``res[n - n0] = a[n, acol : acol + K] @ w`` for rows ``n0 <= n < n1``.

    Shapes: ``a (N, >= acol + K)`` and ``res (n1 - n0, >= M)`` with unit
    steps along their rows; ``w (K, M)`` C-contiguous, ``M`` a whole number of
    vectors (:func:`padded_width`; the columns past the real ones are zeros).

    Eight rows at a time, then four, two and one: each output is the sum over
    ``j`` in order, one fused multiply-add at a time, whatever tile it falls
    in, so a row's result does not depend on how the batch was split. The
    columns go in panels whose part of ``w`` fits in a core's L2 cache
    (:data:`PANEL_BYTES`), every row done against a panel before the next.
    """
    _tiled_product(a, acol, w, res, n0, n1, w.shape[1], False)


@jit(inline="always")
def matmul_add_rows(a, acol, w, res, n0, n1, width):
    """``res[n - n0, :width] += a[n, acol : acol + K] @ w[:, :width]`` for rows
    ``n0 <= n < n1``: :func:`matmul_rows` with its sums starting from ``res``,
    over the first ``width <= M`` columns only (the last of them, short of a
    whole vector, one at a time in the same order), so that ``res`` may be a
    view into a wider buffer. Each output is its value in ``res`` plus the
    terms over ``j`` in order, one fused multiply-add at a time, whatever
    tile it falls in."""
    _tiled_product(a, acol, w, res, n0, n1, width, True)


@jit(inline="always")
def _tiled_product(a, acol, w, res, n0, n1, width, accumulate):
    k, m = w.shape
    lanes = VECTOR_BYTES // w.itemsize
    whole = width // lanes * lanes
    panel = max(lanes, PANEL_BYTES // max(1, k * w.itemsize) // lanes * lanes)
    for i0 in range(0, whole, panel):
        i1 = min(i0 + panel, whole)
        n = n0
        while n + 8 <= n1:
            _row_tiles(8, accumulate, a, n, acol, w, res, n - n0, i0, i1)
            n += 8
        if n + 4 <= n1:
            _row_tiles(4, accumulate, a, n, acol, w, res, n - n0, i0, i1)
            n += 4
        if n + 2 <= n1:
            _row_tiles(2, accumulate, a, n, acol, w, res, n - n0, i0, i1)
            n += 2
        if n < n1:
            _row_tiles(1, accumulate, a, n, acol, w, res, n - n0, i0, i1)
    zero = res.dtype.type(0)
    for n in range(n0, n1):  # the columns short of a whole vector (none where width is whole vectors)
        x, out = a[n, acol:], res[n - n0]
        for i in range(whole, width):
            total = out[i] if accumulate else zero
            for j in range(k):
                total += x[j] * w[j, i]
            out[i] = total


PROJECTION_ROWS = 64
"""Rows of the input projection :func:`project_rows` starts from the bias and
finishes at a time."""


@jit
def project_rows(x, w, bias, out, col, n0, n1, t0, t1):
    """``out[t, n, col : col + M] = bias + x[t, n] @ w`` for the rows
    ``n0 <= n < n1`` of the steps ``t0 <= t < t1``: a share of a layer's input
    projection, done by :func:`matmul_add_rows` (the sums start from the
    bias) in the thread that runs it.

    Shapes: ``x (T, N, F)`` and ``out (T, N, >= col + M)`` C-contiguous;
    ``w (F, >= M)`` as :func:`product` takes it; ``bias (M,)``, zeros for none.
    """
    steps, batch, features = x.shape
    width = bias.shape[0]
    x, w, bias, out = unowned(x), unowned(w), unowned(bias), unowned(out)
    whole = n0 == 0 and n1 == batch  # then the rows of all the steps follow each other
    for n in range(n0, n0 + 1 if whole else n1):
        if whole:  # [::1]: the same array type as a batch row's, so that the tiles are compiled once
            x_rows, out_rows = x.reshape((steps * batch, features))[::1], out.reshape((steps * batch, out.shape[2]))[::1]
            r0, r1 = t0 * batch, t1 * batch
        else:  # one batch row over the steps, so that the tiles take 8 rows at once
            x_rows, out_rows, r0, r1 = x[:, n], out[:, n], t0, t1
        for c0 in range(r0, r1, PROJECTION_ROWS):  # rows still in cache when the product reads them
            c1 = min(c0 + PROJECTION_ROWS, r1)
            for r in range(c0, c1):
                copy(out_rows[r, col : col + width], bias)
            matmul_add_rows(x_rows, 0, w, out_rows[c0:c1, col:], c0, c1, width)


@jit
def project_steps(x, w, bias, out, col, n0, n1, t0, t1, gemm):
    """:func:`project_rows` by the BLAS GEMM ``gemm = (address, rows)``, a
    step at a time, in the per-step product's blocks of rows (:func:`product`;
    ``n0`` a multiple of them). Compiled apart, on first use, so that a
    machine whose products stay in numba never compiles it."""
    width = bias.shape[0]
    x, w, bias, out = unowned(x), unowned(w), unowned(bias), unowned(out)
    for t in range(t0, t1):
        for n in range(n0, n1):
            copy(out[t, n, col : col + width], bias)
        _blas_rows(x[t], 0, w, out[t, n0:, col:], n0, n1, width, 1, gemm)


# -- tensors by address ----------------------------------------------------------------


@intrinsic
def _pointer(typingctx, address, zero):
    """The integer ``address`` as a pointer to values of ``zero``'s type."""
    if not isinstance(address, types.Integer) or not isinstance(zero, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return types.CPointer(zero)(address, zero), codegen


def unowned(a):
    """The C-contiguous array ``a`` without its reference count, in compiled
    code only: the same memory, shape and type, but views (``a[t, n, :]``)
    taken of it count no references. Every view of an owned array adds one to
    the owner's count and takes it away again, an atomic operation that two
    threads viewing the same array contend for (measured: the options'
    LSTM backward loop, 16 rows of ``T=200 H=64`` on one thread, 2.8 ms with
    its arrays as they come, 1.8-2.0 unowned). Only for arrays that outlive
    every use of the result: a loop's arguments (the caller holds them), or
    its scratch while the scratch itself is still used (:func:`keep_alive`).
    Other layouts and element types come back as they are."""
    return a


@overload(unowned, jit_options=dict(error_model="numpy"))
def _unowned_overload(a):
    if isinstance(a, types.Array) and a.layout == "C" and isinstance(a.dtype, (types.Float, types.Integer)):
        def view(a):
            return numba.carray(_pointer(a.ctypes.data, a.dtype.type(0)), a.shape)

        return view
    return lambda a: a


@jit
def keep_alive(*owners):
    """Nothing: called after a loop with the scratch it took :func:`unowned`
    views of, it keeps numba from freeing that scratch at the views' creation
    (numba frees a local array after the last use of its own name)."""


@jit(inline="always")
def rows_at(address, rows, columns, zero):
    """The C-contiguous ``(rows, columns)`` array of ``zero``'s dtype at
    ``address``, a tensor's ``data_ptr()``: for calls so short that numpy
    views of their tensors (about 0.6 us each) would be much of their time.
    Address 0 (a tensor the call does not have) gives zeros; ``zero`` is 0."""
    if address == 0:
        return np.full((rows, columns), zero)
    return numba.carray(_pointer(address, zero), (rows, columns))


@jit(inline="always")
def add_row_products(dz, w, out, clear):
    """``out += dz @ w`` (``out = dz @ w`` when ``clear``): ``(N, G) @ (G, K)``,
    each row of ``w`` added in turn, for a step's input or state gradient."""
    if clear:
        out[:] = 0
    for n in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            _add_scaled(out[n], dz[n, j], w[j])


@jit(inline="always")
def add_column_products(dz, a, out, clear):
    """``out += dz^T @ a`` (``out = ...`` when ``clear``): ``(G, N) @ (N, K)``, a
    weight's gradient from one step, row by row of ``a``."""
    if clear:
        out[:] = 0
    for n in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            _add_scaled(out[j], dz[n, j], a[n])


@jit(inline="always")
def _add_scaled(row, scale, source):
    """``row += scale * source``, two rows of the same length."""
    for k in range(row.shape[0]):
        row[k] += scale * source[k]


# -- the per-step product through BLAS --------------------------------------------------


def _gemm_intrinsic(second: str):
    """The intrinsic that calls a Fortran GEMM with ``transb = second``: see
    :func:`_gemm_at` (``"N"``) and :func:`_gemm_t_at` (``"T"``)."""

    def gemm_at(typingctx, address, m, n, k, w, a, lda, beta, res, ldres):
        dtype = res.dtype
        sig = types.void(address, m, n, k, w, a, lda, beta, res, ldres)

        def codegen(context, builder, signature, args):
            address_v, m_v, n_v, k_v, w_v, a_v, lda_v, beta_v, res_v, ldres_v = args
            real = context.get_value_type(dtype)
            int32, int64, char = ir.IntType(32), ir.IntType(64), ir.IntType(8)
            size = context.get_abi_sizeof(real)

            def ref(value):
                return cgutils.alloca_once_value(builder, value)

            def int_ref(value):
                return ref(builder.trunc(value, int32))

            def array(array_type, value):
                return context.make_array(array_type)(context, builder, value)

            def data(array_type, value):
                return builder.bitcast(array(array_type, value).data, real.as_pointer())

            w_t, a_t, res_t = signature.args[4], signature.args[5], signature.args[8]
            ldw = builder.sdiv(cgutils.unpack_tuple(builder, array(w_t, w_v).strides)[0], int64(size))
            beta = context.cast(builder, beta_v, signature.args[7], dtype)
            arguments = [
                ref(char(ord("N"))), ref(char(ord(second))), int_ref(m_v), int_ref(n_v), int_ref(k_v),
                ref(real(1.0)), data(w_t, w_v), int_ref(ldw), data(a_t, a_v), int_ref(lda_v),
                ref(beta), data(res_t, res_v), int_ref(ldres_v),
            ]
            function_type = ir.FunctionType(ir.VoidType(), [value.type for value in arguments])
            builder.call(builder.inttoptr(address_v, function_type.as_pointer()), arguments)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(gemm_at)


_gemm_at = _gemm_intrinsic("N")
"""Call the Fortran GEMM at ``address`` (``sgemm`` or ``dgemm``, matching the
arrays' dtype) for ``res[r, :m] = a[r] @ w[:, :m] + beta * res[r, :m]``,
row-major: ``n`` rows of ``a`` (row stride ``lda``) and of ``res``
(``ldres``), ``w (k, >= m)`` with unit steps along its rows. Column-major,
``w`` is the ``m x k`` matrix ``w^T`` (leading dimension ``w``'s row length)
and ``res^T = w^T a^T``: ``gemm('N', 'N', m, n, k, 1, w, ldw, a, lda, beta,
res, ldres)``. Each array's data pointer is where its matrix starts (pass a
view)."""

_gemm_t_at = _gemm_intrinsic("T")
"""As :func:`_gemm_at`, with ``a`` read transposed: ``res[r, :m] =
a[:k, r] @ w[:, :m] + beta * res[r, :m]``, ``a``'s ``k`` rows of ``n``
values with row stride ``lda`` (``gemm('N', 'T', ...)``)."""


@jit(inline="always")
def product(a, acol, w, res, n0, n1, gemm):
    """The per-step product ``res[n - n0] = a[n, acol : acol + K] @ w`` for rows
    ``n0 <= n < n1``, by :func:`matmul_rows` (``gemm == (0, 0)``) or by the
    BLAS GEMM ``gemm = (address, rows)`` (see :func:`rnnkit.kernels.blas.per_step_gemm`),
    in calls of ``rows`` rows counted from row 0 (``n0`` is a multiple of
    it), so that a row's result does not depend on how the batch was split.

    Shapes: ``a (N, >= acol + K)`` and ``res (n1 - n0, >= M)`` with unit
    steps along their rows; ``w (K, M)`` C-contiguous with ``M`` whole vectors
    (:func:`padded_width`, zeros past the real columns), as :func:`step_weight`
    makes it.
    """
    if gemm[0] == 0:
        matmul_rows(a, acol, w, res, n0, n1)
    else:
        _blas_rows(a, acol, w, res, n0, n1, w.shape[1], 0, gemm)


@jit(inline="always")
def product_add(a, acol, w, res, n0, n1, width, gemm):
    """:func:`product` added to what ``res`` holds, over its first ``width``
    columns only: ``res[n - n0, :width] += a[n, acol : acol + K] @ w[:, :width]``,
    so that ``res`` may be a view into a wider buffer (a step's gates, whose
    input projection is there already)."""
    if gemm[0] == 0:
        matmul_add_rows(a, acol, w, res, n0, n1, width)
    else:
        _blas_rows(a, acol, w, res, n0, n1, width, 1, gemm)


@jit(inline="always")
def _blas_rows(a, acol, w, res, n0, n1, width, beta, gemm):
    address, rows = gemm
    k = w.shape[0]
    lda, ldres = a.strides[0] // a.itemsize, res.strides[0] // res.itemsize
    for b0 in range(n0, n1, rows):
        b1 = min(b0 + rows, n1)
        _gemm_at(address, width, b1 - b0, k, w, a[b0, acol:], lda, beta, res[b0 - n0], ldres)


@jit
def products_repeatedly(a, w, res, times, gemm):
    """``res = a @ w`` ``times`` times over, by :func:`product` (``gemm`` as
    there): what a sequence's per-step products cost alone, back to back
    (``rnnkit bench``'s floor). Shapes: ``a (N, K)``, ``w (K, M)`` as
    :func:`product` has it, ``res (N, M)``, C-contiguous."""
    for _ in range(times):
        product(a, 0, w, res, 0, a.shape[0], gemm)


@jit
def transposed_product(a, b, out, r0, r1, k0, k1, gemm):
    """``out[r] = sum over k0 <= k < k1 of a[k, r] * b[k]`` for ``r0 <= r < r1``:
    a block of ``a^T @ b`` over a span of the inner dimension (a weight's
    gradient, ``dz^T x``, :func:`rnnkit.kernels.dense.matmul`), one call of
    the BLAS GEMM at address ``gemm``, in compiled code, so that it runs
    without Python's lock. Shapes: ``a (K, M)``, ``b (K, N)`` and ``out
    (M, N)``, each with unit steps along its rows."""
    lda, ldout = a.strides[0] // a.itemsize, out.strides[0] // out.itemsize
    _gemm_t_at(gemm, b.shape[1], r1 - r0, k1 - k0, b[k0:], a[k0, r0:], lda, 0, out[r0], ldout)


# -- random masks ------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@jit
def bernoulli_fill(out, p, seed):
    """``out[i] = 1`` with probability ``p``, else ``0``, for a 1-D ``out``:
    entry ``i`` compares 53 bits of SplitMix64's output for ``seed + i *
    golden`` (Steele, Lea & Flood 2014) with ``p * 2^53``, so a seed gives one
    mask however it is computed, and every entry is independent of the
    others. 0.05 ms for 409,600 entries here, against 0.96 ms for torch's
    ``uniform_().lt_(p)`` on two threads."""
    one, zero = out.dtype.type(1), out.dtype.type(0)
    base, threshold = np.uint64(seed), np.uint64(p * 9007199254740992.0)  # p * 2^53
    for i in range(out.shape[0]):
        z = base + np.uint64(i) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
        out[i] = one if (z >> np.uint64(11)) < threshold else zero
