"""Next-token choice from logits: greedy, temperature and nucleus (top-p) sampling, with logprobs.

Logprob convention (`LogprobsMode`):

- ``"scaled"`` (default): log-softmax of ``logits / temperature`` over the whole vocabulary,
  with no top-p renormalisation. This is what a trainer recomputes from one forward pass at
  the same temperature, so importance ratios start at 1. With ``top_p=1`` it is exactly the
  sampling distribution.
- ``"processed"``: the log-probability under the distribution actually sampled from, i.e.
  after temperature *and* top-p truncation, renormalised over the nucleus (vLLM's
  ``logprobs_mode="processed_logprobs"``).

Greedy decoding (``temperature == 0``) samples from a point mass, whose logprob (0) says
nothing; it reports the log-softmax of the raw logits instead (temperature 1), in both modes.

Constrained rows (`TokenMask`, see `agents.engines.constraints`): the reported logprobs are
taken before the mask, so in ``"scaled"`` mode they stay the unmasked model's; the choice is
then made among the allowed tokens only, from the tempered distribution renormalised over
them (the order vLLM uses: mask, temperature, top-p). ``"processed"`` mode reports that
masked distribution, the one actually sampled from. Rows outside the mask are computed
exactly as without one, so they give the same ids for the same noise.

Sampling uses the exponential race (``argmax(p / q)`` with ``q ~ Exp(1)``, as vLLM does),
with the noise drawn from one `torch.Generator` per sequence, so a seeded sequence's samples
do not depend on which other sequences share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch

LogprobsMode = Literal["scaled", "processed"]
LOGPROBS_MODES: tuple[str, ...] = ("scaled", "processed")


class TokenMask(Protocol):
    """The allowed next tokens of some rows of a batch (the others are free)."""

    def masked(self, values: torch.Tensor) -> torch.Tensor:
        """A copy of `values` (B x V) with the disallowed entries of the masked rows at -inf."""
        ...

    def renormalised(self, logprobs: torch.Tensor) -> torch.Tensor:
        """A copy of `logprobs` (B x V) whose masked rows are renormalised over the allowed tokens."""
        ...


def nucleus_mask(logprobs: torch.Tensor, top_p: float) -> torch.Tensor:
    """True for the tokens outside the smallest set whose probability reaches `top_p`."""
    sorted_logprobs, order = logprobs.sort(dim=-1, descending=True)
    probs = sorted_logprobs.exp()
    mass_before = probs.cumsum(dim=-1) - probs
    outside_sorted = mass_before >= top_p
    outside_sorted[..., 0] = False  # the most likely token always stays
    return torch.zeros_like(outside_sorted).scatter(-1, order, outside_sorted)


def exponential_noise(shape: torch.Size, generators: Sequence[torch.Generator], device: torch.device) -> torch.Tensor:
    """Exp(1) noise, row `i` drawn from `generators[i]`."""
    noise = torch.empty(shape, dtype=torch.float32, device=device)
    for row, generator in enumerate(generators):
        noise[row].exponential_(generator=generator)
    return noise


def choose_tokens(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    generators: Sequence[torch.Generator],
    logprobs_mode: LogprobsMode = "scaled",
    mask: TokenMask | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of each row of `logits` (B x V, float32) and its logprob (see module doc);
    `mask` restricts some rows' choice to the tokens a constraint allows."""
    if temperature == 0.0:
        raw = torch.log_softmax(logits, dim=-1)
        tokens = (logits if mask is None else mask.masked(logits)).argmax(dim=-1)
        return tokens, raw.gather(-1, tokens[:, None]).squeeze(-1)
    scaled = torch.log_softmax(logits / temperature, dim=-1)
    sampling = scaled if mask is None else mask.renormalised(scaled)
    if top_p < 1.0:
        sampling = torch.log_softmax(sampling.masked_fill(nucleus_mask(sampling, top_p), float("-inf")), dim=-1)
    noise = exponential_noise(sampling.shape, generators, sampling.device)
    tokens = (sampling.exp() / noise).argmax(dim=-1)
    reported = sampling if logprobs_mode == "processed" else scaled
    return tokens, reported.gather(-1, tokens[:, None]).squeeze(-1)
