"""Constraints as vLLM (in process or served) and plain OpenAI-compatible servers take them,
and the unmasked logprobs of what vLLM sampled under one.

vLLM applies a request's grammar bitmask to the logits before its sampler computes any
logprob, so even its ``raw_logprobs`` are those of the masked distribution, renormalised over
the allowed tokens (vLLM 0.32: `apply_grammar_bitmask` runs before `Sampler.forward`; a forced
token reports 0 where the model gives it, say, -9.7). A trainer recomputes unmasked logprobs,
so those would put the importance ratio well below 1 wherever the constraint steers. The
engines therefore rescore a constrained completion: prompt + completion sent back as a prompt
with ``prompt_logprobs=0`` gives each completion token's log-softmax of the unmasked logits at
temperature 1, what a trainer recomputes for a greedy call or one at temperature 1 (and what
vLLM's ``raw_logprobs`` mode reports at any temperature). Otherwise the tempered log-softmax
cannot be had from vLLM without the whole distribution, so the masked logprobs stay and the
completion says so (``extra["logprobs_masked"] = True``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agents.engine import Constraint, SamplingParams

CONSTRAINED = "constrained"
"""`Completion.extra` key: True when a constraint shaped the completion, False when one was asked
for but the server could not enforce it (absent when none was asked for)."""
LOGPROBS_MASKED = "logprobs_masked"
"""`Completion.extra` key: True when the reported logprobs are the masked distribution's."""

STRUCTURED_OUTPUTS_SINCE = (0, 10, 2)
"""The first vLLM whose server takes ``structured_outputs``; older ones take ``guided_*``
(removed in 0.12, where they are silently ignored)."""

RESPONSE_FORMAT_NAME = "structured_output"


def vllm_fields(constraint: Constraint) -> dict[str, Any]:
    """The constraint as vLLM's `StructuredOutputsParams` fields (``json``, ``regex``, ``grammar``)."""
    if constraint.json_schema is not None:
        return {"json": json.loads(constraint.json_schema)}
    if constraint.regex is not None:
        return {"regex": constraint.regex}
    return {"grammar": constraint.grammar}


def legacy_vllm_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`vllm_fields` as the request fields of a vLLM server older than 0.10.2 (``guided_json``...)."""
    return {f"guided_{key}": value for key, value in fields.items()}


def response_format(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` for `vllm_fields` of a JSON schema (None for a regular
    expression or a grammar: a plain server has no way to take them)."""
    if "json" not in fields:
        return None
    return {"type": "json_schema", "json_schema": {"name": RESPONSE_FORMAT_NAME, "schema": fields["json"], "strict": True}}


def takes_structured_outputs(version: str | None) -> bool:
    """Whether a vLLM server of `version` (its ``/version``; None or unreadable: taken as
    current) reads ``structured_outputs`` rather than ``guided_*``."""
    numbers = tuple(int(part) for part in re.findall(r"\d+", version or "")[:3])
    return not numbers or numbers >= STRUCTURED_OUTPUTS_SINCE


def rescores_exactly(params: SamplingParams, raw_logprobs: bool = False) -> bool:
    """Whether vLLM's prompt logprobs (temperature 1) are the unmasked logprobs an engine reports
    for `params`: for greedy calls, at temperature 1, and at any temperature in vLLM's
    ``raw_logprobs`` mode."""
    return raw_logprobs or params.temperature in (0.0, 1.0)


def prompt_logprob_values(entries: Sequence[Any], token_ids: Sequence[int], start: int) -> list[float]:
    """Each of `token_ids`' logprob from vLLM's prompt logprobs of prompt + completion, where the
    completion starts at position `start`. Entries are vLLM's in-process ``{id: Logprob}`` or the
    server's JSON ``{"id": {"logprob": ...}}``; raises `ValueError` if one is missing."""
    values: list[float] = []
    for offset, token in enumerate(token_ids):
        entry = entries[start + offset] if start + offset < len(entries) else None
        item = None
        if isinstance(entry, Mapping):
            item = entry.get(token, entry.get(str(token)))
        if item is None:
            raise ValueError(f"no prompt logprob for token {token} at position {start + offset}")
        values.append(float(item["logprob"] if isinstance(item, Mapping) else item.logprob))
    return values
