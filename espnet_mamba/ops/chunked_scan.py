"""Mamba's selective scan cut along time into chunks that run side by side (Triton).

mamba-ssm's scan kernel walks each (batch, channel) row's whole sequence inside one thread
block. A batch of one long recording therefore gives the GPU only E rows of work, each
sequential over all L frames: at 32k frames (E 2304, N 24) on an H200 it takes 2.68 ms as one
row against 1.85 ms for the same frames as 16 rows. This scan cuts time into chunks of T
frames and runs them in parallel. The forward pass has three passes:

1. ``_scan_chunks(WRITE_OUTPUT=False)``: each chunk is scanned from a zero state; its end
   state h_end[k] and the sum of its dt are kept, (batch, K, N, E) and (batch, K, E);
2. ``_chain_chunks``: one sweep over the K chunks per (channel, state) turns them into each
   chunk's true start state, h_start[k + 1] = exp(A * sum_k dt) * h_start[k] + h_end[k];
3. ``_scan_chunks(WRITE_OUTPUT=True)``: each chunk is scanned again from its true start state,
   writing y = (C . h + D * u) * silu(z).

Every exponential is computed twice (passes 1 and 3), the price of the parallelism.

The backward pass (training) keeps the start states of the forward and runs the same scheme
on the adjoint g_t = dL/dh_t, which flows backwards in time:
g_t = C_t * dy_t + exp(dt_{t+1} A) * g_{t+1}, with dy the gradient of C . h (dout * silu(z)).

4. ``_adjoint_chunks``: each chunk's adjoint from a zero one after its last frame, as it
   leaves the chunk's first frame;
5. ``_chain_chunks(REVERSE=True)``: the same chain from the last chunk to the first gives the
   adjoint flowing into each chunk's last frame;
6. ``_grad_chunks``: per chunk, a forward sweep from h_start keeps every other frame's state
   in a scratch buffer of its program (the states are needed again in reverse order, and a
   frame's state cannot be recovered from the next one without dividing by a decay that
   may underflow; the frame after a kept one needs only exp(dt A) times it) and gives dz and
   dC; a backward sweep from the adjoint flowing in gives du, d(delta) and dB, and sums dA,
   dD and d(delta_bias). dB and dC are sums over all channels: each program writes its
   channel block's sum, and a torch sum adds the blocks.

The tensors are time-major, (batch, L, E), the layout in which in_proj and dt_proj produce
them, so that one frame's channels are one contiguous load.

The recurrence is the one of :mod:`espnet_mamba.ops.selective_scan`, with
dt = softplus(delta + delta_bias). On the GPU the softplus and the sigmoids take PTX's
approximate lg2 and rcp. Triton compiles the kernels on first use, for each number of states
and chunk size (a few seconds). Under ``TRITON_INTERPRET=1`` they run on CPU tensors (the
tests use this). Measurements: docs/benchmarks.md, "Triton kernels for inference" and
"The chunked scan in training".
"""

import math
from typing import Optional, Tuple

import torch

from espnet_mamba.ops.backend import KERNEL_MAX_ELEMENTS, needs_autograd, require_triton, triton_available

if triton_available():
    import triton
    import triton.language as tl

    # Triton's tl.log is a polynomial of about 25 instructions and tl.sigmoid a full-precision
    # division; per frame and channel they were a seventh of pass 1's instructions. PTX's
    # approximate lg2 and rcp are one special-function instruction each. Triton's interpreter
    # (the CPU tests) runs no PTX, so there the exact functions stand in.
    _INTERPRETED = tl.constexpr(triton.knobs.runtime.interpret)

    @triton.jit
    def _log2_approx(x):
        if _INTERPRETED:
            return tl.log2(x)
        else:
            return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                             is_pure=True, pack=1)  # fmt: skip

    @triton.jit
    def _reciprocal_approx(x):
        if _INTERPRETED:
            return 1.0 / x
        else:
            return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                             is_pure=True, pack=1)  # fmt: skip

    @triton.jit
    def _sigmoid(x):
        return _reciprocal_approx(1.0 + tl.exp2(x * -1.4426950408889634))

    @triton.jit
    def _softplus(x):
        """log(1 + e^x), and x itself above 20 (torch's threshold)."""
        return tl.where(x <= 20.0, _log2_approx(1.0 + tl.exp2(x * 1.4426950408889634)) * 0.6931471805599453, x)

    @triton.jit
    def _advance(h, a2, b, dt, dt_u):
        """One frame of the recurrence on a (states, channels) tile; a2 = A log2(e)."""
        return tl.exp2(dt[None, :] * a2) * h + b[:, None] * dt_u[None, :]

    @triton.jit
    def _load_states(at, ok, STATES: tl.constexpr, LOW: tl.constexpr, HIGH: tl.constexpr, PAIRS: tl.constexpr):
        """A frame's B or C at pointer ``at``: its states [0, LOW) and [LOW, STATES), zeros
        where not ok. With PAIRS (bf16, an even number of states, ``at`` 4-byte aligned) they
        are read as int32 words of two states each and returned as float32, one shift or one
        mask a state: converting bf16 loads took about 1.5 instructions a state, and more where
        the compiler moved them through uniform registers."""
        if PAIRS:
            words = at.to(tl.pointer_type(tl.int32))
            low_words, high_words = tl.arange(0, LOW // 2), LOW // 2 + tl.arange(0, HIGH // 2)
            low = _bf16_pairs(tl.load(words + low_words, mask=ok, other=0), LOW)
            if LOW + HIGH > STATES:  # the high tile ends in padding
                high = tl.load(words + high_words, mask=(2 * high_words < STATES) & ok, other=0)
            else:  # a mask that is uniform along the tile keeps the loads vectorised
                high = tl.load(words + high_words, mask=ok, other=0)
            return low, _bf16_pairs(high, HIGH)
        else:
            n_low, n_high = tl.arange(0, LOW), LOW + tl.arange(0, HIGH)
            high = tl.load(at + n_high, mask=(n_high < STATES) & ok, other=0.0)
            return tl.load(at + n_low, mask=ok, other=0.0), high

    @triton.jit
    def _bf16_pairs(words, SIZE: tl.constexpr):
        """int32 words of two bf16 each: the SIZE float32 values they hold, in memory order."""
        low = (words << 16).to(tl.float32, bitcast=True)
        high = (words & -65536).to(tl.float32, bitcast=True)
        return tl.reshape(tl.join(low, high), (SIZE,))

    @triton.jit
    def _block_tiles(pid_e, channels, STATES: tl.constexpr, LOW: tl.constexpr, HIGH: tl.constexpr,
                     BLOCK_E: tl.constexpr):  # fmt: skip
        """Channel block ``pid_e``: its channels e (BLOCK_E), their mask, and the offsets and
        masks of its low and high state tiles in (N, E) memory (A transposed, the states)."""
        e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        n_low, n_high = tl.arange(0, LOW), LOW + tl.arange(0, HIGH)
        e_ok = e < channels
        low_at = n_low[:, None] * channels + e[None, :]
        high_at = n_high[:, None] * channels + e[None, :]
        low_ok2, high_ok2 = (n_low < LOW)[:, None] & e_ok[None, :], (n_high < STATES)[:, None] & e_ok[None, :]
        return e, e_ok, low_at, high_at, low_ok2, high_ok2

    @triton.jit
    def _load_a2(a_ptr, low_at, high_at, low_ok2, high_ok2):
        """A log2(e) on the block's low and high state tiles."""
        a2_low = tl.load(a_ptr + low_at, mask=low_ok2, other=0.0) * 1.4426950408889634
        return a2_low, tl.load(a_ptr + high_at, mask=high_ok2, other=0.0) * 1.4426950408889634

    # Channel offsets of unknown alignment keep every load and store along E scalar: with
    # vector accesses Triton spreads a channel's states over several threads, and the sum
    # over states and each frame's broadcasts then go through shuffles and shared memory.
    @triton.jit(do_not_specialize=["channels", "stride_u_t", "stride_delta_t", "stride_z_t"])
    def _scan_chunks(
        u_ptr, delta_ptr, b_ptr, c_ptr, z_ptr, a_ptr, d_ptr, bias_ptr,
        start_ptr, end_ptr, dt_sum_ptr, out_ptr,
        length, channels,
        stride_u_b, stride_u_t, stride_delta_b, stride_delta_t, stride_b_b, stride_b_t,
        stride_c_b, stride_c_t, stride_z_b, stride_z_t,
        STATES: tl.constexpr, LOW: tl.constexpr, HIGH: tl.constexpr, CHUNK: tl.constexpr,
        BLOCK_E: tl.constexpr, WRITE_OUTPUT: tl.constexpr, PAIRS: tl.constexpr,
    ):  # fmt: skip
        """One (channel block, chunk, batch) per program. The state lives in registers as two
        tiles, states [0, LOW) and [LOW, STATES) by BLOCK_E channels (LOW, HIGH powers of two:
        24 states run as 16 + 8, not padded to 32), all of a channel's states in one thread
        (two channels a thread at the default BLOCK_E of 64 on one warp), so the sum over
        states stays in a thread. Without WRITE_OUTPUT: from zero, store the end state and the
        dt sum. With it: from ``start_ptr``'s state, store y."""
        pid_e, chunk, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        e, e_ok, low_at, high_at, low_ok2, high_ok2 = _block_tiles(
            pid_e, channels, STATES, LOW, HIGH, BLOCK_E)
        a2_low, a2_high = _load_a2(a_ptr, low_at, high_at, low_ok2, high_ok2)
        bias = tl.load(bias_ptr + e, mask=e_ok, other=0.0)
        num_chunks = tl.num_programs(1)
        state_at = start_ptr if WRITE_OUTPUT else end_ptr
        state_at += (batch * num_chunks + chunk) * STATES * channels  # (batch, K, N, E)
        if WRITE_OUTPUT:
            h_low = tl.load(state_at + low_at, mask=low_ok2, other=0.0)
            h_high = tl.load(state_at + high_at, mask=high_ok2, other=0.0)
            d = tl.load(d_ptr + e, mask=e_ok, other=0.0)
        else:
            h_low = tl.zeros((LOW, BLOCK_E), dtype=tl.float32)
            h_high = tl.zeros((HIGH, BLOCK_E), dtype=tl.float32)
            dt_sum = tl.zeros((BLOCK_E,), dtype=tl.float32)
        # Each frame's inputs are loaded one frame ahead, so the loads overlap the arithmetic.
        t = chunk * CHUNK
        u_at = u_ptr + batch * stride_u_b + t * stride_u_t + e
        delta_at = delta_ptr + batch * stride_delta_b + t * stride_delta_t + e
        b_at = b_ptr + batch * stride_b_b + t * stride_b_t
        c_at = c_ptr + batch * stride_c_b + t * stride_c_t
        z_at = z_ptr + batch * stride_z_b + t * stride_z_t + e
        out_at = out_ptr + (batch * length + t) * channels + e
        ok = t < length
        u_next = tl.load(u_at, mask=e_ok & ok, other=0.0)
        delta_next = tl.load(delta_at, mask=e_ok & ok, other=0.0)
        b_low_next, b_high_next = _load_states(b_at, ok, STATES, LOW, HIGH, PAIRS)
        if WRITE_OUTPUT:
            c_low_next, c_high_next = _load_states(c_at, ok, STATES, LOW, HIGH, PAIRS)
            z_next = tl.load(z_at, mask=e_ok & ok, other=0.0)
        for i in range(CHUNK):
            ok, ok_next = t < length, t + 1 < length
            u, delta = u_next.to(tl.float32), delta_next.to(tl.float32)
            b_low, b_high = b_low_next.to(tl.float32), b_high_next.to(tl.float32)
            u_at += stride_u_t
            delta_at += stride_delta_t
            b_at += stride_b_t
            u_next = tl.load(u_at, mask=e_ok & ok_next, other=0.0)
            delta_next = tl.load(delta_at, mask=e_ok & ok_next, other=0.0)
            b_low_next, b_high_next = _load_states(b_at, ok_next, STATES, LOW, HIGH, PAIRS)
            if WRITE_OUTPUT:
                c_low, c_high, z = c_low_next.to(tl.float32), c_high_next.to(tl.float32), z_next.to(tl.float32)
                c_at += stride_c_t
                z_at += stride_z_t
                c_low_next, c_high_next = _load_states(c_at, ok_next, STATES, LOW, HIGH, PAIRS)
                z_next = tl.load(z_at, mask=e_ok & ok_next, other=0.0)
            dt = tl.where(ok, _softplus(delta + bias), 0.0)  # 0 past the end: h stays
            h_low = _advance(h_low, a2_low, b_low, dt, dt * u)
            h_high = _advance(h_high, a2_high, b_high, dt, dt * u)
            if WRITE_OUTPUT:
                y = tl.sum(h_low * c_low[:, None], axis=0) + tl.sum(h_high * c_high[:, None], axis=0)
                y = (y + d * u) * z * _sigmoid(z)
                tl.store(out_at, y.to(out_ptr.dtype.element_ty), mask=e_ok & ok)
                out_at += channels
            else:
                dt_sum += dt
            t += 1
        if not WRITE_OUTPUT:
            tl.store(state_at + low_at, h_low, mask=low_ok2)
            tl.store(state_at + high_at, h_high, mask=high_ok2)
            tl.store(dt_sum_ptr + (batch * num_chunks + chunk) * channels + e, dt_sum, mask=e_ok)

    @triton.jit
    def _chain_input(end_ptr, dt_sum_ptr, chunk_at, k, num_chunks, channels, states, ne, ne_ok, e, e_ok, step):
        """The k-th chunk of the chain's walk (row ``chunk_at + step * k`` of (batch * K)): its
        end state and dt sum, zeros past the last chunk."""
        row = chunk_at + step * k
        more = k < num_chunks
        return (tl.load(end_ptr + row * states * channels + ne, mask=ne_ok & more, other=0.0),
                tl.load(dt_sum_ptr + row * channels + e, mask=e_ok & more, other=0.0))  # fmt: skip

    @triton.jit
    def _chain_chunks(
        a_ptr, end_ptr, dt_sum_ptr, start_ptr, initial_ptr, last_ptr,
        num_chunks, channels, states,
        HAS_INITIAL: tl.constexpr, REVERSE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        """Per (channel block, batch): each chunk's start state from the chunks before it,
        and the state after the last chunk. The chain itself is one multiply-add a chunk, so
        its time is the latency of the loads: each chunk's end state and dt sum are loaded
        four chunks ahead. REVERSE walks from the last chunk to the first: the same chain for
        the adjoint, with a chunk's "end" the adjoint leaving its first frame."""
        pid_e, batch = tl.program_id(0), tl.program_id(1)
        e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        n = tl.arange(0, BLOCK_N)
        e_ok = e < channels
        ne = n[:, None] * channels + e[None, :]
        ne_ok = (n < states)[:, None] & e_ok[None, :]
        a2 = tl.load(a_ptr + ne, mask=ne_ok, other=0.0) * 1.4426950408889634
        if HAS_INITIAL:
            h = tl.load(initial_ptr + batch * states * channels + ne, mask=ne_ok, other=0.0)
        else:
            h = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
        if REVERSE:
            chunk_at, step = batch * num_chunks + num_chunks - 1, -1
        else:
            chunk_at, step = batch * num_chunks, 1
        walk = (end_ptr, dt_sum_ptr, chunk_at)
        offsets = (num_chunks, channels, states, ne, ne_ok, e, e_ok, step)
        end1, dt_sum1 = _chain_input(*walk, 0, *offsets)
        end2, dt_sum2 = _chain_input(*walk, 1, *offsets)
        end3, dt_sum3 = _chain_input(*walk, 2, *offsets)
        end4, dt_sum4 = _chain_input(*walk, 3, *offsets)
        k = 0
        while k < num_chunks:  # a while loop: Triton's interpreter cannot range() over an argument
            end, dt_sum = end1, dt_sum1
            end1, dt_sum1, end2, dt_sum2, end3, dt_sum3 = end2, dt_sum2, end3, dt_sum3, end4, dt_sum4
            end4, dt_sum4 = _chain_input(*walk, k + 4, *offsets)
            tl.store(start_ptr + (chunk_at + step * k) * states * channels + ne, h, mask=ne_ok)
            h = tl.exp2(dt_sum[None, :] * a2) * h + end
            k += 1
        tl.store(last_ptr + batch * states * channels + ne, h, mask=ne_ok)

    @triton.jit
    def _adjoint_frame(delta_ptr, z_ptr, dout_ptr, c_ptr, row, e, e_ok, ok, channels,
                       STATES: tl.constexpr, LOW: tl.constexpr, HIGH: tl.constexpr, PAIRS: tl.constexpr):  # fmt: skip
        """What the adjoint sweep reads of frame ``row`` (batch * L + t), as stored: delta, z,
        dout (channels) and C (low and high states), zeros where not ok."""
        at, m = row * channels + e, e_ok & ok
        delta = tl.load(delta_ptr + at, mask=m, other=0.0)
        z = tl.load(z_ptr + at, mask=m, other=0.0)
        dout = tl.load(dout_ptr + at, mask=m, other=0.0)
        c_low, c_high = _load_states(c_ptr + row * STATES, ok, STATES, LOW, HIGH, PAIRS)
        return delta, z, dout, c_low, c_high

    @triton.jit(do_not_specialize=["channels"])
    def _adjoint_chunks(
        delta_ptr, c_ptr, z_ptr, dout_ptr, a_ptr, bias_ptr, carry_ptr, length, channels,
        STATES: tl.constexpr, LOW: tl.constexpr, HIGH: tl.constexpr, CHUNK: tl.constexpr,
        BLOCK_E: tl.constexpr, PAIRS: tl.constexpr,
    ):  # fmt: skip
        """Per (channel block, chunk, batch), from a zero adjoint after the chunk's last frame
        and backwards through it: the adjoint leaving its first frame t0, exp(dt_t0 A) g_t0,
        (batch, K, N, E). Inputs contiguous, (batch, L, E) and (batch, L, N)."""
        pid_e, chunk, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        e, e_ok, low_at, high_at, low_ok2, high_ok2 = _block_tiles(
            pid_e, channels, STATES, LOW, HIGH, BLOCK_E)
        a2_low, a2_high = _load_a2(a_ptr, low_at, high_at, low_ok2, high_ok2)
        bias = tl.load(bias_ptr + e, mask=e_ok, other=0.0)
        g_low = tl.zeros((LOW, BLOCK_E), dtype=tl.float32)
        g_high = tl.zeros((HIGH, BLOCK_E), dtype=tl.float32)
        t = chunk * CHUNK + CHUNK - 1
        row = batch * length + t
        # each frame's inputs are loaded one frame ahead of their use, which hides their latency
        # (H100: 0.22 -> 0.15 ms at 8 x 750 frames; docs/benchmarks.md, 2026-12-07)
        delta_next, z_next, dout_next, c_low_next, c_high_next = _adjoint_frame(
            delta_ptr, z_ptr, dout_ptr, c_ptr, row, e, e_ok, t < length, channels, STATES, LOW, HIGH, PAIRS)
        for i in range(CHUNK):
            delta, z, dout, c_low, c_high = delta_next, z_next, dout_next, c_low_next, c_high_next
            ok_next = (t - 1 < length) & (i + 1 < CHUNK)
            delta_next, z_next, dout_next, c_low_next, c_high_next = _adjoint_frame(
                delta_ptr, z_ptr, dout_ptr, c_ptr, row - 1, e, e_ok, ok_next, channels, STATES, LOW, HIGH, PAIRS)
            ok = t < length
            z = z.to(tl.float32)
            dy = dout.to(tl.float32) * z * _sigmoid(z)
            dt = tl.where(ok, _softplus(delta.to(tl.float32) + bias), 0.0)
            g_low = tl.exp2(dt[None, :] * a2_low) * (c_low.to(tl.float32)[:, None] * dy[None, :] + g_low)
            g_high = tl.exp2(dt[None, :] * a2_high) * (c_high.to(tl.float32)[:, None] * dy[None, :] + g_high)
            t -= 1
            row -= 1
        state_at = carry_ptr + (batch * tl.num_programs(1) + chunk) * STATES * channels
        tl.store(state_at + low_at, g_low, mask=low_ok2)
        tl.store(state_at + high_at, g_high, mask=high_ok2)

    @triton.jit
    def _frame(u_ptr, delta_ptr, z_ptr, dout_ptr, b_ptr, c_ptr, row, e, e_ok, ok, channels,
               STATES: tl.constexpr, LOW: tl.constexpr, HIGH: tl.constexpr):  # fmt: skip
        """Frame ``row`` (batch * L + t) of the contiguous inputs, as stored: u, delta, z, dout
        (channels) and B, C (low and high states), zeros where not ok."""
        at, m = row * channels + e, e_ok & ok
        u = tl.load(u_ptr + at, mask=m, other=0.0)
        delta = tl.load(delta_ptr + at, mask=m, other=0.0)
        z = tl.load(z_ptr + at, mask=m, other=0.0)
        dout = tl.load(dout_ptr + at, mask=m, other=0.0)
        # not as pairs: in _grad_chunks they made the code longer (docs/benchmarks.md, 2026-12-07)
        b_low, b_high = _load_states(b_ptr + row * STATES, ok, STATES, LOW, HIGH, False)
        c_low, c_high = _load_states(c_ptr + row * STATES, ok, STATES, LOW, HIGH, False)
        return u, delta, z, dout, b_low, b_high, c_low, c_high

    @triton.jit
    def _frame_terms(frame, bias, a2_low, a2_high, ok):
        """A frame's inputs in float32 and what its gradients share: delta + delta_bias, dt,
        dt u, dy = dout silu(z), and the decays exp(dt A) of its states."""
        u, delta, z, dout, b_low, b_high, c_low, c_high = frame
        u, z, dout = u.to(tl.float32), z.to(tl.float32), dout.to(tl.float32)
        x = delta.to(tl.float32) + bias
        dt = tl.where(ok, _softplus(x), 0.0)
        decay_low, decay_high = tl.exp2(dt[None, :] * a2_low), tl.exp2(dt[None, :] * a2_high)
        return (u, x, dt, dt * u, dout * z * _sigmoid(z), b_low.to(tl.float32), b_high.to(tl.float32),
                c_low.to(tl.float32), c_high.to(tl.float32), decay_low, decay_high)  # fmt: skip

    @triton.jit
    def _frame_grads(terms, m_low, m_high, g_low, g_high, da_low, da_high, dd, dbias, a2_low, a2_high, d,
                     du_ptr, ddelta_ptr, share, at, n_low, n_high, high_ok, e_ok, ok):  # fmt: skip
        """One frame t of the backward sweep, given its terms, m_t = exp(dt_t A) h_{t-1} and
        the adjoint from after it, exp(dt_{t+1} A) g_{t+1}: stores du, d(delta) and the block's
        share of dB; returns the adjoint leaving it, exp(dt_t A) g_t, and the running sums of
        dA, dD and d(delta_bias)."""
        u, x, dt, dt_u, dy, b_low, b_high, c_low, c_high, decay_low, decay_high = terms
        g_low += c_low[:, None] * dy[None, :]  # g_t: the adjoint of h_t
        g_high += c_high[:, None] * dy[None, :]
        g_b = tl.sum(g_low * b_low[:, None], axis=0) + tl.sum(g_high * b_high[:, None], axis=0)
        g_am = tl.sum(g_low * a2_low * m_low, axis=0) + tl.sum(g_high * a2_high * m_high, axis=0)
        ddt = g_am * 0.6931471805599453 + g_b * u  # a2 ln 2 = A
        ddelta = tl.where(x <= 20.0, ddt * _sigmoid(x), ddt)  # through the softplus
        tl.store(du_ptr + at, (dt * g_b + d * dy).to(du_ptr.dtype.element_ty), mask=e_ok & ok)
        tl.store(ddelta_ptr + at, ddelta.to(ddelta_ptr.dtype.element_ty), mask=e_ok & ok)
        tl.store(share + n_low, tl.sum(g_low * dt_u[None, :], axis=1), mask=ok)
        tl.store(share + n_high, tl.sum(g_high * dt_u[None, :], axis=1), mask=ok & high_ok)
        da_low += g_low * dt[None, :] * m_low
        da_high += g_high * dt[None, :] * m_high
        dd += dy * u
        dbias += tl.where(ok, ddelta, 0.0)
        return decay_low * g_low, decay_high * g_high, da_low, da_high, dd, dbias

    @triton.jit(do_not_specialize=["channels"])
    def _grad_chunks(
        u_ptr, delta_ptr, b_ptr, c_ptr, z_ptr, dout_ptr, a_ptr, d_ptr, bias_ptr, start_ptr, into_ptr,
        scratch_ptr, du_ptr, ddelta_ptr, dz_ptr, db_ptr, dc_ptr, da_ptr, dd_ptr, dbias_ptr,
        length, channels, num_chunks, num_tiles,
        STATES: tl.constexpr, LOW: tl.constexpr, HIGH: tl.constexpr, CHUNK: tl.constexpr,
        BLOCK_E: tl.constexpr,
    ):  # fmt: skip
        """The gradients, one (channel block, chunk, batch) tile at a time; program p takes
        tiles p, p + P, p + 2P, ... so that its scratch (CHUNK / 2, N, BLOCK_E) is its own.

        Forward sweep from h_start: stores the state of every other frame (0, 2, ...) in the
        scratch, dz, and the block's share of dC (batch, L, channel blocks, N). Backward sweep
        from the adjoint flowing in, two frames at a time, both from one stored state h_t:
        m_{t+1} = exp(dt_{t+1} A) h_t and m_t = h_t - B_t dt_t u_t. It stores du, d(delta) and
        the block's share of dB, and sums dA, dD and d(delta_bias) over the chunk, then adds
        them atomically. Both sweeps load each frame one frame ahead."""
        pid, programs = tl.program_id(0), tl.num_programs(0)
        e_blocks = tl.cdiv(channels, BLOCK_E)
        n_low, n_high = tl.arange(0, LOW), LOW + tl.arange(0, HIGH)
        high_ok = n_high < STATES
        lane = tl.arange(0, BLOCK_E)
        scratch_at = scratch_ptr + pid * (CHUNK // 2) * STATES * BLOCK_E
        scratch_low = scratch_at + n_low[:, None] * BLOCK_E + lane[None, :]
        scratch_high = scratch_at + n_high[:, None] * BLOCK_E + lane[None, :]
        pair_stride = STATES * BLOCK_E
        tile = pid
        while tile < num_tiles:
            pid_e, chunk, batch = tile % e_blocks, (tile // e_blocks) % num_chunks, tile // (e_blocks * num_chunks)
            e, e_ok, low_at, high_at, low_ok2, high_ok2 = _block_tiles(
                pid_e, channels, STATES, LOW, HIGH, BLOCK_E)
            a2_low, a2_high = _load_a2(a_ptr, low_at, high_at, low_ok2, high_ok2)
            bias = tl.load(bias_ptr + e, mask=e_ok, other=0.0)
            d = tl.load(d_ptr + e, mask=e_ok, other=0.0)
            state_at = (batch * num_chunks + chunk) * STATES * channels
            h_low = tl.load(start_ptr + state_at + low_at, mask=low_ok2, other=0.0)
            h_high = tl.load(start_ptr + state_at + high_at, mask=high_ok2, other=0.0)

            t = chunk * CHUNK
            row = batch * length + t
            ahead = _frame(u_ptr, delta_ptr, z_ptr, dout_ptr, b_ptr, c_ptr, row, e, e_ok, t < length, channels, STATES,
                           LOW, HIGH)  # fmt: skip
            for i in range(CHUNK):
                ok = t < length
                u, delta, z, dout, b_low, b_high, c_low, c_high = ahead
                ahead = _frame(u_ptr, delta_ptr, z_ptr, dout_ptr, b_ptr, c_ptr, row + 1, e, e_ok,
                               (t + 1 < length) & (i + 1 < CHUNK), channels, STATES, LOW, HIGH)  # fmt: skip
                u, delta, z, dout = u.to(tl.float32), delta.to(tl.float32), z.to(tl.float32), dout.to(tl.float32)
                dt = tl.where(ok, _softplus(delta + bias), 0.0)
                h_low = _advance(h_low, a2_low, b_low.to(tl.float32), dt, dt * u)
                h_high = _advance(h_high, a2_high, b_high.to(tl.float32), dt, dt * u)
                if i % 2 == 0:
                    tl.store(scratch_low + (i // 2) * pair_stride, h_low)
                    tl.store(scratch_high + (i // 2) * pair_stride, h_high, mask=high_ok[:, None])
                y = tl.sum(h_low * c_low.to(tl.float32)[:, None], axis=0)
                y += tl.sum(h_high * c_high.to(tl.float32)[:, None], axis=0) + d * u
                gate = _sigmoid(z)
                dz = dout * y * gate * (1.0 + z * (1.0 - gate))
                tl.store(dz_ptr + row * channels + e, dz.to(dz_ptr.dtype.element_ty), mask=e_ok & ok)
                dy = dout * z * gate
                share = dc_ptr + (row * e_blocks + pid_e) * STATES
                tl.store(share + n_low, tl.sum(h_low * dy[None, :], axis=1), mask=ok)
                tl.store(share + n_high, tl.sum(h_high * dy[None, :], axis=1), mask=ok & high_ok)
                t += 1
                row += 1

            g_low = tl.load(into_ptr + state_at + low_at, mask=low_ok2, other=0.0)
            g_high = tl.load(into_ptr + state_at + high_at, mask=high_ok2, other=0.0)
            da_low = tl.zeros((LOW, BLOCK_E), dtype=tl.float32)
            da_high = tl.zeros((HIGH, BLOCK_E), dtype=tl.float32)
            dd = tl.zeros((BLOCK_E,), dtype=tl.float32)
            dbias = tl.zeros((BLOCK_E,), dtype=tl.float32)
            t -= 1
            row -= 1
            ahead = _frame(u_ptr, delta_ptr, z_ptr, dout_ptr, b_ptr, c_ptr, row, e, e_ok, t < length, channels, STATES,
                           LOW, HIGH)  # fmt: skip
            h_low_ahead = tl.load(scratch_low + (CHUNK // 2 - 1) * pair_stride)
            h_high_ahead = tl.load(scratch_high + (CHUNK // 2 - 1) * pair_stride, mask=high_ok[:, None], other=0.0)
            for j in range(CHUNK // 2):
                pair, more = CHUNK // 2 - 1 - j, j + 1 < CHUNK // 2
                h_low, h_high = h_low_ahead, h_high_ahead  # the state of the pair's first frame
                h_low_ahead = tl.load(scratch_low + (pair - 1) * pair_stride, mask=more, other=0.0)
                h_high_ahead = tl.load(scratch_high + (pair - 1) * pair_stride, mask=high_ok[:, None] & more,
                                       other=0.0)  # fmt: skip
                # the pair's second frame: m = exp(dt A) h_{t-1}
                ok = t < length
                frame = ahead
                ahead = _frame(u_ptr, delta_ptr, z_ptr, dout_ptr, b_ptr, c_ptr, row - 1, e, e_ok,
                               t - 1 < length, channels, STATES, LOW, HIGH)  # fmt: skip
                terms = _frame_terms(frame, bias, a2_low, a2_high, ok)
                decay_low, decay_high = terms[9], terms[10]
                g_low, g_high, da_low, da_high, dd, dbias = _frame_grads(
                    terms, decay_low * h_low, decay_high * h_high, g_low, g_high, da_low, da_high, dd, dbias,
                    a2_low, a2_high, d, du_ptr, ddelta_ptr, db_ptr + (row * e_blocks + pid_e) * STATES,
                    row * channels + e, n_low, n_high, high_ok, e_ok, ok,
                )  # fmt: skip
                t -= 1
                row -= 1
                # the pair's first frame: m = h_t - B_t dt_t u_t
                ok = t < length
                frame = ahead
                ahead = _frame(u_ptr, delta_ptr, z_ptr, dout_ptr, b_ptr, c_ptr, row - 1, e, e_ok,
                               (t - 1 < length) & more, channels, STATES, LOW, HIGH)  # fmt: skip
                terms = _frame_terms(frame, bias, a2_low, a2_high, ok)
                dt_u, b_low, b_high = terms[3], terms[5], terms[6]
                g_low, g_high, da_low, da_high, dd, dbias = _frame_grads(
                    terms, h_low - b_low[:, None] * dt_u[None, :], h_high - b_high[:, None] * dt_u[None, :],
                    g_low, g_high, da_low, da_high, dd, dbias, a2_low, a2_high, d, du_ptr, ddelta_ptr,
                    db_ptr + (row * e_blocks + pid_e) * STATES, row * channels + e, n_low, n_high, high_ok, e_ok, ok,
                )  # fmt: skip
                t -= 1
                row -= 1
            tl.atomic_add(da_ptr + low_at, da_low, mask=low_ok2)
            tl.atomic_add(da_ptr + high_at, da_high, mask=high_ok2)
            tl.atomic_add(dd_ptr + e, dd, mask=e_ok)
            tl.atomic_add(dbias_ptr + e, dbias, mask=e_ok)
            tile += programs


def default_chunk_size(length: int) -> int:
    """Frames per chunk: sqrt(L) rounded up to a power of two, within [32, 512], so that the
    two sequential parts, a chunk's frames and the chain over the chunks, balance (the
    fastest on an H200 at 2k, 8k and 32k frames: tools/gpu_micro.py chunked_scan)."""
    return int(min(512, max(32, 2 ** math.ceil(math.log2(max(length, 1)) / 2))))


def train_chunk_size(length: int) -> int:
    """Frames per chunk with autograd: at least 64. The backward pass reuses the forward's
    chunks, and its per-chunk work favours longer chunks than the forward's alone (H200,
    E 2304: 1.78 ms at 64 frames against 1.89 at 128 for 8 x 750 frames; docs/benchmarks.md)."""
    return max(64, default_chunk_size(length))


def chunked_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    delta_bias: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    chunk_size: Optional[int] = None,
    block_e: int = 64,
    num_warps: int = 1,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The selective scan, time-major, differentiable in every input but the initial state.

    Args:
        u, delta, z: (batch, L, E), unit stride along E (any stride along batch and L, so
            slices of a wider tensor need no copy). B, C: (batch, L, N), unit stride along N.
        A: (E, N), negative. D, delta_bias: (E,). dt = softplus(delta + delta_bias).
        initial_state: (batch, E, N), the state before the first frame (zeros if None); not
            with autograd.
        chunk_size: frames per chunk (default :func:`default_chunk_size`, or
            :func:`train_chunk_size` with autograd, where it must be even).
        block_e, num_warps: channels per program of the forward passes, and its warps. With
            64 on one warp each thread walks two channels, which hides more latency than 32
            (H100, mamba_base: 43.3 ms at 640 s against 46.0; docs/benchmarks.md).

    Returns:
        y (batch, L, E) in u's dtype, contiguous, and the last state (batch, E, N), float32
        (not differentiable).
    """
    require_triton("the chunked scan")
    batch, length, channels = u.shape
    states = A.shape[1]
    if states < 2:
        raise ValueError(f"the chunked scan needs at least 2 states, got A of shape {tuple(A.shape)}")
    if block_e < 1 or block_e & (block_e - 1):
        raise ValueError(f"block_e must be a power of two (a Triton tile), got {block_e}")
    for name, t, width in (("u", u, channels), ("delta", delta, channels), ("z", z, channels),
                           ("B", B, states), ("C", C, states)):  # fmt: skip
        if t.shape != (batch, length, width) or t.stride(2) != 1:
            raise ValueError(f"{name} must be (batch, L, {width}) with unit stride on its last dim, "
                             f"got {tuple(t.shape)} strides {t.stride()}")  # fmt: skip
    for name, t, shape in (("A", A, (channels, states)), ("D", D, (channels,)), ("delta_bias", delta_bias, (channels,)),
                           ("initial_state", initial_state, (batch, channels, states))):  # fmt: skip
        if t is not None and t.shape != shape:
            raise ValueError(f"{name} must be {shape} for u of shape {tuple(u.shape)}, got {tuple(t.shape)}")
    # The kernels index with 32-bit offsets; the largest tensors are (batch, L, E) and, in the
    # backward, the shares of dB and dC, (batch, L, E / 32, N)
    if batch * length * max(channels, -(-channels // 32) * states) >= KERNEL_MAX_ELEMENTS:
        raise ValueError(f"the chunked scan indexes with 32-bit offsets: {batch} x {length} frames x {channels} "
                         "channels are too many at once; split the batch")  # fmt: skip
    launch = dict(block_e=block_e, num_warps=num_warps)
    if needs_autograd(u, delta, A, B, C, D, z, delta_bias):
        if initial_state is not None:
            raise RuntimeError("the chunked scan's backward pass starts from a zero state: "
                               "call it with an initial_state under torch.no_grad() only")  # fmt: skip
        chunk = chunk_size or train_chunk_size(length)
        if chunk % 2:
            raise ValueError(f"the chunked scan's backward pass takes frames two at a time: chunk_size must be "
                             f"even with autograd, got {chunk}")  # fmt: skip
        out, last = _ChunkedScan.apply(u, delta, A, B, C, D, z, delta_bias, chunk, launch)
        return out, last.transpose(1, 2)
    out, last, _, _ = _scan_forward(u, delta, *_fp32(A, D, delta_bias), B, C, z, initial_state,
                                    chunk_size or default_chunk_size(length), **launch)  # fmt: skip
    return out, last.transpose(1, 2)


def _fp32(A, D, delta_bias) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The parameters as the kernels read them: A as (N, E), channels innermost as in every
    state tensor, and all three float32, contiguous."""
    A, D, delta_bias = (t.detach().float() for t in (A, D, delta_bias))
    return A.t().contiguous(), D.contiguous(), delta_bias.contiguous()


def _state_pairs(*tensors: torch.Tensor) -> bool:
    """Whether the kernels may read these B and C as int32 pairs of bf16 states: bf16, an even
    number of states (at least 4, so that both state tiles hold whole pairs), and every frame's
    states 4-byte aligned."""
    return all(t.dtype == torch.bfloat16 and t.shape[-1] % 2 == 0 and t.shape[-1] >= 4 and t.data_ptr() % 4 == 0
               and all(stride % 2 == 0 for stride in t.stride()[:-1]) for t in tensors)  # fmt: skip


def _split_states(states: int) -> Tuple[int, int]:
    """The state tile as two powers of two: the largest below N, and what is left (24 -> 16, 8)."""
    low = triton.next_power_of_2(states) // 2
    return low, triton.next_power_of_2(states - low)


# Warps of _chain_chunks: its (states, channels) tile and the four chunks loaded ahead fit in
# registers only when spread over a few warps (200 registers a thread with one warp, before the
# loads ahead).
_CHAIN_WARPS = 4


def _scan_forward(u, delta, A, D, delta_bias, B, C, z, initial_state, chunk, block_e, num_warps):
    """Passes 1-3, with A, D, delta_bias from :func:`_fp32`. Returns y (batch, L, E), the last
    state (batch, N, E), and each chunk's start state (batch, K, N, E) and dt sum (batch, K, E),
    float32."""
    batch, length, channels = u.shape
    states = A.shape[0]
    num_chunks = max(1, triton.cdiv(length, chunk))
    f32 = dict(device=u.device, dtype=torch.float32)
    end = torch.empty(batch, num_chunks, states, channels, **f32)
    start = torch.empty_like(end)
    dt_sum = torch.empty(batch, num_chunks, channels, **f32)
    last = torch.empty(batch, states, channels, **f32)
    out = torch.empty(batch, length, channels, device=u.device, dtype=u.dtype)
    low, high = _split_states(states)
    grid = (triton.cdiv(channels, block_e), num_chunks, batch)
    strides = (u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
               C.stride(0), C.stride(1), z.stride(0), z.stride(1))  # fmt: skip
    common = dict(STATES=states, LOW=low, HIGH=high, CHUNK=chunk, BLOCK_E=block_e, PAIRS=_state_pairs(B, C),
                  num_warps=num_warps)
    args = (u, delta, B, C, z, A, D, delta_bias, start, end, dt_sum, out, length, channels)
    _scan_chunks[grid](*args, *strides, WRITE_OUTPUT=False, **common)
    has_initial = initial_state is not None
    initial = initial_state.float().transpose(1, 2).contiguous() if has_initial else last  # last: unread
    _chain_chunks[grid[0], batch](
        A, end, dt_sum, start, initial, last, num_chunks, channels, states,
        HAS_INITIAL=has_initial, REVERSE=False, BLOCK_E=block_e, BLOCK_N=triton.next_power_of_2(states),
        num_warps=_CHAIN_WARPS,
    )  # fmt: skip
    _scan_chunks[grid](*args, *strides, WRITE_OUTPUT=True, **common)
    return out, last, start, dt_sum


# The backward kernels' shape: one channel per thread, the sums over states in a thread (64
# channels a warp, two per thread, ran about 1.5x slower: docs/benchmarks.md).
_GRAD_BLOCK_E = 32
# Programs of _grad_chunks per SM; each loops over tiles, with its own scratch. 8 are as many
# as fit at its 255 registers a thread: 8 to 64 ran at the same speed, 12 17-19% slower
# (likely a partial second wave), and fewer keep less scratch (docs/benchmarks.md,
# 2026-12-07). Under Triton's interpreter (CPU) a few programs, so that the tests run the loop
# over tiles too.
_GRAD_PROGRAMS_PER_SM = 8
_GRAD_PROGRAMS_CPU = 3


def _scan_backward(dout, u, delta, A, D, delta_bias, B, C, z, start, dt_sum, chunk):
    """Steps 4-6, with A, D, delta_bias from :func:`_fp32` and start, dt_sum from the
    forward. Returns the gradients of u, delta, A (E, N), B, C, D, z and delta_bias."""
    u, delta, z, dout, B, C = (t.contiguous() for t in (u, delta, z, dout, B, C))
    batch, length, channels = u.shape
    states, num_chunks = A.shape[0], start.shape[1]
    low, high = _split_states(states)
    e_blocks = triton.cdiv(channels, _GRAD_BLOCK_E)
    common = dict(STATES=states, LOW=low, HIGH=high, CHUNK=chunk, BLOCK_E=_GRAD_BLOCK_E, num_warps=1)
    f32 = dict(device=u.device, dtype=torch.float32)
    leaving = torch.empty_like(start)
    _adjoint_chunks[e_blocks, num_chunks, batch](delta, C, z, dout, A, delta_bias, leaving, length, channels,
                                                  PAIRS=_state_pairs(C), **common)  # fmt: skip
    into, before_first = torch.empty_like(start), torch.empty(batch, states, channels, **f32)
    _chain_chunks[e_blocks, batch](
        A, leaving, dt_sum, into, before_first, before_first, num_chunks, channels, states,
        HAS_INITIAL=False, REVERSE=True, BLOCK_E=_GRAD_BLOCK_E, BLOCK_N=triton.next_power_of_2(states),
        num_warps=_CHAIN_WARPS,
    )  # fmt: skip
    tiles = e_blocks * num_chunks * batch
    per_device = _GRAD_PROGRAMS_CPU
    if u.is_cuda:
        sms = torch.cuda.get_device_properties(u.device).multi_processor_count
        per_device = max(1, int(_GRAD_PROGRAMS_PER_SM * sms))
    programs = min(tiles, per_device)
    scratch = torch.empty(programs, chunk // 2, states, _GRAD_BLOCK_E, **f32)
    du, ddelta, dz = torch.empty_like(u), torch.empty_like(delta), torch.empty_like(z)
    dB_shares = torch.empty(batch, length, e_blocks, states, **f32)
    dC_shares = torch.empty_like(dB_shares)
    dA, dD, dbias = torch.zeros(states, channels, **f32), torch.zeros(channels, **f32), torch.zeros(channels, **f32)
    _grad_chunks[(programs,)](
        u, delta, B, C, z, dout, A, D, delta_bias, start, into, scratch,
        du, ddelta, dz, dB_shares, dC_shares, dA, dD, dbias, length, channels, num_chunks, tiles, **common,
    )  # fmt: skip
    dB, dC = dB_shares.sum(2).to(B.dtype), dC_shares.sum(2).to(C.dtype)
    return du, ddelta, dA.t(), dB, dC, dD, dz, dbias


class _ChunkedScan(torch.autograd.Function):
    """The chunked scan with autograd: the forward keeps its inputs and each chunk's start
    state (batch, K, N, E) float32, so the backward reruns no forward pass."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, chunk, launch):
        A_t, D32, bias32 = _fp32(A, D, delta_bias)
        out, last, start, dt_sum = _scan_forward(u, delta, A_t, D32, bias32, B, C, z, None, chunk, **launch)
        ctx.save_for_backward(u, delta, A_t, B, C, D32, z, bias32, start, dt_sum)
        ctx.chunk, ctx.dtypes = chunk, (A.dtype, D.dtype, delta_bias.dtype)
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    def backward(ctx, dout, _dlast):
        u, delta, A_t, B, C, D, z, bias, start, dt_sum = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, dz, dbias = _scan_backward(
            dout, u, delta, A_t, D, bias, B, C, z, start, dt_sum, ctx.chunk
        )
        a_dtype, d_dtype, bias_dtype = ctx.dtypes
        return du, ddelta, dA.to(a_dtype), dB, dC, dD.to(d_dtype), dz, dbias.to(bias_dtype), None, None
