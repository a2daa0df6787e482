"""The Mamba mixer, with the parameter names and shapes of ``mamba_ssm.Mamba``.

A state dict moves unchanged between this module, ``mamba_ssm.modules.mamba_simple.Mamba``
and either of our two paths (mamba-ssm kernels on CUDA, PyTorch anywhere).
"""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from espnet_mamba.ops import (
    causal_conv1d, causal_conv1d_update, chunked_selective_scan, mamba_kernels, needs_autograd, selective_scan,
    selective_state_update, use_chunked_scan, use_kernel,
)  # fmt: skip


def padded_length(steps: int) -> int:
    """The frames the kernel path runs for ``steps`` real ones.

    * a multiple of 8: the scan's (batch, E, L) tensors are operands of the x_proj and dt_proj
      products with leading dimension L, and cuBLAS takes its aligned tensor-core kernels only
      when that is a multiple of 8 (at 32k frames on an H200 the 24 products took 12.8 ms
      with an odd L against about 1.2 ms aligned);
    * a multiple of 2048 from 16384 frames on (at most 1/8 more frames): mamba-ssm's scan
      kernel runs its unmasked path when L is a multiple of its 2048-frame chunk, 28% faster
      (2.69 against 3.72 ms at E 2304, N 24, 32k frames, H200).
    """
    multiple = 2048 if steps >= 16384 else 8
    return steps + (-steps % multiple)


def pad_frames(x: torch.Tensor) -> torch.Tensor:
    """Right-pad (batch, L, D) with zero frames to :func:`padded_length` on CUDA."""
    extra = padded_length(x.shape[1]) - x.shape[1]
    return F.pad(x, (0, 0, 0, extra)) if x.is_cuda and extra else x


@dataclass
class MambaState:
    """What a causal Mamba mixer carries between chunks.

    conv: (batch, E, d_conv - 1), the last inputs of the depthwise conv.
    ssm: (batch, E, d_state), float32, the scan's state.
    """

    conv: torch.Tensor
    ssm: torch.Tensor


class Mamba(nn.Module):
    """Selective state-space mixer (Gu & Dao, 2023): (batch, L, d_model) -> (batch, L, d_model).

    Args:
        d_model: model width D. d_state: N. d_conv: K. expand: E = expand * D.
        dt_rank: R, "auto" for ceil(D / 16).
        impl: "auto", "kernel" or "torch" (see :mod:`espnet_mamba.ops.backend`).
        chunk_size: frames per chunk of the PyTorch scan.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank="auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        impl: str = "auto",
        chunk_size: int = 16,
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.impl, self.chunk_size = impl, chunk_size
        self.dt_range = (dt_min, dt_max, dt_init_floor)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self._add_ssm_params("", conv_bias)
        self.reset_ssm_parameters("")

    def _add_ssm_params(self, suffix: str, conv_bias: bool) -> None:
        """The per-direction parameters: conv1d, x_proj, dt_proj, A_log, D (+ ``suffix``)."""
        E, N, R = self.d_inner, self.d_state, self.dt_rank
        conv = nn.Conv1d(E, E, self.d_conv, groups=E, padding=self.d_conv - 1, bias=conv_bias)
        setattr(self, "conv1d" + suffix, conv)
        setattr(self, "x_proj" + suffix, nn.Linear(E, R + 2 * N, bias=False))
        setattr(self, "dt_proj" + suffix, nn.Linear(R, E, bias=True))
        a_name = "A_log" if not suffix else f"A{suffix}_log"
        setattr(self, a_name, nn.Parameter(torch.empty(E, N)))
        setattr(self, "D" + suffix, nn.Parameter(torch.empty(E)))

    @torch.no_grad()
    def reset_ssm_parameters(self, suffix: str) -> None:
        """Mamba's initialisation: dt in [dt_min, dt_max] through the dt_proj bias, S4D-real A."""
        dt_min, dt_max, floor = self.dt_range
        dt_proj = getattr(self, "dt_proj" + suffix)
        std = self.dt_rank**-0.5
        nn.init.uniform_(dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=floor)
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        dt_proj.bias._no_reinit = True
        a_log = getattr(self, "A_log" if not suffix else f"A{suffix}_log")
        a_log.copy_(torch.arange(1, self.d_state + 1, dtype=torch.float32).log().expand_as(a_log))
        a_log._no_weight_decay = True
        d = getattr(self, "D" + suffix)
        d.fill_(1.0)
        d._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, L, D) -> (batch, L, D). Causal: frame t sees frames <= t."""
        if self.runs_chunked_scan(x):
            u, z = self.project_in_time_major(x)
            return self.out_proj(self.ssm_time_major(u, z, ""))
        steps = x.shape[1]
        x = pad_frames(x)  # causal, so the trailing zeros change no real frame
        xz = self.project_in(x)
        if use_kernel(self.impl, x, "mamba_inner", requires="causal_conv1d_fn"):
            out = mamba_kernels()["mamba_inner_fn"](
                xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias,
                -torch.exp(self.A_log.float()), None, None, self.D.float(),
                delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            )  # fmt: skip
            return out[:, :steps]
        u, z = xz.chunk(2, dim=1)
        y, _ = self.ssm(u, z, "")
        return self.out_proj(y.transpose(1, 2))[:, :steps]

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        """in_proj straight into the scan's layout: (batch, L, D) -> xz (batch, 2E, L) with
        unit stride along L, as the kernels want it (a transposing copy of xz costs about 1 ms
        per block at 32k frames). An in_proj without a weight tensor (int8: see
        :mod:`espnet_mamba.quantization`) is called instead."""
        if not isinstance(self.in_proj, nn.Linear):
            return self.in_proj(x).transpose(1, 2)
        batch, steps, _ = x.shape
        xz = self.in_proj.weight @ x.reshape(batch * steps, -1).t()  # (2E, batch * L)
        xz = xz.view(-1, batch, steps).transpose(0, 1)
        return xz if self.in_proj.bias is None else xz + self.in_proj.bias.to(xz.dtype)[:, None]

    def runs_chunked_scan(self, x: torch.Tensor) -> bool:
        """Whether forward(x) takes the time-major path of the chunked scan (on CUDA, long
        inputs or large training batches; see :func:`espnet_mamba.ops.use_chunked_scan`)."""
        return use_chunked_scan(self.impl, x, needs_autograd(x, *self.parameters()))

    def project_in_time_major(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """in_proj as two products: (batch, L, D) -> u, z (batch, L, E), each contiguous."""
        E, weight, bias = self.d_inner, self.in_proj.weight, self.in_proj.bias
        u = F.linear(x, weight[:E], None if bias is None else bias[:E])
        z = F.linear(x, weight[E:], None if bias is None else bias[E:])
        return u, z

    def ssm_time_major(self, u: torch.Tensor, z: torch.Tensor, suffix: str) -> torch.Tensor:
        """:meth:`ssm` on the chunked scan: u, z (batch, L, E) -> (batch, L, E).

        Everything stays time-major, the layout of the products, so nothing is transposed;
        the depthwise conv runs on the channel-last view."""
        conv = getattr(self, "conv1d" + suffix)
        dt_proj = getattr(self, "dt_proj" + suffix)
        a_log = getattr(self, "A_log" if not suffix else f"A{suffix}_log")
        u, _ = causal_conv1d(u.transpose(1, 2), conv.weight[:, 0], conv.bias, "silu", None, self.impl)
        u = u.transpose(1, 2)
        u = u if u.stride(2) == 1 else u.contiguous()
        x_dbl = F.linear(u, getattr(self, "x_proj" + suffix).weight)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], -1)
        y, _ = chunked_selective_scan(
            u, F.linear(dt, dt_proj.weight), -torch.exp(a_log.float()), B, C,
            getattr(self, "D" + suffix), z, dt_proj.bias,
        )  # fmt: skip
        return y

    def forward_chunk(
        self, x: torch.Tensor, state: Optional[MambaState]
    ) -> Tuple[torch.Tensor, MambaState]:
        """Streaming: the next frames x (batch, L, D), L >= 1, after ``state`` (None: start)."""
        u, z = self.project_in(x).chunk(2, dim=1)
        if state is None:  # the conv state holds u: in its dtype (bfloat16 under autocast)
            state = self.init_state(x.shape[0], x.device, u.dtype)
        if x.shape[1] == 1:
            y, state = self.step(u[..., 0], z[..., 0], state)
            return self.out_proj(y[:, None]), state
        y, state = self.ssm(u, z, "", state)
        return self.out_proj(y.transpose(1, 2)), state

    def step(self, u: torch.Tensor, z: torch.Tensor, state: MambaState) -> Tuple[torch.Tensor, MambaState]:
        """:meth:`ssm` of one frame, on the single-step ops: u, z (batch, E) -> y (batch, E)."""
        u, conv_state = causal_conv1d_update(u, state.conv, self.conv1d.weight[:, 0], self.conv1d.bias, "silu",
                                             self.impl)  # fmt: skip
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], -1)
        if isinstance(self.dt_proj, nn.Linear):
            delta, delta_bias = F.linear(dt, self.dt_proj.weight), self.dt_proj.bias.float()  # bias in the step
        else:  # a dt_proj without a weight tensor (int8): its own call, as in ssm
            delta, delta_bias = self.dt_proj(dt), None
        y, ssm_state = selective_state_update(
            state.ssm, u, delta, -torch.exp(self.A_log.float()), B, C, self.D.float(), z, delta_bias, self.impl
        )  # fmt: skip
        return y, MambaState(conv=conv_state, ssm=ssm_state)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> MambaState:
        """Zero state: the mixer before the first frame. ``dtype``: the conv state's, which
        holds in_proj's outputs (the SSM state is float32)."""
        E = self.d_inner
        return MambaState(
            conv=torch.zeros(batch_size, E, self.d_conv - 1, device=device, dtype=dtype),
            ssm=torch.zeros(batch_size, E, self.d_state, device=device),
        )

    def ssm(
        self, u: torch.Tensor, z: torch.Tensor, suffix: str, state: Optional[MambaState] = None
    ) -> Tuple[torch.Tensor, Optional[MambaState]]:
        """Conv, projections and gated scan of one direction: u, z (batch, E, L) -> (batch, E, L).

        ``suffix`` names the direction's parameters ("" forward, "_b" backward).
        """
        conv = getattr(self, "conv1d" + suffix)
        x_proj = getattr(self, "x_proj" + suffix)
        dt_proj = getattr(self, "dt_proj" + suffix)
        a_log = getattr(self, "A_log" if not suffix else f"A{suffix}_log")
        d = getattr(self, "D" + suffix)
        u, conv_state = causal_conv1d(
            u, conv.weight[:, 0], conv.bias, "silu",
            None if state is None else state.conv, self.impl,
        )  # fmt: skip
        dt, B, C = x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], -1)
        if isinstance(dt_proj, nn.Linear):
            dt, dt_bias = torch.matmul(dt_proj.weight, dt.transpose(1, 2)), dt_proj.bias.float()  # bias in the scan
        else:  # a dt_proj without a weight tensor (int8, as ESPnet's --quantize_asr_model makes it): its own call
            dt, dt_bias = dt_proj(dt).transpose(1, 2), None
        out = selective_scan(
            u, dt, -torch.exp(a_log.float()),
            B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), d.float(),
            z=z, delta_bias=dt_bias, delta_softplus=True,
            initial_state=None if state is None else state.ssm,
            return_last_state=state is not None, impl=self.impl, chunk_size=self.chunk_size,
        )  # fmt: skip
        if state is None:
            return out, None
        y, ssm_state = out
        return y, MambaState(conv=conv_state, ssm=ssm_state)
