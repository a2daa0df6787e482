"""CTC decoders that take posteriors a chunk at a time: greedy and prefix beam search.

Both are frame-synchronous: feeding the log-posteriors of an utterance in any split of chunks
gives exactly the hypothesis of one call on all frames, so a streaming recogniser can carry a
decoder across chunks. Each hypothesis keeps, per token, the frame at which it was emitted.

    decoder = CTCPrefixBeamSearch(beam_size=8)
    for log_probs in chunks:            # (frames, vocab) each
        decoder.step(log_probs)
        print(decoder.best().tokens)    # partial hypothesis
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    """tokens: token ids without blanks or repeats; frames: the frame index at which each
    token was emitted; score: log probability (greedy: of the best path; beam: of the label
    sequence summed over its alignments, as far as the beam kept them)."""

    tokens: Tuple[int, ...]
    frames: Tuple[int, ...]
    score: float


def _check_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (frames, vocab), got shape {tuple(log_probs.shape)}")
    return log_probs.detach().to(device="cpu", dtype=torch.float64)


class GreedyCTCDecoder:
    """Best path: the most likely token per frame, repeats merged, blanks removed."""

    def __init__(self, blank: int = 0):
        self.blank = blank
        self.reset()

    def reset(self) -> None:
        self.num_frames = 0
        self._tokens: List[int] = []
        self._frames: List[int] = []
        self._previous = self.blank
        self._score = 0.0

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume the next frames' log-posteriors (frames, vocab)."""
        log_probs = _check_log_probs(log_probs)
        scores, best = log_probs.max(dim=-1)
        for offset, token in enumerate(best.tolist()):
            if token != self.blank and token != self._previous:
                self._tokens.append(token)
                self._frames.append(self.num_frames + offset)
            self._previous = token
        self._score += float(scores.sum())
        self.num_frames += log_probs.shape[0]

    def best(self) -> Hypothesis:
        return Hypothesis(tuple(self._tokens), tuple(self._frames), self._score)


@dataclass
class _Prefix:
    """Log probabilities of a prefix over the frames so far, split by whether the last frame
    was blank; and the frames at which its tokens were emitted."""

    blank: float
    non_blank: float
    frames: Tuple[int, ...]

    @property
    def total(self) -> float:
        return _logaddexp(self.blank, self.non_blank)


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


class CTCPrefixBeamSearch:
    """CTC prefix beam search (Hannun et al. 2014, without a language model).

    Args:
        beam_size: prefixes kept after every frame.
        token_beam: per frame, only the ``token_beam`` most likely non-blank tokens extend
            prefixes (None: all of them; exact sums for small vocabularies).
        blank: the blank token id.

    A token's frame is the frame at which the prefix ending in it entered the beam (again, if
    it had been pruned from it).
    """

    def __init__(self, beam_size: int = 8, token_beam: Optional[int] = None, blank: int = 0):
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if token_beam is not None and token_beam < 1:
            raise ValueError(f"token_beam must be >= 1 or None, got {token_beam}")
        self.beam_size, self.token_beam, self.blank = beam_size, token_beam, blank
        self.reset()

    def reset(self) -> None:
        self.num_frames = 0
        self._beam: Dict[Tuple[int, ...], _Prefix] = {(): _Prefix(0.0, NEG_INF, ())}

    def _candidates(self, frame: torch.Tensor) -> List[int]:
        """The non-blank tokens that may extend prefixes: the ``token_beam`` most likely, none
        of probability 0 (where -inf log-probabilities tie with the masked blank, topk could
        pick the blank itself)."""
        ranked = frame.clone()
        ranked[self.blank] = NEG_INF
        k = ranked.shape[0] - 1 if self.token_beam is None else min(self.token_beam, ranked.shape[0] - 1)
        values, indices = ranked.topk(k)
        return [token for value, token in zip(values.tolist(), indices.tolist()) if value != NEG_INF]

    def _advance(self, frame: torch.Tensor, t: int) -> None:
        lp = frame.tolist()
        candidates = self._candidates(frame)
        nxt: Dict[Tuple[int, ...], _Prefix] = {}

        def entry(prefix: Tuple[int, ...], frames: Tuple[int, ...]) -> _Prefix:
            if prefix not in nxt:
                nxt[prefix] = _Prefix(NEG_INF, NEG_INF, frames)
            return nxt[prefix]

        for prefix, p in self._beam.items():
            stay = entry(prefix, p.frames)
            stay.blank = _logaddexp(stay.blank, p.total + lp[self.blank])
            last = prefix[-1] if prefix else None
            if last is not None:  # the last token repeated: same prefix
                stay.non_blank = _logaddexp(stay.non_blank, p.non_blank + lp[last])
            for token in candidates:
                extended = prefix + (token,)
                # a repeat of the last token is a new token only after a blank
                source = p.blank if token == last else p.total
                old = self._beam.get(extended)
                target = entry(extended, old.frames if old is not None else p.frames + (t,))
                target.non_blank = _logaddexp(target.non_blank, source + lp[token])
        ranked = sorted(nxt.items(), key=lambda item: (-item[1].total, item[0]))
        self._beam = dict(ranked[: self.beam_size])

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume the next frames' log-posteriors (frames, vocab)."""
        log_probs = _check_log_probs(log_probs)
        for offset in range(log_probs.shape[0]):
            self._advance(log_probs[offset], self.num_frames + offset)
        self.num_frames += log_probs.shape[0]

    def hypotheses(self) -> List[Hypothesis]:
        """The beam, best first."""
        return [Hypothesis(prefix, p.frames, p.total) for prefix, p in self._beam.items()]

    def best(self) -> Hypothesis:
        return self.hypotheses()[0]


def build_decoder(kind: str, beam_size: int = 8, token_beam: Optional[int] = 16, blank: int = 0):
    """``"greedy"`` -> GreedyCTCDecoder; ``"beam"`` -> CTCPrefixBeamSearch."""
    if kind == "greedy":
        return GreedyCTCDecoder(blank)
    if kind == "beam":
        return CTCPrefixBeamSearch(beam_size, token_beam, blank)
    raise ValueError(f"decoder must be 'greedy' or 'beam', got {kind!r}")
