"""The `vllm` engine on the embedded SmolLM2-135M (vllm-cpu here, the CUDA build on GPU).

One `VLLMEngine` serves the whole module (building one takes ~20 s on 2 cores). It runs in
float32 so that it can be compared token for token with the `hf` engine in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_contract import CONSTRAINTS, CONVERSATIONS, EngineContract, assert_same_greedy, greedy, scorer

from agents.chat import render_prompt_ids
from agents.engine import Adapter, Completion, SamplingParams
from agents.engines import vllm_env

MODEL = "smollm2-135m"
LORA_RANK = 8
PLANNED_RANK = 5
"""The run config's `rl.lora.rank` of the shared engine: the plan rounds it up to a rank vLLM
accepts (8 on vLLM 0.32), which serves the rank-`LORA_RANK` adapters of these tests."""
CONTEXT = 2048


# -- environment settings (no vLLM needed) --------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "expected"),
    [({0, 1}, "0-1"), ({3}, "3"), ({0, 1, 2, 5, 7, 8}, "0-2,5,7-8"), ([4, 2, 3], "2-4")],
)
def test_cpu_list_collapses_runs(cores: set[int], expected: str) -> None:
    assert vllm_env.cpu_list(cores) == expected


def test_cpu_list_rejects_nothing() -> None:
    with pytest.raises(ValueError):
        vllm_env.cpu_list([])


def test_cpu_settings_use_every_allowed_core_and_reserve_none() -> None:
    settings = vllm_env.cpu_settings(kvcache_gib=3)
    assert settings["VLLM_CPU_OMP_THREADS_BIND"] == vllm_env.cpu_list(vllm_env.allowed_cores())
    assert settings["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert settings["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert settings["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in vllm_env.cpu_settings(in_process=False)


def test_apply_defaults_never_overrides_the_user() -> None:
    environ = {"VLLM_CPU_OMP_THREADS_BIND": "1", "VLLM_CPU_KVCACHE_SPACE": ""}
    written = vllm_env.apply_defaults({"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_KVCACHE_SPACE": "2"}, environ)
    assert environ == {"VLLM_CPU_OMP_THREADS_BIND": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
    assert written == {"VLLM_CPU_KVCACHE_SPACE": "2"}


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_engine() -> Any:
    pytest.importorskip("vllm")
    import numba  # noqa: F401 - loaded first, as in a process already serving bm25s retrieval (see vllm_compat)

    from agents.engines.vllm import VLLMEngine

    engine = VLLMEngine(MODEL, **planned_engine_kwargs(), kv_cache_gib=1)
    yield engine
    engine.close()


def planned_engine_kwargs() -> dict[str, Any]:
    """The engine arguments a run's plan gives for a float32 vLLM policy of `CONTEXT` tokens."""
    from espl.config import load_config
    from espl.run.plan import plan_run

    overrides = ['policy.engine="vllm"', 'policy.dtype="float32"', f"policy.max_total_tokens={CONTEXT}",
                 f"policy.vllm.max_model_len={CONTEXT}", f"rl.lora.rank={PLANNED_RANK}"]
    spec = plan_run(load_config("default", overrides)).engine
    assert spec.kwargs["max_lora_rank"] >= LORA_RANK
    return spec.kwargs


class LoraWriter:
    """Saves peft LoRAs on SmolLM2 with random, non-zero A and B (`save_pretrained` folders).

    One peft model is built once; each save redraws its LoRA weights from `seed`."""

    def __init__(self) -> None:
        from peft import LoraConfig, get_peft_model

        from agents.models import load_model

        config = LoraConfig(r=LORA_RANK, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"])
        self.model = get_peft_model(load_model(MODEL), config)

    def save(self, folder: Path, seed: int) -> str:
        import torch

        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                if "lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        self.model.save_pretrained(folder)
        return str(folder)


@pytest.fixture(scope="module")
def lora_writer() -> LoraWriter:
    return LoraWriter()


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory: pytest.TempPathFactory, lora_writer: LoraWriter) -> str:
    return lora_writer.save(tmp_path_factory.mktemp("lora-contract"), seed=1)


def ids_of(results: list[list[Completion]]) -> list[list[int]]:
    return [completions[0].token_ids for completions in results]


# -- the engine contract -----------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.slow
class TestVLLMContract(EngineContract):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls, vllm_engine: Any) -> Any:
        return vllm_engine

    @pytest.fixture(scope="class")
    @classmethod
    def adapter(cls, engine: Any, lora_folder: str) -> Adapter:
        return Adapter(name="contract", path=lora_folder, version=0)

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, engine: Any) -> Any:
        from agents.models import load_model

        return scorer(load_model(MODEL, dtype="float32"))


# -- what only this engine promises ------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.slow
def test_the_run_configs_context_and_lora_rank_reach_the_engine(vllm_engine: Any) -> None:
    from agents.engines.vllm_limits import lora_rank_for

    vllm_config = vllm_engine.llm.llm_engine.vllm_config
    assert vllm_engine.max_model_len == vllm_config.model_config.max_model_len == CONTEXT
    assert vllm_config.lora_config.max_lora_rank == lora_rank_for(PLANNED_RANK)
    assert not vllm_engine.can_sleep and vllm_config.model_config.enable_sleep_mode is False
    too_long = [[1] * CONTEXT]
    (failed,) = vllm_engine.generate(too_long, greedy(2))[0]
    assert not failed.ok and f"max_model_len={CONTEXT}" in (failed.error or "")



@pytest.mark.vllm
@pytest.mark.slow
def test_lora_hot_swap_publishes_new_versions_without_stale_weights(
    vllm_engine: Any, lora_writer: LoraWriter, tmp_path: Path
) -> None:
    """Each published version is sampled with its own weights, even when written to the same
    folder: version 1 (new weights) changes the samples, version 2 (version 0's weights
    again) brings version 0's samples back."""
    prompts = [render_prompt_ids(vllm_engine.tokenizer, c) for c in CONVERSATIONS]
    params = greedy(10)
    base = ids_of(vllm_engine.generate(prompts, params))
    folder = tmp_path / "policy"
    lora_writer.save(folder, seed=11)
    v0 = ids_of(vllm_engine.generate(prompts, params, adapter=Adapter("policy", str(folder), 0)))
    lora_writer.save(folder, seed=12)
    v1 = ids_of(vllm_engine.generate(prompts, params, adapter=Adapter("policy", str(folder), 1)))
    lora_writer.save(folder, seed=11)
    v2 = ids_of(vllm_engine.generate(prompts, params, adapter=Adapter("policy", str(folder), 2)))
    assert v0 != base and v1 != base
    assert v1 != v0, "version 1 was served with version 0's cached weights"
    assert v2 == v0
    ids = {vllm_engine.lora_id(Adapter("policy", str(folder), version)) for version in (0, 1, 2)}
    assert len(ids) == 3
    assert vllm_engine.lora_id(Adapter("policy", str(folder), 1)) not in vllm_engine.llm.llm_engine.list_loras()


@pytest.mark.vllm
@pytest.mark.slow
def test_adapter_without_a_saved_folder_is_rejected(vllm_engine: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="peft folder"):
        vllm_engine.generate([[1, 2, 3]], greedy(2), adapter=Adapter("policy", str(tmp_path / "missing"), 0))


@pytest.mark.vllm
@pytest.mark.slow
def test_seeded_call_repeats_and_other_seed_differs(vllm_engine: Any) -> None:
    prompts = [render_prompt_ids(vllm_engine.tokenizer, c) for c in CONVERSATIONS]
    sample = lambda seed: [[c.token_ids for c in cs] for cs in vllm_engine.generate(prompts, SamplingParams(max_tokens=8, n=2, seed=seed))]  # noqa: E731
    first = sample(21)
    assert sample(21) == first
    assert sample(22) != first


@pytest.mark.vllm
@pytest.mark.slow
def test_constrained_logprobs_at_other_temperatures_are_flagged_masked(vllm_engine: Any) -> None:
    """vLLM masks the logits before it takes any logprob, and only temperature-1 logprobs can be
    had back unmasked (`agents.engines.structured`): at another temperature a constrained
    completion keeps vLLM's masked logprobs and says so."""
    constraint, matches = CONSTRAINTS["regex"]
    params = SamplingParams(temperature=0.7, max_tokens=40, n=2, seed=5, constraint=constraint)
    prompts = [render_prompt_ids(vllm_engine.tokenizer, c) for c in CONVERSATIONS[:2]]
    for completions in vllm_engine.generate(prompts, params):
        for completion in completions:
            assert completion.extra == {"constrained": True, "logprobs_masked": True}
            assert matches(completion.text) and len(completion.logprobs) == len(completion.token_ids)


@pytest.fixture(scope="module")
def reference() -> Any:
    from agents.models import load_model

    return scorer(load_model(MODEL, dtype="float32"))


@pytest.mark.vllm
@pytest.mark.slow
def test_stop_string_inside_a_token_is_reported(vllm_engine: Any, reference: Any) -> None:
    """The stop string is kept at the end and named, for strings that end mid-token too."""
    prompt = CONVERSATIONS[0]
    (full,) = vllm_engine.generate([prompt], greedy(12))[0]
    stop = full.text.strip()[1:3]
    (stopped,) = vllm_engine.generate([prompt], greedy(12, stop=(stop,)))[0]
    ids = render_prompt_ids(vllm_engine.tokenizer, prompt)
    if assert_same_greedy(reference, ids, full.token_ids, stopped.token_ids, prefix_ok=True) is None:
        assert stopped.finish_reason == "stop" and stopped.stop_string == stop
    if stopped.finish_reason == "stop":
        assert stopped.stop_string == stop and stop in stopped.text


# -- agreement with the hf engine --------------------------------------------------------------

PARITY_TOKENS = 16
LOGPROB_TOLERANCE = 2e-3
"""Max |vLLM - HF| logprob on the shared greedy tokens (float32 both sides, nats)."""

PARITY_PROMPTS = CONVERSATIONS + [[{"role": "user", "content": "What is 12 times 7? Answer with the number."}]]


@pytest.mark.vllm
@pytest.mark.slow
def test_greedy_ids_match_the_hf_engine(vllm_engine: Any) -> None:
    """Both engines' greedy ids agree up to the first near tie of the HF model (which other
    kernels may break either way), and their logprobs agree on the shared tokens."""
    from agents.engines.hf import HFEngine

    hf = HFEngine(MODEL, dtype="float32")
    params = greedy(PARITY_TOKENS)
    prompts = [render_prompt_ids(hf.tokenizer, c) for c in PARITY_PROMPTS]
    ours = vllm_engine.generate(prompts, params)
    theirs = hf.generate(prompts, params)
    for prompt, (a,), (b,) in zip(prompts, ours, theirs):
        parted = assert_same_greedy(scorer(hf.model), prompt, a.token_ids, b.token_ids)
        shared = len(a.token_ids) if parted is None else parted
        diffs = [abs(x - y) for x, y in zip(a.logprobs[:shared], b.logprobs[:shared])]
        assert not diffs or max(diffs) < LOGPROB_TOLERANCE, diffs


@pytest.mark.vllm
@pytest.mark.slow
def test_trainer_adapter_hand_off_changes_vllm_samples_like_the_hf_model(vllm_engine: Any, tmp_path: Path) -> None:
    """One RL step, `publish()`, then vLLM samples from the new weights: its greedy ids move
    away from the base model's and agree with the trainer's own in-process model."""
    from agents.engines.hf import HFEngine
    from agents.models import load_model
    from agents.trajectory import Trajectory
    from espl.rl.settings import LoraSettings, TrainerConfig
    from espl.rl.trainer import LoRATrainer

    prompts = [render_prompt_ids(vllm_engine.tokenizer, c) for c in CONVERSATIONS]
    params = greedy(12)
    base = ids_of(vllm_engine.generate(prompts, params))
    sampled = vllm_engine.generate(prompts, SamplingParams(temperature=1.0, max_tokens=12, n=2, seed=3))
    trajectories, keys = [], []
    for i, (prompt, completions) in enumerate(zip(prompts, sampled)):
        for j, completion in enumerate(completions):
            t = Trajectory("synthetic", f"t{i}", "p0", j)
            t.append_prompt(prompt)
            t.append_sampled(completion.token_ids, completion.logprobs)
            t.reward = float(j == 0)
            trajectories.append(t)
            keys.append(("p0", t.task_id))
    config = TrainerConfig(loss="reinforce", lr=5e-3, lora=LoraSettings(rank=LORA_RANK, alpha=16))
    trainer = LoRATrainer(load_model(MODEL), config, pad_id=vllm_engine.tokenizer.pad_token_id)
    assert trainer.step(trajectories, keys)["sequences"] > 0
    adapter = trainer.publish(str(tmp_path / "adapters"))
    tuned = ids_of(vllm_engine.generate(prompts, params, adapter=adapter))
    assert tuned != base
    hf = HFEngine(trainer.model, tokenizer=vllm_engine.tokenizer)
    in_process = ids_of(hf.generate(prompts, params, adapter=trainer.adapter()))
    trained = scorer(trainer.model, base=False)
    for prompt, a, b in zip(prompts, tuned, in_process):
        assert_same_greedy(trained, prompt, a, b)
