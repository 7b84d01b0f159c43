"""Logprobs and the top-k KL a chunk of rows at a time, recomputed in backward: the same values
and gradients as the full [N, V] logits, without keeping any [rows, V] tensor for backward."""

from __future__ import annotations

import copy

import pytest
import torch

from agents import models
from espl.rl.kl import sampling_topk_ids, topk_reverse_kl_from_logits
from espl.rl.logits import output_layer, token_logprobs, topk_kl_rows
from espl.rl.lora import attach_lora
from espl.rl.settings import LoraSettings

ROWS = 10
CHUNK = 3  # four chunks, the last one short
TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def model():
    return attach_lora(copy.deepcopy(models.load_model("tiny-random")), LoraSettings(rank=4, alpha=8))


def _inputs(model, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = model.config.hidden_size
    vocab = model.config.vocab_size
    return {
        "hidden": torch.randn(ROWS, size, generator=generator).requires_grad_(),
        "anchor_hidden": torch.randn(ROWS, size, generator=generator) * 0.1,
        "targets": torch.randint(0, vocab, (ROWS,), generator=generator),
        "old": -torch.rand(ROWS, generator=generator) * 5,
        "weights": torch.randn(2, ROWS, generator=generator),
    }


def _full_logprobs(model, hidden, targets):
    logits = output_layer(model)(hidden).float() / TEMPERATURE
    return torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)


def _full_topk(model, x, form):
    head = output_layer(model)
    logits = head(x["hidden"]).float()[None] / TEMPERATURE
    anchor = head(x["anchor_hidden"]).float()[None] / TEMPERATURE
    kl = topk_reverse_kl_from_logits(logits, anchor, x["targets"][None], x["old"][None],
                                     sampling_topk_ids(logits, 8), form=form)[0]
    return _full_logprobs(model, x["hidden"], x["targets"]), kl


def _value_and_grad(x, function):
    x["hidden"].grad = None
    values = function()
    (sum((w * v).sum() for w, v in zip(x["weights"], values))).backward()
    return [v.detach() for v in values], x["hidden"].grad.clone()


def test_chunked_logprobs_equal_the_full_logits(model) -> None:
    x = _inputs(model)
    expected, expected_grad = _value_and_grad(x, lambda: [_full_logprobs(model, x["hidden"], x["targets"])])
    got, got_grad = _value_and_grad(
        x, lambda: [token_logprobs(model, x["hidden"], x["targets"], temperature=TEMPERATURE, chunk=CHUNK)])
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
    assert expected_grad.abs().max() > 0
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-5 * float(expected_grad.abs().max()))


@pytest.mark.parametrize("form", ["corrected", "paper"])
def test_chunked_topk_kl_equals_the_full_logits(model, form: str) -> None:
    x = _inputs(model, seed=1)
    expected, expected_grad = _value_and_grad(x, lambda: _full_topk(model, x, form))
    got, got_grad = _value_and_grad(x, lambda: topk_kl_rows(
        model, x["hidden"], x["anchor_hidden"], x["targets"], x["old"], k=8, form=form,
        temperature=TEMPERATURE, chunk=CHUNK))
    for value, reference in zip(got, expected):
        torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-5)
    assert expected[1].abs().max() > 0 and expected_grad.abs().max() > 0
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-5 * float(expected_grad.abs().max()))


@pytest.mark.parametrize("path", ["logprobs", "topk", "unchunked reference"])
def test_no_logits_are_kept_for_backward(model, path: str) -> None:
    """The shapes autograd saves outside the checkpointed chunks: none has a vocabulary dimension
    (the unchunked reference shows that the check sees kept logits)."""
    x = _inputs(model, seed=2)
    run = {
        "logprobs": lambda: (token_logprobs(model, x["hidden"], x["targets"], chunk=CHUNK),),
        "topk": lambda: topk_kl_rows(model, x["hidden"], x["anchor_hidden"], x["targets"], x["old"], k=8,
                                     form="corrected", chunk=CHUNK),
        "unchunked reference": lambda: _full_topk(model, x, "corrected"),
    }[path]
    saved: list[tuple[int, ...]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        outputs = run()
    kept = [shape for shape in saved if model.config.vocab_size in shape]
    assert saved
    assert bool(kept) == (path == "unchunked reference"), kept
    sum(output.sum() for output in outputs).backward()


def test_without_autograd_chunks_run_plainly_and_agree(model) -> None:
    x = _inputs(model, seed=3)
    with torch.no_grad():
        chunked = token_logprobs(model, x["hidden"], x["targets"], chunk=CHUNK)
        whole = token_logprobs(model, x["hidden"], x["targets"], chunk=ROWS)
        empty = token_logprobs(model, x["hidden"][:0], x["targets"][:0], chunk=CHUNK)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    assert empty.shape == (0,)
