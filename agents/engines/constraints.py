"""Structured generation for the in-process `hf` engine: xgrammar matchers behind the sampler.

A `Constraint` (a JSON schema, a regular expression or an EBNF grammar) is compiled once per
engine against the tokenizer and the model's logits width (`GrammarCompiler`, cached here by
constraint), and every constrained sequence gets its own `GrammarMatcher`. At each decoding
step the matchers fill a token bitmask for the constrained rows only; the sampler applies it
after it has taken the logprobs it reports, so those stay the unmasked model's (what a trainer
recomputes), and the choice is made among the allowed tokens. The chosen token is then fed
back to its row's matcher.

The matchers' stop tokens are the engine's end-of-sequence ids: once a match is complete the
mask allows only those, so a constrained completion ends the way a free one does, with an EOS
id (as vLLM's structured outputs end), and `is_terminated()` turns true with it.

JSON schemas are compiled without free whitespace between elements (separators ``,`` and
``:``), the form vLLM gives with ``disable_any_whitespace``: a small model that may put any
whitespace between elements tends to emit whitespace until it runs out of tokens.

xgrammar is imported on first use, so an engine that never sees a constraint never loads it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agents.engine import Constraint

JSON_SEPARATORS = (",", ":")
"""Item and key separators of constrained JSON (no whitespace allowed around them)."""

DEFAULT_CACHE_SIZE = 64
"""Compiled grammars kept per engine (a compiled grammar is a few MB for a 49k vocabulary)."""


class ConstraintError(ValueError):
    """A constraint that xgrammar cannot compile (a malformed schema, regex or grammar)."""


@dataclass(frozen=True)
class RowMask:
    """The allowed next tokens of some rows of a batch: `rows` (batch positions, a LongTensor on
    the logits' device) and `bitmask` (xgrammar's packed int32 bits, one row per batch row)."""

    rows: torch.Tensor
    bitmask: torch.Tensor
    vocab_size: int

    def apply(self, values: torch.Tensor) -> None:
        """Set the disallowed entries of `values`' constrained rows to -inf, in place."""
        import xgrammar

        xgrammar.apply_token_bitmask_inplace(
            values, self.bitmask, vocab_size=self.vocab_size, indices=self.rows
        )

    def masked(self, values: torch.Tensor) -> torch.Tensor:
        """A copy of `values` (B x V) with the constrained rows masked; other rows unchanged."""
        out = values.clone()
        self.apply(out)
        return out

    def renormalised(self, logprobs: torch.Tensor) -> torch.Tensor:
        """A copy of `logprobs` (B x V, log-softmax rows) whose constrained rows are masked and
        renormalised over the allowed tokens: the log-softmax of the masked logits."""
        out = self.masked(logprobs)
        out[self.rows] = torch.log_softmax(out[self.rows], dim=-1)
        return out


class GrammarCache:
    """Compiles constraints for one tokenizer and logits width, each distinct one once.

    `vocab_size` is the model's logits width (which may exceed the tokenizer's vocabulary:
    ids past it are never allowed); `stop_ids` are the ids that end a sequence."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_ids: Iterable[int], max_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = int(vocab_size)
        self.stop_ids = sorted(int(i) for i in stop_ids)
        self.max_size = max_size
        self._compiler: Any = None
        self._compiled: OrderedDict[Constraint, Any] = OrderedDict()

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any, stop_ids: Iterable[int]) -> GrammarCache:
        """A cache for `model`'s logits width (its output layer's rows, else its config's
        vocabulary size)."""
        head = model.get_output_embeddings()
        width = head.weight.shape[0] if head is not None else model.config.vocab_size
        return cls(tokenizer, width, stop_ids)

    def _grammar_compiler(self) -> Any:
        if self._compiler is None:
            import xgrammar

            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_ids
            )
            self._compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        return self._compiler

    def compiled(self, constraint: Constraint) -> Any:
        """The compiled grammar of `constraint` (raises `ConstraintError` if it does not compile)."""
        if constraint in self._compiled:
            self._compiled.move_to_end(constraint)
            return self._compiled[constraint]
        compiler = self._grammar_compiler()
        try:
            if constraint.json_schema is not None:
                grammar = compiler.compile_json_schema(
                    constraint.json_schema, any_whitespace=False, separators=JSON_SEPARATORS
                )
            elif constraint.regex is not None:
                grammar = compiler.compile_regex(constraint.regex)
            else:
                grammar = compiler.compile_grammar(constraint.grammar)
        except (RuntimeError, ValueError, TypeError) as error:
            raise ConstraintError(f"cannot compile the constraint: {error}") from error
        self._compiled[constraint] = grammar
        if len(self._compiled) > self.max_size:
            self._compiled.popitem(last=False)
        return grammar

    def matcher(self, constraint: Constraint) -> Any:
        """A fresh `GrammarMatcher` for one sequence under `constraint`."""
        import xgrammar

        return xgrammar.GrammarMatcher(self.compiled(constraint), override_stop_tokens=self.stop_ids)


class BatchMasker:
    """Fills the step's bitmask from the active rows' matchers (None for a free row).

    One int32 buffer of `max_rows` rows is allocated on first use and reused at every step.
    The constrained rows are filled in one call into xgrammar's C++ (`BatchGrammarMatcher`,
    on its own threads where the machine has cores to spare), not one Python call per row: at
    batch 32 the per-row calls cost about as much as the model's step on a small model."""

    def __init__(self, vocab_size: int, max_rows: int) -> None:
        self.vocab_size = int(vocab_size)
        self.max_rows = int(max_rows)
        self._bitmask: torch.Tensor | None = None
        self._filler: Any = None

    def step(self, matchers: Sequence[Any | None], device: torch.device) -> RowMask | None:
        """The mask of this step, or None when no row is constrained."""
        rows = [i for i, matcher in enumerate(matchers) if matcher is not None]
        if not rows:
            return None
        import xgrammar

        if self._bitmask is None or self._bitmask.shape[0] < len(matchers):
            self._bitmask = xgrammar.allocate_token_bitmask(max(self.max_rows, len(matchers)), self.vocab_size)
        if self._filler is None:
            self._filler = xgrammar.BatchGrammarMatcher()
        self._filler.batch_fill_next_token_bitmask([matchers[i] for i in rows], self._bitmask, indices=rows)
        bitmask = self._bitmask[: len(matchers)]
        if device.type != "cpu":
            bitmask = bitmask.to(device, non_blocking=True)
        return RowMask(torch.tensor(rows, device=device), bitmask, self.vocab_size)
