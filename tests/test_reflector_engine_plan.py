"""A reflector on an engine of its own runs where the policy runs: the plan hands it the
policy's device and dtype, and a vLLM reflector the policy's placement and a GPU share that
leaves room for the rest of the process."""

from __future__ import annotations

from espl.config import load_config
from espl.run.plan import plan_run
from espl.run.vllm_plan import ALONE_GPU_UTILIZATION, SHARED_GPU_UTILIZATION


def _reflector_kwargs(*overrides: str) -> dict:
    config = load_config("smoke", ['env.name="gsm8k"', 'evolution.reflector.model="tiny-random"', *overrides])
    spec = plan_run(config).reflector
    assert spec is not None
    return spec.kwargs


def test_an_hf_reflector_takes_the_policys_device_and_dtype() -> None:
    kwargs = _reflector_kwargs('method="espl"', 'evolution.reflector.engine="hf"', 'policy.device="cpu"',
                               'policy.dtype="bfloat16"')
    assert kwargs == {"dtype": "bfloat16", "device": "cpu"}
    kwargs = _reflector_kwargs('method="evolution"', 'evolution.reflector.engine="hf"', 'policy.device="cpu"',
                               'policy.dtype="float32"')
    assert kwargs == {"dtype": "float32", "device": "cpu"}


def test_a_vllm_reflector_takes_the_policys_placement_and_no_lora() -> None:
    kwargs = _reflector_kwargs('method="evolution"', 'policy.engine="vllm"', 'evolution.reflector.engine="vllm"',
                               'policy.dtype="float32"', "policy.vllm.tensor_parallel_size=2",
                               "policy.vllm.enforce_eager=true", 'policy.vllm.gpu_memory_utilization=0.3')
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["enforce_eager"] is True
    assert kwargs["gpu_memory_utilization"] == 0.3 and kwargs["enable_lora"] is False
    assert kwargs["dtype"] == "float32" and kwargs["seed"] == 0


def test_a_vllm_reflector_leaves_room_for_a_trainer_or_an_in_process_policy() -> None:
    beside_trainer = _reflector_kwargs('method="espl"', 'evolution.reflector.engine="vllm"', 'policy.dtype="float32"')
    assert beside_trainer["gpu_memory_utilization"] == SHARED_GPU_UTILIZATION
    alone = _reflector_kwargs('method="evolution"', 'policy.engine="openai"', 'policy.base_urls=["http://127.0.0.1:1/v1"]', 'policy.dtype="auto"',
                              'policy.device="auto"',
                              'evolution.reflector.engine="vllm"')
    assert alone["gpu_memory_utilization"] == ALONE_GPU_UTILIZATION
