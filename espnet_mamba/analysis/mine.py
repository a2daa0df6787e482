"""Mutual information by MINE (Belghazi et al. 2018), as Zhang et al. use it to measure how
much of the local input a layer keeps: I(X; T_i) between per-frame input features X and the
features T_i of layer i, estimated per utterance on that utterance's frames.

A statistics network T(x, t) (an MLP on [x, t]) is trained to maximise the Donsker-Varadhan
lower bound

    I(X; T) >= E_P[T(x, t)] - log E_Q[exp T(x, t')],

P the joint (frames as they are), Q the product of marginals (t shuffled across the
utterance's frames). The gradient of the log term, E_Q[e^T grad T] / E_Q[e^T], has a biased
mini-batch denominator; as in the MINE paper, the denominator is replaced by a moving
average. Estimates are in nats.
"""

import math
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn


@dataclass(frozen=True)
class MineConfig:
    """Training of one statistics network: ``steps`` Adam steps on mini-batches of at most
    ``batch_size`` frames; ``ema_rate`` is the moving-average rate of the bias correction;
    the final estimate averages the bound over ``eval_permutations`` shuffles of all frames;
    ``device`` is where the network trains ("cpu", "cuda")."""

    hidden: int = 128
    steps: int = 300
    batch_size: int = 512
    lr: float = 1e-3
    ema_rate: float = 0.01
    eval_permutations: int = 8
    seed: int = 0
    device: str = "cpu"


class StatisticsNetwork(nn.Module):
    """T(x, t): (N, dx), (N, dt) -> (N,) scores, an MLP with two hidden ELU layers."""

    def __init__(self, dx: int, dt: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dx + dt, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t], dim=-1)).squeeze(-1)


def _log_mean_exp(scores: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(scores, 0) - math.log(scores.numel())


def donsker_varadhan(
    net: StatisticsNetwork, x: torch.Tensor, t: torch.Tensor, t_shuffled: torch.Tensor
) -> torch.Tensor:
    """The DV bound E_P[T] - log E_Q[e^T] on one batch of paired (x, t) and shuffled t."""
    return net(x, t).mean() - _log_mean_exp(net(x, t_shuffled))


def _standardize(a: np.ndarray, device: str) -> torch.Tensor:
    a = torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)
    return (a - a.mean(0)) / (a.std(0) + 1e-5)


def mine_estimate(x: np.ndarray, t: np.ndarray, config: MineConfig = MineConfig()) -> float:
    """I(X; T) in nats from paired samples x (N, dx) and t (N, dt), e.g. one utterance's
    frames. Each dimension is standardised first (mutual information does not change)."""
    if x.ndim != 2 or t.ndim != 2 or len(x) != len(t):
        raise ValueError(f"x and t must be (N, dx) and (N, dt) with the same N, got {x.shape} and {t.shape}")
    if len(x) < 2:
        raise ValueError(f"MINE needs at least 2 samples, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(t).all()):
        raise ValueError("x or t contain NaN or Inf")
    generator = torch.Generator().manual_seed(config.seed)
    x, t = _standardize(x, config.device), _standardize(t, config.device)
    n = len(x)
    with torch.random.fork_rng(devices=[]):  # seed the initialisation, leave the global RNG alone
        torch.manual_seed(config.seed)
        net = StatisticsNetwork(x.shape[1], t.shape[1], config.hidden).to(config.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    batch = min(config.batch_size, n)
    log_ema = None  # log of the moving average of E_Q[e^T]
    for _ in range(config.steps):
        idx = torch.randperm(n, generator=generator)[:batch].to(config.device)
        shuffled = idx[torch.randperm(batch, generator=generator).to(config.device)]
        joint = net(x[idx], t[idx]).mean()
        log_marginal = _log_mean_exp(net(x[idx], t[shuffled]))
        with torch.no_grad():
            if log_ema is None:
                log_ema = log_marginal.detach()
            else:
                log_ema = torch.logaddexp(
                    math.log1p(-config.ema_rate) + log_ema, math.log(config.ema_rate) + log_marginal
                )
        # gradient: E_P[grad T] - E_Q[e^T grad T] / (moving average of E_Q[e^T])
        loss = -(joint - torch.exp(log_marginal - log_ema))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        orders = [torch.randperm(n, generator=generator).to(config.device) for _ in range(config.eval_permutations)]
        t_shuffled = torch.cat([t[order] for order in orders])
        bound = donsker_varadhan(
            net, x.repeat(config.eval_permutations, 1), t.repeat(config.eval_permutations, 1), t_shuffled
        )
    return float(bound)


def gaussian_mutual_information(dim: int, rho: float) -> float:
    """I(X; Y) in nats of X, Y in R^dim, standard normal, each pair of dimensions with
    correlation rho and the pairs independent: -dim/2 * log(1 - rho^2)."""
    if not 0 <= abs(rho) < 1:
        raise ValueError(f"need |rho| < 1, got {rho}")
    return -dim / 2 * math.log(1 - rho**2)


def correlated_gaussians(n: int, dim: int, rho: float, seed: int = 0):
    """n samples of X, Y (n, dim) with per-dimension correlation rho (see above)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, dim))
    return x, y


def layerwise_mine(inputs: np.ndarray, layers: Sequence[np.ndarray], config: MineConfig = MineConfig()) -> List[float]:
    """I(X; T_i) for one utterance: input features (N, dx) against each layer's (N, D)."""
    return [mine_estimate(inputs, features, config) for features in layers]


def corpus_mine(
    utterances: Iterable[Tuple[np.ndarray, Sequence[np.ndarray]]], config: MineConfig = MineConfig()
) -> np.ndarray:
    """Per-utterance estimates (utterances, layers) from (inputs, layer features) pairs."""
    estimates = np.array([layerwise_mine(inputs, layers, config) for inputs, layers in utterances])
    if estimates.size == 0:
        raise ValueError("no utterances to estimate mutual information on")
    return estimates


def gaussian_check(dim: int, rho: float, n: int, config: MineConfig = MineConfig()) -> Tuple[float, float]:
    """(MINE estimate, closed form) of I(X; Y) for n samples of correlated Gaussians."""
    x, y = correlated_gaussians(n, dim, rho, config.seed)
    return mine_estimate(x, y, config), gaussian_mutual_information(dim, rho)
