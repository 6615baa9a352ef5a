'''Source text of the depthwise conv's tensor-core form, pasted after kernels.py's text into
generated modules with 2-D maps (a 1-D map always runs in the direct form, so a module of
1-D convs leaves this out: kernels.DIRECT_ONLY).

Each row tap of a KH x KW depthwise map is a banded (Toeplitz) matrix product on a strip of
input rows, [BH, BK] @ [BK, BW] per channel with BK >= BW + KW - 1, so the taps run on tensor
cores with fp32 accumulation:

    u[c, r, j] = sum_i sum_k x[c, r + i - PH, k] T_i[c, k, j]
    T_i[c, k, j] = w[c, i, k - j - shift]   (0 outside 0 <= k - j - shift < KW)

`dwconv_toeplitz_fwd_kernel` computes kernels.py's contract (gate, weighted accumulation,
the dense bias folded by linearity) this way, `dwconv_toeplitz_wgrad_kernel` the weight
gradient; the first launch of each shape times the candidate tiles (`fastest`). The direct
form's launchers reach this form through TENSOR_CORES (at the end of RUNTIME), and where the
GPU compiler rejects a launch, the conv falls back to the direct form.
'''

KERNEL = '''
if triton is not None:

    @triton.jit
    def tf32_high(v):
        """v (fp32) with the low 13 mantissa bits cleared: exact in TF32, and v - tf32_high(v)
        holds the rest, so two TF32 products of a TF32-exact factor give v's fp32 product to
        ~2^-21 relative (a product of 0/1 masks needs no split of its own)."""
        return (v.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)


    @triton.jit
    def strip_tile(x, o_rb, o_r, o_k, o_c, m_ck, i_kh, PH: tl.constexpr, H, W, s_xn, s_xc,
                   STRIP_CACHE: tl.constexpr):
        """[BC, R, BK] x[b, c, r + i_kh - PH, k] of the Toeplitz kernels (x: [B, N, C], token
        n = r * W + k of image b; o_rb: [R] offsets b * s_xb of each row's image, or one
        offset for all; o_r: [R] rows r in their image, o_k: [BK] columns k, o_c: [BC]
        channels, m_ck: [BC, 1, BK] channel and column validity); 0 outside the image."""
        o_hi = o_r + (i_kh - PH)  # [R] input rows
        m_h = inside(o_hi, H)
        p_x = (x + (o_rb + o_hi * W * s_xn)[None, :, None] + o_k[None, None, :] * s_xn
               + o_c[:, None, None] * s_xc)
        return tl.load(p_x, mask=m_ck & m_h[None, :, None], other=0.,
                       cache_modifier=STRIP_CACHE)


    @triton.jit
    def stacked_rows(r0, BH: tl.constexpr, H, B, I64: tl.constexpr):
        """Rows r0 + (0..BH-1) of the B images' H rows stacked, as (o_b, o_r, o_rt), each
        [BH]: the image of each row (a row past the last image: in the last, with o_r >= H,
        so its outputs are masked; its strip loads may read the last image's rows, unused),
        its row in that image, the stacked row; the image
        and the stacked row in int64 where I64 (an offset reaches 2**31)."""
        o_rt = r0 + tl.arange(0, BH)
        o_b = (o_rt.to(tl.uint32) // H.to(tl.uint32)).to(tl.int32)  # one unsigned division
        o_b = tl.minimum(o_b, B - 1)
        o_r = o_rt - o_b * H
        if I64:
            o_b, o_rt = o_b.to(tl.int64), o_rt.to(tl.int64)
        return o_b, o_r, o_rt


    @triton.jit
    def slab_tile(x, r0, o_k, o_c, m_ck, PH, H, W, s_xn, s_xc, STRIP_CACHE: tl.constexpr,
                  BC: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
        """[32, BC * BH / 16 * BK] windows laid side by side: row b of window (c, q) holds
        x[c, r0 + 16 q + b - PH, k] (q < BH / 16; x: one image, strip_tile's other
        arguments), every input row the row taps (KH <= 17) of output rows
        r0 + 16 q + (0..15) read."""
        o_q = tl.arange(0, 2 * BH)  # window q = o_q // 32, row b = o_q % 32
        b_slab = strip_tile(x, 0, r0 + 16 * (o_q // 32) + o_q % 32, o_k, o_c, m_ck, 0, PH, H,
                            W, s_xn, s_xc, STRIP_CACHE)  # [BC, 2 BH, BK]
        b_slab = tl.permute(tl.reshape(b_slab, (BC, BH // 16, 32, BK)), (2, 0, 1, 3))
        return tl.reshape(b_slab, (32, BC * (BH // 16) * BK))


    @triton.jit
    def slab_strip(b_slab, i_kh, BC: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
        """strip_tile(..., i_kh, ...) for output rows r0 + (0..BH-1) from slab_tile's b_slab:
        rows a of block q are window rows a + i_kh, so the strip is S @ b_slab with the 0/1 shift
        S[a, b] = [b = a + i_kh] ([16, 32]): one tensor-core product whose every element has
        one nonzero term (exact), taken by the next product from registers."""
        o_a, o_b = tl.arange(0, 16), tl.arange(0, 32)
        s_i = (o_b[None, :] == o_a[:, None] + i_kh).to(b_slab.dtype)  # [16, 32]
        DOT: tl.constexpr = "ieee" if b_slab.dtype == tl.float32 else "tf32"  # fp32: exact too
        b_x = tl.dot(s_i, b_slab, input_precision=DOT).to(b_slab.dtype)  # [16, BC BH / 16 BK]
        b_x = tl.permute(tl.reshape(b_x, (16, BC, BH // 16, BK)), (1, 2, 0, 3))
        return tl.reshape(b_x, (BC, BH, BK))


    @triton.jit
    def in_bias_conv(w, bi, o_c, m_c, o_r, o_j, H, W, KH: tl.constexpr, KW: tl.constexpr,
                     PH: tl.constexpr, PW: tl.constexpr, KP: tl.constexpr, BC: tl.constexpr,
                     BH: tl.constexpr, BW: tl.constexpr):
        """[BC, BH, BW] bi * conv(1), the input bias's share of conv(x + bi) at output rows o_r
        ([BH]) and columns o_j ([BW]) of channels o_c ([BC], valid where m_c):
        conv(1)[c, r, j] = sum_i [row r + i - PH in the grid] q_i[c, j] and
        q_i[c, j] = sum_m w[c, i, m] [column j + m - PW in the grid]; q = taps @ column mask
        and conv(1) = row mask @ q, small products of 0/1 masks (exact in TF32) and of the
        taps, or q, split in two TF32 halves (tf32_high), padded to KP >= KH, KW, 16."""
        o_p = tl.arange(0, KP)  # [KP] taps along a row or a column (zero past KH, KW)
        p_w = (w + o_c[:, None, None] * (KH * KW) + o_p[None, :, None] * KW
               + o_p[None, None, :])
        m_w = m_c[:, None, None] & (o_p < KH)[None, :, None] & (o_p < KW)[None, None, :]
        b_w = tl.load(p_w, mask=m_w, other=0.).to(tl.float32)  # [BC, KP, KP] taps
        o_wi = o_j[None, :] + (o_p[:, None] - PW)  # [KP, BW] column of tap m
        f_w = tl.broadcast_to(inside(o_wi, W).to(tl.float32)[None, :, :],
                              (BC, KP, BW))
        w_hi = tf32_high(b_w)
        b_q = tl.dot(w_hi, f_w, input_precision="tf32")
        b_q = tl.dot(b_w - w_hi, f_w, b_q, input_precision="tf32")  # [BC, KP, BW] q_i
        o_hi = o_r[:, None] + (o_p[None, :] - PH)  # [BH, KP] row of tap i
        f_h = tl.broadcast_to(inside(o_hi, H).to(tl.float32)[None, :, :],
                              (BC, BH, KP))
        q_hi = tf32_high(b_q)
        b_1 = tl.dot(f_h, q_hi, input_precision="tf32")
        b_1 = tl.dot(f_h, b_q - q_hi, b_1, input_precision="tf32")  # [BC, BH, BW] conv(1)
        return b_1 * tl.load(bi + o_c, mask=m_c, other=0.).to(tl.float32)[:, None, None]


    @triton.jit(do_not_specialize=["H", "W", "B"])  # one compile for every grid
    def dwconv_toeplitz_fwd_kernel(
        x, t, w, b, bi, g, a, sa, s, z, o, u,
        s_xb, s_xn, s_xc, s_gn, s_an,  # strides (elements); g, a: channel stride 1 and batch
        # stride H * W times their token stride (token_rows), so a stacked row addresses them
        C, H, W, B,
        KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_IN_BIAS: tl.constexpr, HAS_GATE: tl.constexpr,
        HAS_ACC: tl.constexpr,
        HAS_ACC_SCALE: tl.constexpr, HAS_SCALE: tl.constexpr,
        STORE_Z: tl.constexpr, STORE_O: tl.constexpr, STORE_U: tl.constexpr,
        BH: tl.constexpr, BW: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr,
        HALO: tl.constexpr, ALIGN: tl.constexpr, STRIP_CACHE: tl.constexpr, KP: tl.constexpr,
        BAND_FROM_TAPS: tl.constexpr, SLAB: tl.constexpr, PARTS: tl.constexpr,
        I64: tl.constexpr = False, FOLD: tl.constexpr = False,
    ):
        """dwconv_hadamard_fwd_kernel's contract on tensor cores (banded Toeplitz products).

        For row tap i and channel c, the row convolution of the [BH, BK] input strip starting at
        column w0 - HALO is a product with the banded matrix t[c, i] ([BK, BW], built by
        toeplitz_operand: t[c, i, k, j] = w[c, i, k - j - (HALO - PW)] inside the band, else 0):
        out[c, r, j] += sum_k x[c, r + i - PH, w0 - HALO + k] t[c, i, k, j].
        One [BC, BH, BW] output tile costs KH batched [BH, BK] @ [BK, BW] dots;
        BK >= BW + HALO + KW - 1 - PW. Row tiles run over the B * H rows of the B images
        stacked, so a tile spans images where BH does not divide H (no tile is padded to BH
        per image: 14 x 14 images fill 64-row tiles); each row reads only its own image.
        SLAB tiles one image's rows (each image's tiles in turn on axis 0), as its windows are
        shared between rows. With a channel-major x (s_xn = 1), ALIGN | W and
        ALIGN | HALO, every ALIGN-column group of the strip is wholly inside or outside the grid,
        so the masked strip loads stay ALIGN-element vectors (asynchronous copies into shared
        memory; 16 bytes at ALIGN = 8 in 16-bit). Consecutive row taps read strips that share
        BH - 1 of their BH rows: STRIP_CACHE = ".ca" makes the copies allocate in L1 (Triton's
        default 16-byte copy, cp.async.cg, caches in L2 only), so a tap may find its rows there
        (where Triton keeps the modifier; one stage's plain loads are the other L1 path).
        BAND_FROM_TAPS: t[c, i] gathered from the taps w (KW values a row, cached in L1) instead
        of read from the precomputed band (BK * BW values a row, from L2); t is then not
        read.
        SLAB (KH <= 17, 16 | BH): the strips without a load per row tap. Output rows
        r0 + 16 q + a (a < 16) of row tap i read input rows r0 + 16 q - PH + (a + i), inside
        the 32-row window starting at r0 + 16 q - PH; one [BC, 2 BH, BK] load holds the windows
        of all BH / 16 blocks q (slab_tile), and tap i's strip is a 0/1 row-shift product of
        them on tensor cores, exact (slab_strip). L2 then serves each strip row twice per
        program instead of about KH times, for ~3x the tensor-core work.
        PARTS: the strip's BK columns in PARTS parts of BP = BK / PARTS >= 16, each with its
        own tap loop (and slab): the band product sums over k, so the tile is the sum over
        parts of KH [BH, BP] @ [BP, BW] products each, and only one part's operands are live.

        STORE_U: u = conv(x + bi) + b, before the gate, stored too (float32, as the recompute
        gave it), so the backward takes u from it instead of recomputing the conv.

        HAS_IN_BIAS: the input is x + bi (bi: [C], the bias of the dense map that wrote x, so
        that map needs no pass of its own to add it). By linearity conv(x + bi) = conv(x) +
        bi * conv(1), conv(1) counting the taps that land inside the grid (in_bias_conv, from
        w: [C, KH, KW], the unrounded taps).
        """
        tl.static_assert(BK >= BW + HALO + KW - 1 - PW, "the strip must hold every tap")
        tl.static_assert(not SLAB or (KH <= 17 and BH % 16 == 0), "SLAB: KH <= 17, 16 | BH")
        tl.static_assert(BK % PARTS == 0 and BK // PARTS >= 16, "parts of 16+ columns")
        tl.static_assert(HALO % ALIGN == 0, "aligned strips start on an ALIGN column")
        # == themselves (the launcher checks ALIGN divides them); tells the compiler so
        W, s_xb, s_xc = (W // ALIGN) * ALIGN, (s_xb // ALIGN) * ALIGN, (s_xc // ALIGN) * ALIGN
        i_hw, i_c = tl.program_id(0), grid_axis1(FOLD)
        if SLAB:  # axis 0: each image's row and column tiles in turn; I64: index_widths
            i_b, i_hw = outer_tile(tl.cdiv(H, BH) * tl.cdiv(W, BW), I64)
        # fp32 x: IEEE products (CUDA cores), as the direct form; 16-bit x: tensor cores (the
        # precision argument applies to fp32 operands alone)
        DOT: tl.constexpr = "ieee" if x.dtype.element_ty == tl.float32 else "tf32"
        i_h, i_w = i_hw // tl.cdiv(W, BW), i_hw % tl.cdiv(W, BW)
        if SLAB:  # row tiles of one image (i_b): its windows hold no other image
            o_r = i_h * BH + tl.arange(0, BH)  # [BH] output rows
            o_rt = i_b * H + o_r  # [BH] their rows among the images' rows stacked
        else:  # row tiles over the B * H rows of the images stacked: a tile may span images
            o_b, o_r, o_rt = stacked_rows(i_h * BH, BH, H, B, I64)
        o_j = i_w * BW + tl.arange(0, BW)  # [BW] output columns
        o_c = i_c * BC + tl.arange(0, BC)  # [BC] channels
        m_c = o_c < C
        if I64:  # the band's C * KH * BK * BW elements may pass 2**31 (the launcher's flag)
            o_cb = o_c.to(tl.int64)
        else:
            o_cb = o_c
        BP: tl.constexpr = BK // PARTS  # strip columns per part
        b_u = tl.zeros([BC, BH, BW], dtype=tl.float32)  # [BC, BH, BW] conv accumulator
        for i_p in tl.static_range(PARTS):
            o_p = i_p * BP + tl.arange(0, BP)  # [BP] this part's columns k of the strip
            o_k = i_w * BW - HALO + o_p  # [BP] their input columns
            m_ck = m_c[:, None, None] & inside(o_k, W)[None, None, :]  # [BC, 1, BP]
            if BAND_FROM_TAPS:  # band element (k, j) is tap k - j - (HALO - PW) of the row
                o_m = o_p[:, None] - tl.arange(0, BW)[None, :] - (HALO - PW)  # [BP, BW]
                m_band = m_c[:, None, None] & ((o_m >= 0) & (o_m < KW))[None, :, :]
            else:  # offsets of the precomputed band's [BP, BW] rows of this part
                o_tk = (o_p[:, None] * BW + tl.arange(0, BW)[None, :])[None, :, :]
            if SLAB:  # every row tap's strip from one load (slab_strip)
                b_slab = slab_tile(x + i_b * s_xb, i_h * BH, o_k, o_c, m_ck, PH, H, W, s_xn,
                                   s_xc, STRIP_CACHE, BC, BH, BP)
            for i_kh in range(KH):
                if SLAB:
                    b_x = slab_strip(b_slab, i_kh, BC, BH, BP)  # [BC, BH, BP]
                else:
                    b_x = strip_tile(x, o_b * s_xb, o_r, o_k, o_c, m_ck, i_kh, PH, H, W, s_xn,
                                     s_xc, STRIP_CACHE)  # [BC, BH, BP]
                if BAND_FROM_TAPS:  # gathered from the taps (a few hundred bytes, L1-resident)
                    p_t = w + o_c[:, None, None] * (KH * KW) + i_kh * KW + o_m[None, :, :]
                    b_t = tl.load(p_t, mask=m_band, other=0.)  # [BC, BP, BW]
                else:  # the precomputed band, from L2
                    p_t = t + (o_cb[:, None, None] * KH + i_kh) * (BK * BW) + o_tk
                    b_t = tl.load(p_t, mask=m_c[:, None, None], other=0.)  # [BC, BP, BW]
                b_u = tl.dot(b_x, b_t.to(b_x.dtype), b_u, input_precision=DOT)
        if HAS_BIAS:
            b_u += tl.load(b + o_c, mask=m_c, other=0.).to(tl.float32)[:, None, None]
        if HAS_IN_BIAS:  # x + bi: conv(x) + bi * conv(1) (in_bias_conv)
            b_u += in_bias_conv(w, bi, o_c, m_c, o_r, o_j, H, W, KH, KW, PH, PW, KP, BC, BH, BW)
        # token b * N + r * W + j of the [B, N, ...] outputs, gate and accumulator is
        # (b * H + r) * W + j: their rows follow the stacked rows
        o_t = (o_rt[:, None] * W + o_j[None, :])[None, :, :]  # [1, BH, BW] tokens
        p_out = o_t * C + o_c[:, None, None]  # contiguous [B, N, C] offsets
        m = m_c[:, None, None] & ((o_r < H)[:, None] & (o_j < W)[None, :])[None, :, :]
        if STORE_U:  # u = conv(x + bi) + b ([B, N, C] contiguous): the backward's dg, ds read it
            tl.store(u + p_out, b_u.to(u.dtype.element_ty), mask=m)
        b_z = b_u
        if HAS_GATE:
            p_g = g + o_t * s_gn + o_c[:, None, None]
            b_z = b_z * tl.load(p_g, mask=m, other=0.).to(tl.float32)
        if STORE_Z:
            tl.store(z + p_out, b_z.to(z.dtype.element_ty), mask=m)
        if STORE_O:
            b_o = b_z
            if HAS_SCALE:
                b_o = b_o * tl.load(s + o_c, mask=m_c, other=0.).to(tl.float32)[:, None, None]
            if HAS_ACC:
                b_a = tl.load(a + o_t * s_an + o_c[:, None, None], mask=m,
                              other=0.).to(tl.float32)
                if HAS_ACC_SCALE:
                    b_a = b_a * tl.load(sa + o_c, mask=m_c, other=0.).to(tl.float32)[:, None, None]
                b_o += b_a
            tl.store(o + p_out, b_o.to(o.dtype.element_ty), mask=m)


    @triton.jit(do_not_specialize=["H", "W", "B", "ROWS"])  # one compile for every grid
    def dwconv_toeplitz_wgrad_kernel(
        x, du, dw,
        s_xb, s_xn, s_xc, s_dub, s_dun, s_duc,  # strides (elements) of x and du, [B, N, C] views
        C, H, W, B, ROWS,
        KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
        BH: tl.constexpr, BW: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr,
        HALO: tl.constexpr, ALIGN: tl.constexpr, STRIP_CACHE: tl.constexpr, BD: tl.constexpr,
        SLAB: tl.constexpr,
        I64: tl.constexpr = False, PARTIAL: tl.constexpr = False, FOLD: tl.constexpr = False,
    ):
        """dw[c, i, d] += sum_{r, j} du[c, r, j] x[c, r + i - PH, j + d - PW] on tensor cores,
        for one [BC channels, BW columns] stripe of ROWS rows (a multiple of BH) of the B
        images' H rows stacked (i_g: the ROWS-row group; a row tile may span images, each row
        reading its own image, so no tile is padded to BH per image); SLAB: of one image's
        rows (i_g: the image; its windows are shared between rows).

        Per row tile and row tap i, P[c, j, k] = sum_r du[c, r, j] x[c, r + i - PH, w0 - HALO + k]
        is a batched [BW, BH] @ [BH, BK] product (the forward's strip, transposed du tile);
        then dw[c, i, d] += sum_j P[c, j, j + d + HALO - PW] (a diagonal sum, 0 <= d < KW: one
        gather along k, one sum along j). dw: [C, KH, KW]
        fp32, summed over stripes and row groups. BK >= BW + HALO + KW - 1 - PW;
        ALIGN and STRIP_CACHE as in the forward (the row taps re-read the stripe's x rows).
        Row tiles outside, taps inside: each du tile is loaded and transposed once for all
        taps, the tap loop is the one pipelined, and the diagonal sums of each (tile, tap)
        are added to dw as they come (they are linear in P). SLAB (KH <= 17, 16 | BH): each
        row tile's strips from one load, as in the forward (slab_tile, slab_strip).
        PARTIAL: dw is [groups * stripes, C, KH, KW], a row of partial sums for each program,
        which adds its (tile, tap) sums there in a fixed order (deterministic).
        """
        tl.static_assert(BK >= BW + HALO + KW - 1 - PW, "the strip must hold every lag")
        tl.static_assert(not SLAB or (KH <= 17 and BH % 16 == 0), "SLAB: KH <= 17, 16 | BH")
        tl.static_assert(HALO % ALIGN == 0, "aligned strips start on an ALIGN column")
        # == themselves (the launcher checks ALIGN divides them, for x and du); tells the compiler
        W, s_xb, s_xc = (W // ALIGN) * ALIGN, (s_xb // ALIGN) * ALIGN, (s_xc // ALIGN) * ALIGN
        s_dub, s_duc = (s_dub // ALIGN) * ALIGN, (s_duc // ALIGN) * ALIGN
        stripes = tl.cdiv(W, BW)  # axis 0: each group's stripes in turn (< 2**31 programs)
        i_g, i_w, i_c = tl.program_id(0) // stripes, tl.program_id(0) % stripes, grid_axis1(FOLD)
        if PARTIAL:  # this program's [C, KH, KW] row of partial sums
            i_p = tl.program_id(0)
            dw += (i_p.to(tl.int64) if I64 else i_p) * C * (KH * KW)
        # fp32 x: IEEE products (CUDA cores), as the direct form; 16-bit x: tensor cores (the
        # precision argument applies to fp32 operands alone)
        DOT: tl.constexpr = "ieee" if x.dtype.element_ty == tl.float32 else "tf32"
        o_j = i_w * BW + tl.arange(0, BW)  # [BW] output columns
        o_k = i_w * BW - HALO + tl.arange(0, BK)  # [BK] input columns of the strip
        o_c = i_c * BC + tl.arange(0, BC)  # [BC] channels
        m_c = o_c < C
        m_cj = m_c[:, None, None] & (o_j < W)[None, None, :]  # [BC, 1, BW]
        m_ck = m_c[:, None, None] & inside(o_k, W)[None, None, :]  # [BC, 1, BK]
        # column of P holding lag d in row j: j + d + HALO - PW (< BK for d < KW)
        o_d = tl.arange(0, BD)  # [BD] lags, BD = next power of two >= KW
        o_lag = tl.arange(0, BW)[:, None] + o_d[None, :] + (HALO - PW)  # [BW, BD]
        o_lag = tl.broadcast_to(tl.minimum(o_lag, BK - 1)[None, :, :], (BC, BW, BD))
        m_d = (o_d < KW)[None, :]  # [1, BD]
        p_d = du + o_j[None, None, :] * s_dun + o_c[:, None, None] * s_duc
        if SLAB:  # rows of image i_g
            i_b = i_g
            if I64:  # an offset reaches 2**31 (index_widths): batch offsets in int64
                i_b = i_b.to(tl.int64)
            o_xb, o_dub = i_b * s_xb, i_b * s_dub  # the image's offsets in x and du
            r_lo, r_hi = 0, H
        else:  # stacked rows [i_g ROWS, (i_g + 1) ROWS), the last group cut at B H
            r_lo = i_g * ROWS
            r_hi = tl.minimum(r_lo + ROWS, B * H)
        for i_r in range(r_lo, r_hi, BH):  # row tiles; the tap loop inside is the pipelined one
            if SLAB:
                o_r = i_r + tl.arange(0, BH)  # [BH] du rows in the image
            else:
                o_b, o_r, _ = stacked_rows(i_r, BH, H, B, I64)  # [BH] images, rows in them
                o_xb, o_dub = o_b * s_xb, o_b * s_dub  # [BH] each row's image offsets
            b_dt = tl.load(p_d + (o_dub + o_r * W * s_dun)[None, :, None],
                           mask=m_cj & (o_r < H)[None, :, None], other=0.)  # [BC, BH, BW]
            b_dt = tl.permute(b_dt, (0, 2, 1)).to(x.dtype.element_ty)  # [BC, BW, BH], once
            if SLAB:  # the row tile's strips from one load, as in the forward
                b_slab = slab_tile(x + o_xb, i_r, o_k, o_c, m_ck, PH, H, W, s_xn, s_xc,
                                   STRIP_CACHE, BC, BH, BK)
            for i_kh in range(KH):
                if SLAB:
                    b_x = slab_strip(b_slab, i_kh, BC, BH, BK)  # [BC, BH, BK]
                else:
                    b_x = strip_tile(x, o_xb, o_r, o_k, o_c, m_ck, i_kh, PH, H, W, s_xn, s_xc,
                                     STRIP_CACHE)  # [BC, BH, BK]
                b_p = tl.dot(b_dt, b_x, input_precision=DOT)  # [BC, BW, BK] P of row tap i
                b_s = tl.sum(tl.gather(b_p, o_lag, axis=2), axis=1)  # [BC, BD] diagonal sums
                accumulate(dw + o_c[:, None] * (KH * KW) + i_kh * KW + o_d[None, :], b_s,
                           m_c[:, None] & m_d, PARTIAL)
'''

RUNTIME = '''
def dwconv_toeplitz_config(c: int, kw: int, gpu: bool, rows: int = 64,
                           pad_w: int | None = None, align: int = 1) -> dict[str, int]:
    """Tiles of the tensor-core kernel: [BH, BK] @ [BK, BW] per channel. The strip starts HALO
    columns left of the tile (pad_w rounded up to `align`, so aligned strips stay aligned) and
    BK >= BW + HALO + kw - 1 - pad_w. BH rows share each Toeplitz operand, so tall tiles (up to
    the `rows` they run over: every image's rows stacked, or one image's for a slab) cut its
    loads per output; 8 channels per program (4 at BW = 32) keep
    the [BC, BH, BW] accumulator in registers. num_stages is explicit so that the sm_90 checks
    (tests/triton/test_triton_aot.py) compile what launches: Triton keeps num_stages - 1
    buffers of the dot operands in shared memory, and an H200 timed 2 and 3 stages within 3%
    (benchmarks/results/gpu_profile.md)."""
    pad_w = kw // 2 if pad_w is None else pad_w
    bw = 16 if kw <= 17 else 32
    halo = -(-pad_w // align) * align
    return {"BH": tile_rows(64 if bw == 16 else 32, rows) if gpu else 16, "BW": bw,
            "BK": next_power_of_2(bw + halo + kw - 1 - pad_w), "HALO": halo,
            "ALIGN": align, "STRIP_CACHE": "", "SLAB": False,
            "BC": min((8 if bw == 16 else 4) if gpu else 64, next_power_of_2(c)),
            "num_warps": 8 if gpu else 1, "num_stages": 3}


def toeplitz_grid(cfg: dict, b: int, height: int, width: int, c: int) -> tuple[int, ...]:
    """dwconv_toeplitz_fwd_kernel's programs (axis 0: row and column tiles, axis 1: channel
    blocks): row tiles over the b images' rows stacked (a tile may span images), or, SLAB,
    over one image's rows, for each image in turn."""
    rows = height if cfg.get("SLAB") else b * height
    tiles = cdiv(rows, cfg["BH"]) * cdiv(width, cfg["BW"])
    return tiles * (b if cfg.get("SLAB") else 1), cdiv(c, cfg["BC"])


def wgrad_grid(cfg: dict, b: int, height: int, width: int, c: int
               ) -> tuple[tuple[int, int], int]:
    """dwconv_toeplitz_wgrad_kernel's programs (axis 0: each row group's column stripes in
    turn, axis 1: channel blocks) and the rows of a group: about an image's rows, rounded up
    to whole BH tiles, of the b images' rows stacked (b * height rows in cdiv(b * height, BH)
    tiles: none padded per image); SLAB: one image's (a group an image)."""
    stripes, blocks = cdiv(width, cfg["BW"]), cdiv(c, cfg["BC"])
    if cfg.get("SLAB"):
        return (b * stripes, blocks), height
    group = cdiv(height, cfg["BH"]) * cfg["BH"]
    return (cdiv(b * height, group) * stripes, blocks), group


def tile_rows(bh: int, rows: int) -> int:
    """BH, halved (down to 16) while the rows a tile runs over fill half of it or less."""
    while bh > 16 and rows <= bh // 2:
        bh //= 2
    return bh


# (BC, BH, num_warps) tried beside the default tile on a GPU, per BW: every one compiles for
# sm_90 without spills (tests/triton/test_triton_aot.py), but for (8, 64, 4) and (16, 64, 8)
# with a 17-tap input bias folded (KP = 32), which spill a few bytes per thread outside their
# loops; the SASS census cannot rank them
# (occupancy, latency and sector use decide: BC = 16 moves whole 32-byte sectors of the
# token-major gate, accumulator and outputs, BC = 8 half sectors), so the first launch of each
# shape times them
TOEPLITZ_ALTERNATIVES = {16: ((8, 64, 4), (16, 32, 4), (8, 32, 4), (16, 64, 8)),
                         32: ((4, 32, 4), (8, 32, 8), (4, 64, 4))}

# the default tiles with strip loads that may hit L1, tried beside it on a GPU: row tap i + 1
# re-reads BH - 1 of the BH strip rows tap i read, from L2 by default (what bounds the kernel:
# benchmarks/results/gpu_profile.md). ".ca" copies allocate in L1 (where the installed Triton
# compiles them to the default's code, fastest does not time them: SAME_CODE); one stage
# issues plain loads, cached in L1; two stages leave L1 more of the SM's shared-memory/L1
# storage than three. Whether L1 keeps a program's [BC, BH + KH - 1, BK] rows is what the
# timing decides.
TOEPLITZ_L1_VARIANTS = ({"STRIP_CACHE": ".ca"}, {"STRIP_CACHE": ".ca", "num_stages": 2},
                        {"num_stages": 1})
# and with the band gathered from the taps in the kernel (BAND_FROM_TAPS): less L2 traffic
# for more instructions (benchmarks/results/triton_aot.md); where one wins, no band operand is
# built at all. With strips through L1 as well, L2 would serve each strip row about once per
# program.
TOEPLITZ_BAND_VARIANTS = ({"BAND_FROM_TAPS": True},
                          {"BAND_FROM_TAPS": True, "STRIP_CACHE": ".ca"},
                          {"BAND_FROM_TAPS": True, "num_stages": 1})
# and with the strips taken from one slab per program (SLAB, KH <= 17: row-shift products on
# tensor cores instead of a strip load per row tap): a program loads each strip row about
# twice instead of KH times, for more tensor-core work and registers; at 2 stages, with the
# band gathered from the taps as well, and on 4 channels and 4 warps (more programs an SM)
SLAB_MAX_TAPS = 17  # row taps whose rows, for 16 output rows, fit in slab_tile's 32-row window
# PADRE_TRITON_CONV values that force the slab -> the strip's column parts (PARTS) they ask for
SLAB_FORMS = {"slab": 1, "slab2": 2}


def slab_fits(kh: int, forced: bool = False) -> bool:
    """Whether the slab serves kh row taps (and, with forced, PADRE_TRITON_CONV=slab or
    slab2 asks for it)."""
    asked = not forced or os.environ.get("PADRE_TRITON_CONV") in SLAB_FORMS
    return asked and kh <= SLAB_MAX_TAPS


# and with the strip's columns in two parts of one slab and one tap loop each (PARTS = 2,
# where BK / 2 >= 16, tl.dot's least K): only half the shift product's [16, BC * BH / 16 * BK]
# result is live, so an SM holds more programs, for more instructions (at 3 and 2 stages).
# And on 32 rows (at most the default's BH): the shift product's result halves again, for
# more instructions and band traffic (each band tile serves half the rows). Registers,
# programs an SM and instructions: benchmarks/results/triton_aot*.md
TOEPLITZ_SLAB_VARIANTS = ({"SLAB": True}, {"SLAB": True, "num_stages": 2},
                          {"SLAB": True, "BAND_FROM_TAPS": True},
                          {"SLAB": True, "BC": 4, "num_warps": 4, "num_stages": 2},
                          {"SLAB": True, "PARTS": 2}, {"SLAB": True, "PARTS": 2, "num_stages": 2},
                          {"SLAB": True, "BH": 32, "num_stages": 2})
# the forward's flags a config may leave out, at their defaults (the weight gradient, which
# shares the configs' tiles, takes neither)
TOEPLITZ_FWD_DEFAULTS = {"BAND_FROM_TAPS": False, "PARTS": 1}


def toeplitz_shared_bytes(cfg: dict[str, int], elem_bytes: int, wgrad: bool = False) -> int:
    """Shared memory of the Toeplitz forward's largest tl.dot: Triton keeps num_stages - 1
    buffers of its operands, [BC, BH, BP] + [BC, BP, BW] (the band product; BP = BK / PARTS
    columns) or, with SLAB, [16, 32] + [32, BC * BH / 16 * BP] (the row shift); the weight
    gradient's (wgrad), [BC, BW, BH] + [BC, BH, BK] or the same row shift."""
    bp = cfg["BK"] // cfg.get("PARTS", 1)
    band = cfg["BC"] * (cfg["BH"] * (cfg["BW"] + bp) if wgrad else bp * (cfg["BH"] + cfg["BW"]))
    shift = 16 * 32 + 32 * cfg["BC"] * cfg["BH"] // 16 * bp if cfg.get("SLAB") else 0
    return max(band, shift) * elem_bytes * max(cfg["num_stages"] - 1, 1)


# the dot operands a Toeplitz config may hold (toeplitz_shared_bytes, which counts their
# buffers alone): below an H100's 227 KiB a block by room for the compiler's own scratch;
# the legality check and the sm_90 compiles hold the whole to 227 KiB
SHARED_BYTES = 192 * 1024


def fit_shared(cfg: dict[str, int], elem_bytes: int, wgrad: bool = False) -> dict[str, int]:
    """cfg with BH halved (down to 16) until its dot operands fit in SHARED_BYTES: for a tile
    that is forced (PADRE_TRITON_CONV=slab or slab2), where a candidate would be left out."""
    while cfg["BH"] > 16 and toeplitz_shared_bytes(cfg, elem_bytes, wgrad) > SHARED_BYTES:
        cfg = dict(cfg, BH=cfg["BH"] // 2)
    return cfg


@functools.cache  # once per launch shape: every forward asks
def dwconv_toeplitz_configs(c: int, kw: int, gpu: bool, rows: int = 64,
                            pad_w: int | None = None, align: int = 1,
                            elem_bytes: int = 2, kh: int | None = None,
                            height: int | None = None) -> tuple[dict[str, int], ...]:
    """The default tiles, then (on a GPU) the alternatives and the default's L1, band and
    slab variants (slab: kh <= 17; kh defaults to kw): same BW, BK, HALO, so one band operand
    serves them all; BH shrinks to the rows as in the default (a variant's BH is at
    most the default's), the slab's to one image's `height` (default: rows), the rows its
    tiles run over. An alternative whose
    dot operands would pass 192 KiB of shared memory (toeplitz_shared_bytes) is left out
    (32-bit inputs), and so is one whose column parts are narrower than 16. Shared between
    calls: not to be modified."""
    base = dwconv_toeplitz_config(c, kw, gpu, rows=rows, pad_w=pad_w, align=align)
    candidates = []
    for bc, bh, warps in TOEPLITZ_ALTERNATIVES[base["BW"]] if gpu else ():
        candidates.append(dict(base, BC=min(bc, next_power_of_2(c)), BH=tile_rows(bh, rows),
                               num_warps=warps))
    slab = TOEPLITZ_SLAB_VARIANTS if slab_fits(kw if kh is None else kh) else ()
    for variant in TOEPLITZ_L1_VARIANTS + TOEPLITZ_BAND_VARIANTS + slab if gpu else ():
        cfg = dict(base, **variant)
        bh = tile_rows(cfg["BH"], rows if not cfg["SLAB"] or height is None else height)
        candidates.append(dict(cfg, BC=min(cfg["BC"], next_power_of_2(c)),
                               BH=min(bh, base["BH"])))
    configs = [base]
    for cfg in candidates:
        if (cfg not in configs and toeplitz_shared_bytes(cfg, elem_bytes) <= SHARED_BYTES
                and cfg["BK"] // cfg.get("PARTS", 1) >= 16):
            configs.append(cfg)
    return tuple(configs)


# the weight gradient's first launch of a shape times these beside its default tiles: strips
# cached in L1 (its row taps re-read them as the forward's do: ".ca" copies, or one stage's
# plain loads), 2 stages (the tap loop is the pipelined one), and 32-row tiles (at most the
# default's rows), which hold fewer registers than 64 rows on 4- and 2-aligned strips for
# more instructions (benchmarks/results/triton_aot*.md)
WGRAD_VARIANTS = ({"STRIP_CACHE": ".ca"}, {"num_stages": 2},
                  {"STRIP_CACHE": ".ca", "num_stages": 2}, {"num_stages": 1}, {"BH": 32})
# and (KH <= 17) with each row tile's strips from one slab, as the forward's SLAB; nothing is
# loaded in its tap loop, so its pipeline depth makes no difference
WGRAD_SLAB = {"SLAB": True}


@functools.cache  # once per launch shape: every backward asks
def wgrad_configs(c: int, kh: int, kw: int, gpu: bool, b: int, height: int, pad_w: int,
                  align: int, elem_bytes: int = 2) -> tuple[tuple[dict, ...], dict]:
    """(candidates, slab): the weight gradient's tiles for b images of `height` rows, the
    default (its row tiles over the images' rows stacked) then on a GPU WGRAD_VARIANTS and
    (kh <= 17) the slab, no variant's tile taller than the default's nor its dot operands
    past 192 KiB of shared memory (32-bit inputs); and the slab on one image's rows (what
    PADRE_TRITON_CONV=slab forces), its rows cut to fit that memory (fit_shared). Shared
    between calls: not to be modified."""
    base = dwconv_toeplitz_config(c, kw, gpu, rows=b * height, pad_w=pad_w, align=align)
    slab = dict(base, **WGRAD_SLAB, BH=tile_rows(base["BH"], height))
    configs = [base]
    for cfg in (*(dict(base, **v) for v in WGRAD_VARIANTS),
                *((slab,) if slab_fits(kh) else ())) if gpu else ():
        cfg = dict(cfg, BH=min(cfg["BH"], base["BH"]))
        if (cfg not in configs
                and toeplitz_shared_bytes(cfg, elem_bytes, wgrad=True) <= SHARED_BYTES):
            configs.append(cfg)
    return tuple(configs), fit_shared(slab, elem_bytes, wgrad=True)


def in_bias_tile(kh: int, kw: int) -> int:
    """KP of dwconv_toeplitz_fwd_kernel's input-bias products: the taps of a row or a column
    padded to a power of two >= 16 (tl.dot's least extent)."""
    return max(16, next_power_of_2(max(kh, kw)))


TUNED: dict[tuple, dict[str, int]] = {}  # launch shape -> fastest tiles
TIMES: dict[tuple, list[tuple[dict[str, int], float]]] = {}  # -> (candidate, median ms) timed
# launch shape -> (candidate, the earlier candidate it compiled to the same machine code as):
# a variant the installed Triton lowers as it lowers another (Triton 3.6 issues the strip's
# ".ca" copies as cp.async.cg: benchmarks/results/triton_aot_triton-3.6.0.md) is not timed
SAME_CODE: dict[tuple, list[tuple[dict[str, int], dict[str, int]]]] = {}


def machine_code(handle) -> bytes | str | None:
    """The cubin (else PTX) of the compiled kernel a Triton launch returns; None where the
    launch returns none (the interpreter)."""
    asm = getattr(handle, "asm", None)
    return None if asm is None else asm.get("cubin") or asm.get("ptx")


def compile_together(configs: tuple[dict[str, int], ...], launch) -> None:
    """Compile the kernel of every `launch(cfg)` at once, on a thread pool (Triton's async
    compile mode: its compiler releases the GIL and ptxas is a process): the launches made here
    only compile (start), and their kernels land in the JIT's cache, where fastest's first
    launch of each finds them. A candidate that fails to compile is left to fastest, which
    meets the error again and skips it. Nothing to do under the interpreter, with fewer than
    two candidates or on a Triton without the async mode; where the mode cannot start (one
    is active already) fastest compiles the candidates one after another."""
    if INTERPRETED or len(configs) < 2:
        return
    try:
        from triton.runtime._async_compile import AsyncCompileMode, active_mode
    except ImportError:
        return
    if active_mode.get() is not None:  # one mode at a time: another owns this context
        return
    token = COMPILING.set(True)
    try:
        with (ThreadPoolExecutor(min(len(configs), os.cpu_count() or 1)) as pool,
              AsyncCompileMode(pool, ignore_errors=True)):
            for cfg in configs:
                with contextlib.suppress(Exception):
                    launch(cfg)
    finally:
        COMPILING.reset(token)


def fastest(key: tuple, configs: tuple[dict[str, int], ...], launch) -> dict[str, int]:
    """The config of `configs` whose `launch(cfg)` is fastest for this launch shape, timed once
    per process (triton.testing.do_bench medians); the first with one candidate, with
    PADRE_TRITON_TUNE=0 or under deterministic algorithms (the tiles set the order of the fp32
    sums, and timings pick different tiles from run to run). Every candidate is compiled first,
    all at once (compile_together), then each is launched once: one that raises (a tile this GPU
    cannot compile or fit) is skipped, and if every one raises the first error propagates; one
    whose launch returns the same machine code as an earlier candidate's (machine_code) is
    recorded in SAME_CODE, not timed; the others' medians in TIMES. Timing launches the kernel:
    warm a module up before capturing it in a CUDA graph."""
    if (len(configs) == 1 or os.environ.get("PADRE_TRITON_TUNE") == "0"
            or torch.are_deterministic_algorithms_enabled()):
        return configs[0]
    if key not in TUNED:
        compile_together(configs, launch)
        ms, errors, seen = [], [], {}
        for cfg in configs:
            try:
                code = machine_code(launch(cfg))
                if code is not None and code in seen:
                    SAME_CODE.setdefault(key, []).append((cfg, seen[code]))
                    ms.append(float("inf"))
                    continue
                seen.setdefault(code, cfg)
                ms.append(triton.testing.do_bench(lambda cfg=cfg: launch(cfg), warmup=5, rep=20,
                                                  return_mode="median"))
                TIMES.setdefault(key, []).append((cfg, ms[-1]))
            except torch.OutOfMemoryError:  # memory, not the candidate
                raise
            except Exception as err:  # any compile or launch failure: not a candidate
                ms.append(float("inf"))
                errors.append(err)
        if len(errors) == len(configs):
            raise errors[0]
        TUNED[key] = configs[ms.index(min(ms))]
    return TUNED[key]


def strip_alignment(x: torch.Tensor, width: int) -> int:
    """The largest a in (8, 4, 2) that divides the width, x's batch and channel strides and its
    offset, where x is channel-major ([B, N, C] view with token stride 1); else 1. Every a-column
    group of a grid row then starts a * element-size aligned and lies wholly inside or outside
    the grid, so the strip loads of dwconv_toeplitz_fwd_kernel are a-element vectors (16 bytes
    in 16-bit at a = 8: padre3 at 56 x 56; 8 bytes at 28 x 28; 4 bytes at 14 x 14)."""
    if x.stride(1) != 1:
        return 1
    for a in (8, 4, 2):
        if (width % a == 0 and x.stride(0) % a == 0 and x.stride(2) % a == 0
                and x.data_ptr() % (a * x.element_size()) == 0):
            return a
    return 1


def toeplitz_operand(weight: torch.Tensor, bk: int, bw: int, shift: int,
                     dtype: torch.dtype) -> torch.Tensor:
    """[C, KH, BK, BW] banded matrices t[c, i, k, j] = weight[c, i, k - j - shift] for
    0 <= k - j - shift < KW, else 0: row tap i of channel c as a product on the strip.

    Built on every launch (C * KH * BK * BW elements: 13 MB for padre3's 3C-wide conv in bf16,
    read from L2 by the kernel): weights made per forward by torch.cat have no identity to cache
    it by. Two kernels, a zero fill and one strided copy: tap m of column j sits at
    k = j + shift + m, i.e. at offset (j + shift + m) * bw + j of the [bk, bw] matrix, so the
    [C, KH, BW, KW] view with strides (KH * BK * BW, BK * BW, BW + 1, BW) from offset
    shift * BW holds exactly the band (distinct (j, m) give distinct offsets, as j is the offset
    mod bw; the largest k, bw - 1 + shift + kw - 1, is < bk by the tile rule)."""
    c, kh, kw = weight.shape
    bands = weight.new_zeros((c, kh, bk, bw), dtype=dtype)
    band = bands.as_strided((c, kh, bw, kw), (kh * bk * bw, bk * bw, bw + 1, bw), shift * bw)
    band.copy_(weight[:, :, None, :].expand(c, kh, bw, kw))
    return bands



# where a tensor-core launch failed (a GPU compiler rejecting its 3-D dot), and why: the
# forward's by toeplitz_scope, the weight gradient's by its launch key
TOEPLITZ_FAILED: dict[tuple, str] = {}
WGRAD_FAILED: dict[tuple, str] = {}


def toeplitz_scope(x: torch.Tensor, channels: int, height: int, kh: int, kw: int,
                   dtype: torch.dtype | None = None) -> tuple[object, ...]:
    """The scope of a failed Toeplitz launch, for a conv of `channels` channels and kh x kw
    taps on x's B images of N tokens in `height` rows (x: [B, N, ...], the conv's input or the
    dense map's that writes it; `dtype`: the conv input's, default x.dtype): (device, dtype, B,
    N, C, H, KH, KW). The device and the dtype (the dots' operand type; its size sizes the
    tiles) and the conv's shape, which picks the candidate tiles (channels, the rows stacked,
    taps), so a failure stays with the convs whose dots a compiler sees alike. Left out is
    what the callers that decide the form before the launch cannot know: the input's layout
    and alignment (dense_for_conv picks the layout by this decision) and the epilogue's flags
    (fixed for each conv of a generated module by its region, whose padding its taps fix)."""
    return (x.device, dtype or x.dtype, x.shape[0], x.shape[1], channels, height, kh, kw)


def toeplitz_takes(x: torch.Tensor, height: int, kw: int, dtype: torch.dtype | None = None,
                   kh: int = 1) -> bool:
    """Whether the tensor-core form takes a conv of kh x kw taps over `height` rows of x
    (conv_form's automatic choice; `dtype`: the conv input's, default x.dtype): 16-bit 2-D
    maps of 8 rows or more, of kernels up to 33 x 33, on a GPU. Past 33 taps a side the folded
    input bias's [KP, KP] tap tile (KP the power of two covering both sides) needs more shared
    memory than a GPU has (legality checker)."""
    sixteen = (dtype or x.dtype) in (torch.float16, torch.bfloat16)
    return x.is_cuda and sixteen and height >= 8 and max(kh, kw) <= 33


def toeplitz_failed(x: torch.Tensor, channels: int, height: int, kh: int, kw: int,
                    dtype: torch.dtype | None = None) -> bool:
    """Whether a Toeplitz launch of the conv's scope (toeplitz_scope) has failed."""
    return toeplitz_scope(x, channels, height, kh, kw, dtype) in TOEPLITZ_FAILED


def dense_for_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   height: int, kh: int, kw: int, fold_bias: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(y, left): F.linear(x, weight, bias) = y + left for the input of a depthwise conv of kh x
    kw taps. Where the conv runs in the Toeplitz form (tensor_core_form) y is stored
    channel-major (one GEMM, weight @ x^T, into a
    contiguous [B, C, N] returned as its [B, N, C] view), so the kernel reads each channel's
    grid rows as 16-byte vectors instead of transposing [token, channel] tiles in shared
    memory; and with fold_bias (the conv is y's only reader) the bias is left out, `left`,
    for the conv to add by linearity (dwconv_hadamard's in_bias) instead of a pass over y.
    Elsewhere F.linear adds it (cuBLAS's epilogue) and left is None.

    The product is ChannelMajorLinear's (bmm in its forward, token-major dx in its backward)."""
    kind = x.device.type
    out = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
    if not tensor_core_form(x, weight.shape[0], height, kh, kw, out):
        return F.linear(x, weight, bias), None
    grads = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    y = (ChannelMajorLinear.apply if grads else ChannelMajorLinear.product)(x, weight, out)
    if bias is None or fold_bias:
        return y.mT, bias
    return y.add_(bias[:, None]).mT, None


class ChannelMajorLinear(torch.autograd.Function):
    """y[b] = W x[b]^T ([B, N, C_in] -> [B, C_out, N] contiguous) in `dtype` (autocast's, cast
    here), with dx[b] = dy[b]^T W token-major and dW = sum_b dy[b] x[b].

    bmm, not matmul: torch.matmul(weight, x.mT) with a weight that requires grad folds into
    x @ weight^T and copies the token-major product to channel-major (a transposing pass over
    the activation); bmm on the expanded weight (batch stride 0) writes channel-major itself.
    Its own backward, W^T dy, would give dx channel-major too, and each reader of dx (the
    fused backward, a leaf's gradient) copies it to token-major: dy^T W is the same GEMM with
    token-major output."""

    @staticmethod
    def product(x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The forward without autograd's bookkeeping (no gradient wanted): [B, C_out, N]."""
        return torch.bmm(weight.to(dtype).expand(x.shape[0], -1, -1), x.to(dtype).mT)

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ctx.dtypes = x.dtype, weight.dtype
        x, weight = x.to(dtype), weight.to(dtype)
        dx_wanted, dw_wanted = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if dw_wanted else None, weight if dx_wanted else None)
        return ChannelMajorLinear.product(x, weight, dtype)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        dx = dw = None
        if weight is not None:  # [B, N, C_in] = dy^T W per image
            dx = torch.matmul(dy.to(weight.dtype).mT, weight).to(ctx.dtypes[0])
        if x is not None:  # sum_b dy[b] x[b]: one GEMM over all tokens where both flatten
            dy = dy.to(x.dtype)
            g = dy.mT  # [B, N, C_out]
            if all(t.shape[0] == 1 or t.stride(0) == t.shape[1] * t.stride(1) for t in (g, x)):
                dw = g.reshape(-1, g.shape[2]).mT @ x.reshape(-1, x.shape[2])  # views
            else:  # a layout whose images do not flatten into one token axis: summed per image
                dw = torch.bmm(dy, x).sum(0)
            dw = dw.to(ctx.dtypes[1])
        return dx, dw, None


def token_rows(t: torch.Tensor | None) -> torch.Tensor | None:
    """t ([B, N, C]) with its batch stride N times its token stride, so that token b * N + n
    lies at (b * N + n) * that stride, as the Toeplitz forward addresses its gate and
    accumulator (a slice of a wider tensor's channels qualifies): t itself where it does; at
    N = 1 the view whose token stride is its batch stride (torch counts any [B, 1, C] layout
    contiguous, so a copy could keep the token stride); else a contiguous copy."""
    if t is None or t.shape[0] == 1 or t.stride(0) == t.shape[1] * t.stride(1):
        return t
    if t.shape[1] == 1:
        return t.as_strided(t.shape, (t.stride(0), t.stride(0), t.stride(2)))
    return t.contiguous()



def dwconv_toeplitz_launch(x, weight, bias, gate, acc, acc_scale, scale, height: int,
                           width: int, pad_h: int, pad_w: int, z, o, in_bias, u,
                           flags: dict) -> bool:
    """dwconv_hadamard_launch's launch on tensor cores (its arguments, z and o never None, and
    the flags it gives the direct kernel): dwconv_toeplitz_fwd_kernel on the first launch's
    fastest candidate tiles (fastest), or the slab PADRE_TRITON_CONV forces. False where the
    GPU compiler rejects the kernel: the conv's scope (toeplitz_scope) is recorded in
    TOEPLITZ_FAILED and takes the direct form from then on (a channel-major x is read through
    its strides), with a warning."""
    b, _, c = x.shape
    kh, kw = weight.shape[1], weight.shape[2]
    gate, acc = token_rows(gate), token_rows(acc)  # read by the stacked token index
    dummy = x  # never read: the matching HAS_* flag is off
    align = strip_alignment(x, width)
    configs = dwconv_toeplitz_configs(c, kw, x.is_cuda, rows=b * height, pad_w=pad_w,
                                      align=align, elem_bytes=x.element_size(), kh=kh,
                                      height=height)
    if slab_fits(kh, forced=True):  # the first slab candidate in parts that fits in shared
        # memory (CPU: the default tiles' slab)
        parts = min(SLAB_FORMS[os.environ["PADRE_TRITON_CONV"]], configs[0]["BK"] // 16)
        configs = next(((cfg,) for cfg in configs
                        if cfg["SLAB"] and cfg.get("PARTS", 1) == parts),
                       (fit_shared(dict(configs[0], SLAB=True, PARTS=parts),
                                   x.element_size()),))
    first = configs[0]  # BW, BK, HALO: shared by every candidate
    # the band's C * KH rows of BK * BW elements: offsets past 2**31 in int64 (not in x's)
    flags = dict(flags, I64=flags["I64"] or c * kh * first["BK"] * first["BW"] >= 2**31)

    def band(cfg):  # built by every launch that reads it, as every forward does: the first
        # launch's timings charge it to the candidates that need it
        if cfg.get("BAND_FROM_TAPS"):
            return dummy
        return toeplitz_operand(weight, first["BK"], first["BW"], first["HALO"] - pad_w,
                                x.dtype)

    g_strides, a_strides = row_strides(gate), row_strides(acc)
    args = (weight, dummy if bias is None else bias, dummy if in_bias is None else in_bias,
            *conv_tail(dummy, gate, acc, acc_scale, scale, z, o), dummy if u is None else u,
            *x.stride(), g_strides[1], a_strides[1], c, height, width, b)

    def launch(cfg):
        grid = toeplitz_grid(cfg, b, height, width, c)
        return start(dwconv_toeplitz_fwd_kernel, grid)(
            x, band(cfg), *args, **flags, STORE_U=u is not None,
            HAS_IN_BIAS=in_bias is not None, KP=in_bias_tile(kh, kw),
            **(TOEPLITZ_FWD_DEFAULTS | cfg))

    key = (x.device, x.dtype, z.dtype, o.dtype, tuple(x.shape), x.stride(), height, width,
           tuple(weight.shape), pad_h, pad_w, align, in_bias is not None, u is not None,
           tuple(flags.values()), weight.dtype, getattr(gate, "dtype", None), g_strides,
           getattr(acc, "dtype", None), a_strides)  # what specialises the kernel
    try:
        launch(fastest(key, configs, launch))
        return True
    except (torch.OutOfMemoryError, GridLimitError):  # memory or the grid, not the
        raise  # compiler: the form stays
    except Exception as err:  # a GPU compiler that rejects the 3-D dot
        if os.environ.get("PADRE_TRITON_CONV") in TENSOR_CORE_FORMS:
            raise
        TOEPLITZ_FAILED[toeplitz_scope(x, c, height, kh, kw)] = repr(err)
        warnings.warn(f"dwconv_toeplitz_fwd_kernel failed ({err!r:.300}); falling back to "
                      f"dwconv_hadamard_fwd_kernel for {x.dtype} convs of {kh} x {kw} "
                      f"taps over {c} channels of {b} x {height} x {width} on {x.device}",
                      RuntimeWarning, stacklevel=3)
        return False

def in_bias_grads(du: torch.Tensor, weight: torch.Tensor, in_bias: torch.Tensor, height: int,
                  width: int, pad_h: int, pad_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bi * G, dbi): the input bias's term of dw (the weight gradient wgrad took of x alone)
    and its own gradient dbi = sum_tokens dx = sum_{i, m} w[c, i, m] G[c, i, m], G the in-grid
    sums of du (in_grid_tap_sums): no pass over dx."""
    grid_sums = in_grid_tap_sums(du, height, width, *weight.shape[1:], pad_h, pad_w)  # G
    return in_bias.float()[:, None, None] * grid_sums, (weight.float() * grid_sums).sum((1, 2))


def in_grid_tap_sums(du: torch.Tensor, height: int, width: int, kh: int, kw: int, pad_h: int,
                     pad_w: int) -> torch.Tensor:
    """G[c, i, m] = sum_{b, r, j} du[b, (r, j), c] [0 <= r + i - pad_h < height]
    [0 <= j + m - pad_w < width] (fp32 [C, KH, KW]): the weight gradient of a depthwise conv
    whose input is 1 on the grid. One reduction over the batch, then two small products."""
    b, n, c = du.shape
    total = du.sum(0, dtype=torch.float32).reshape(height, width, c)  # [H, W, C]
    return torch.einsum("ri,rjc,jm->cim", in_grid(height, kh, pad_h, du.device), total,
                        in_grid(width, kw, pad_w, du.device))


@functools.cache  # per grid side, taps and device: every backward asks (read-only)
def in_grid(length: int, taps: int, pad: int, device: torch.device) -> torch.Tensor:
    """[length, taps] fp32 0/1: [0 <= r + i - pad < length] for output r and tap i."""
    o = torch.arange(length, device=device)[:, None] + torch.arange(taps, device=device)
    return ((o >= pad) & (o < length + pad)).float()


def dwconv_toeplitz_wgrad_launch(x, du, dw, height: int, width: int, pad_h: int,
                                 pad_w: int, partial: bool = False) -> None:
    """dw += the weight gradient of the depthwise map (fp32 [C, KH, KW]) from x and du, on
    tensor cores; torch's conv2d_weight where the GPU compiler rejects the kernel (for that
    launch key from then on: WGRAD_FAILED). On a GPU the first launch of a shape times
    WGRAD_VARIANTS beside the default (into a scratch dw: the kernel accumulates). partial:
    each program sums into a row of its own, and torch adds the rows (deterministic)."""
    b, _, c = x.shape
    kh, kw = dw.shape[1], dw.shape[2]
    align = min(strip_alignment(x, width), strip_alignment(du, width))
    configs, slab = wgrad_configs(c, kh, kw, x.is_cuda, b, height, pad_w, align,
                                  x.element_size())
    if slab_fits(kh, forced=True):
        configs = (slab,)

    def launch(cfg, out):
        grid, group = wgrad_grid(cfg, b, height, width, c)
        rows = out.new_zeros((grid[0], *out.shape)) if partial else out
        handle = start(dwconv_toeplitz_wgrad_kernel, grid)(
            x, du, rows, x.stride(0), x.stride(1), x.stride(2), du.stride(0), du.stride(1),
            du.stride(2), c, height, width, b, group, KH=kh, KW=kw, PH=pad_h, PW=pad_w,
            BD=next_power_of_2(kw), I64=index_widths(x, du, rows)["I64"], PARTIAL=partial,
            **cfg)
        if partial:
            out += rows.sum(0)
        return handle

    # the launch key: what picks the tiles and the compile (device, dtypes, layouts and their
    # alignment, shape, taps, padding, the summation mode's kernel body); the fallback needs
    # no decision before the launch, so a failure is kept for this key alone
    key = ("wgrad", x.device, x.dtype, du.dtype, tuple(x.shape), x.stride(), du.stride(),
           height, width, kh, kw, pad_h, pad_w, align, partial)
    if key not in WGRAD_FAILED:
        try:
            launch(fastest(key, configs, lambda cfg: launch(cfg, torch.empty_like(dw))), dw)
            return
        except (torch.OutOfMemoryError, GridLimitError):  # memory or the grid, not the
            raise  # compiler: the form stays
        except Exception as err:  # a GPU compiler that rejects the 3-D dot: torch (cuDNN)
            if os.environ.get("PADRE_TRITON_CONV") in TENSOR_CORE_FORMS:
                raise
            WGRAD_FAILED[key] = repr(err)
            warnings.warn(f"dwconv_toeplitz_wgrad_kernel failed ({err!r:.300}); dw from "
                          f"torch.nn.grad.conv2d_weight for its {x.dtype} launches of {kh} x "
                          f"{kw} taps over {tuple(x.shape)} at these strides on {x.device}",
                          RuntimeWarning, stacklevel=2)
    dw += _depthwise_weight_grad(x.float(), du.float(), kh, kw, height, width, pad_h, pad_w)




# the tensor-core form as the form-independent launchers above reach it (conv_form,
# tensor_core_form, dwconv_hadamard_launch, the backward); a module whose convs are all 1-D
# leaves out this form's kernels and launchers, and sets TENSOR_CORES to None
TENSOR_CORES = types.SimpleNamespace(
    takes=toeplitz_takes, failed=toeplitz_failed, launch=dwconv_toeplitz_launch,
    wgrad=dwconv_toeplitz_wgrad_launch, in_bias_grads=in_bias_grads)
'''

# tl.dot tiles per kernel, (batch, M, N, K), for the static GPU-legality check (the generated
# module carries them as DOT_TILES)
DOT_TILES = {"dwconv_toeplitz_fwd_kernel": [(1, 16, "BC * (BH // 16) * BP", 32, "SLAB"),
                                            ("BC", "BH", "BW", "BP"),
                                            *[("BC", "KP", "BW", "KP", "HAS_IN_BIAS")] * 2,
                                            *[("BC", "BH", "BW", "KP", "HAS_IN_BIAS")] * 2],
             "dwconv_toeplitz_wgrad_kernel": [(1, 16, "BC * (BH // 16) * BK", 32, "SLAB"),
                                              ("BC", "BW", "BK", "BH")]}
