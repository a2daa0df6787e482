"""Mamba's selective scan cut along time into chunks that run side by side (Triton, inference).

mamba-ssm's scan kernel walks each (batch, channel) row's whole sequence inside one thread
block. A batch of one long recording therefore gives the GPU only E rows of work, each
sequential over all L frames: at 32k frames (E 2304, N 24) on an H200 it takes 2.68 ms as one
row against 1.85 ms for the same frames as 16 rows. This scan cuts time into chunks of T
frames and runs them in parallel, in three passes:

1. ``_scan_chunks(WRITE_OUTPUT=False)``: each chunk is scanned from a zero state; its end
   state h_end[k] and the sum of its dt are kept, (batch, K, N, E) and (batch, K, E);
2. ``_chain_chunks``: one sweep over the K chunks per (channel, state) turns them into each
   chunk's true start state, h_start[k + 1] = exp(A * sum_k dt) * h_start[k] + h_end[k];
3. ``_scan_chunks(WRITE_OUTPUT=True)``: each chunk is scanned again from its true start state,
   writing y = (C . h + D * u) * silu(z).

Every exponential is computed twice (passes 1 and 3), the price of the parallelism. The
tensors are time-major, (batch, L, E), the layout in which in_proj and dt_proj produce them,
so that one frame's channels are one contiguous load. There is no autograd: training keeps
mamba-ssm's kernels, which have a backward pass.

The recurrence is the one of :mod:`espnet_mamba.ops.selective_scan`, with
dt = softplus(delta + delta_bias). Triton compiles the kernels on first use, for each number
of states and chunk size (a few seconds). Under ``TRITON_INTERPRET=1`` they run on CPU tensors
(the tests use this). Measurements: docs/benchmarks.md, "Triton kernels for inference".
"""

import math
from typing import Optional, Tuple

import torch

from espnet_mamba.ops.backend import needs_autograd, triton_available

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _softplus(x):
        """log(1 + e^x), and x itself above 20 (torch's threshold)."""
        return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)

    @triton.jit
    def _advance(h, a2, b, dt, dt_u):
        """One frame of the recurrence on a (states, channels) tile; a2 = A log2(e)."""
        return tl.exp2(dt[None, :] * a2) * h + b[:, None] * dt_u[None, :]

    @triton.jit
    def _load_states(at, n_low, n_high, high_ok, ok):
        """A frame's B or C at pointer ``at``: its low and high states, zeros where not ok."""
        return tl.load(at + n_low, mask=ok, other=0.0), tl.load(at + n_high, mask=high_ok & ok, other=0.0)

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
        BLOCK_E: tl.constexpr, WRITE_OUTPUT: tl.constexpr,
    ):  # fmt: skip
        """One (channel block, chunk, batch) per program. The state lives in registers as two
        tiles, states [0, LOW) and [LOW, STATES) by BLOCK_E channels (LOW, HIGH powers of two:
        24 states run as 16 + 8, not padded to 32), one channel per thread, so the sum over
        states stays in a thread. Without WRITE_OUTPUT: from zero, store the end state and the
        dt sum. With it: from ``start_ptr``'s state, store y."""
        pid_e, chunk, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        n_low, n_high = tl.arange(0, LOW), LOW + tl.arange(0, HIGH)
        e_ok, high_ok = e < channels, n_high < STATES
        low_at = n_low[:, None] * channels + e[None, :]  # (N, E) memory: A transposed, the states
        high_at = n_high[:, None] * channels + e[None, :]
        low_ok2, high_ok2 = (n_low < LOW)[:, None] & e_ok[None, :], high_ok[:, None] & e_ok[None, :]
        a2_low = tl.load(a_ptr + low_at, mask=low_ok2, other=0.0) * 1.4426950408889634
        a2_high = tl.load(a_ptr + high_at, mask=high_ok2, other=0.0) * 1.4426950408889634
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
        b_low_next, b_high_next = _load_states(b_at, n_low, n_high, high_ok, ok)
        if WRITE_OUTPUT:
            c_low_next, c_high_next = _load_states(c_at, n_low, n_high, high_ok, ok)
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
            b_low_next, b_high_next = _load_states(b_at, n_low, n_high, high_ok, ok_next)
            if WRITE_OUTPUT:
                c_low, c_high, z = c_low_next.to(tl.float32), c_high_next.to(tl.float32), z_next.to(tl.float32)
                c_at += stride_c_t
                z_at += stride_z_t
                c_low_next, c_high_next = _load_states(c_at, n_low, n_high, high_ok, ok_next)
                z_next = tl.load(z_at, mask=e_ok & ok_next, other=0.0)
            dt = tl.where(ok, _softplus(delta + bias), 0.0)  # 0 past the end: h stays
            h_low = _advance(h_low, a2_low, b_low, dt, dt * u)
            h_high = _advance(h_high, a2_high, b_high, dt, dt * u)
            if WRITE_OUTPUT:
                y = tl.sum(h_low * c_low[:, None], axis=0) + tl.sum(h_high * c_high[:, None], axis=0)
                y = (y + d * u) * z * tl.sigmoid(z)
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
    def _chain_chunks(
        a_ptr, end_ptr, dt_sum_ptr, start_ptr, initial_ptr, last_ptr,
        num_chunks, channels, states,
        HAS_INITIAL: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        """Per (channel block, batch): each chunk's start state from the chunks before it,
        and the state after the last chunk. Each chunk's end state and dt sum are loaded one
        chunk ahead."""
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
        state_at = batch * num_chunks * states * channels + ne
        sum_at = dt_sum_ptr + batch * num_chunks * channels + e
        end_next = tl.load(end_ptr + state_at, mask=ne_ok, other=0.0)
        dt_sum_next = tl.load(sum_at, mask=e_ok, other=0.0)
        k = 0
        while k < num_chunks:  # a while loop: Triton's interpreter cannot range() over an argument
            end, dt_sum = end_next, dt_sum_next
            more = k + 1 < num_chunks
            end_next = tl.load(end_ptr + state_at + states * channels, mask=ne_ok & more, other=0.0)
            dt_sum_next = tl.load(sum_at + channels, mask=e_ok & more, other=0.0)
            tl.store(start_ptr + state_at, h, mask=ne_ok)
            h = tl.exp2(dt_sum[None, :] * a2) * h + end
            state_at += states * channels
            sum_at += channels
            k += 1
        tl.store(last_ptr + batch * states * channels + ne, h, mask=ne_ok)


def default_chunk_size(length: int) -> int:
    """Frames per chunk: sqrt(L) rounded up to a power of two, within [32, 512], so that the
    two sequential parts, a chunk's frames and the chain over the chunks, balance (the
    fastest on an H200 at 2k, 8k and 32k frames: tools/gpu_micro.py chunked_scan)."""
    return int(min(512, max(32, 2 ** math.ceil(math.log2(max(length, 1)) / 2))))


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
    block_e: int = 32,
    num_warps: int = 1,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The selective scan, time-major, without autograd.

    Args:
        u, delta, z: (batch, L, E), unit stride along E (any stride along batch and L, so
            slices of a wider tensor need no copy). B, C: (batch, L, N), unit stride along N.
        A: (E, N), negative. D, delta_bias: (E,). dt = softplus(delta + delta_bias).
        initial_state: (batch, E, N), the state before the first frame (zeros if None).
        chunk_size: frames per chunk (default :func:`default_chunk_size`).

    Returns:
        y (batch, L, E) in u's dtype, contiguous, and the last state (batch, E, N), float32.
    """
    if not triton_available():
        raise RuntimeError("the chunked scan needs Triton, which is not installed on this platform")
    if needs_autograd(u, delta, A, B, C, D, z, delta_bias):
        raise RuntimeError("the chunked scan has no backward pass: call it under torch.no_grad()")
    batch, length, channels = u.shape
    states = A.shape[1]
    if states < 2:
        raise ValueError(f"the chunked scan needs at least 2 states, got A of shape {tuple(A.shape)}")
    for name, t, width in (("u", u, channels), ("delta", delta, channels), ("z", z, channels),
                           ("B", B, states), ("C", C, states)):  # fmt: skip
        if t.shape != (batch, length, width) or t.stride(2) != 1:
            raise ValueError(f"{name} must be (batch, L, {width}) with unit stride on its last dim, "
                             f"got {tuple(t.shape)} strides {t.stride()}")  # fmt: skip
    chunk = chunk_size or default_chunk_size(length)
    num_chunks = max(1, triton.cdiv(length, chunk))
    A = A.float().t().contiguous()  # (N, E): channels innermost, as in every state tensor below
    D, delta_bias = D.float().contiguous(), delta_bias.float().contiguous()
    f32 = dict(device=u.device, dtype=torch.float32)
    end = torch.empty(batch, num_chunks, states, channels, **f32)
    start = torch.empty_like(end)
    dt_sum = torch.empty(batch, num_chunks, channels, **f32)
    last = torch.empty(batch, states, channels, **f32)
    out = torch.empty(batch, length, channels, device=u.device, dtype=u.dtype)
    low = triton.next_power_of_2(states) // 2  # the largest power of two below N
    high = triton.next_power_of_2(states - low)
    grid = (triton.cdiv(channels, block_e), num_chunks, batch)
    strides = (u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
               C.stride(0), C.stride(1), z.stride(0), z.stride(1))  # fmt: skip
    common = dict(STATES=states, LOW=low, HIGH=high, CHUNK=chunk, BLOCK_E=block_e, num_warps=num_warps)
    args = (u, delta, B, C, z, A, D, delta_bias, start, end, dt_sum, out, length, channels)
    _scan_chunks[grid](*args, *strides, WRITE_OUTPUT=False, **common)
    has_initial = initial_state is not None
    initial = initial_state.float().transpose(1, 2).contiguous() if has_initial else last  # last: unread
    _chain_chunks[grid[0], batch](
        A, end, dt_sum, start, initial, last, num_chunks, channels, states,
        HAS_INITIAL=has_initial, BLOCK_E=block_e, BLOCK_N=triton.next_power_of_2(states),
        num_warps=num_warps,
    )  # fmt: skip
    _scan_chunks[grid](*args, *strides, WRITE_OUTPUT=True, **common)
    return out, last.transpose(1, 2)
