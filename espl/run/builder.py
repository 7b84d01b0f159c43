"""Build a run's parts from its plan: policy engine, trainer, drivers, reflector, evolver.

The one place that knows engine names and how the parts fit: with `hf` the engine samples
from the very model the trainer updates (LoRA attached first, then the engine wraps the peft
model); a disk-loading engine (`vllm`) gets each update as a published adapter. How an engine
takes an update is its own business (`Engine.adapter_from`), so nothing after this module
asks which engine it has. Every part is built from the `RunPlan` (`espl.run.plan`), which
checks the config before any model loads.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.rollout import RolloutDriver
from envs import registry
from envs.base import TextEnv
from espl.evolution.evolver import Evolver, ScheduledOperator
from espl.evolution.operators import make_operator
from espl.evolution.population import Population
from espl.evolution.selection import SelectionStrategy, make_strategy
from espl.files.atomic import readable_directory
from espl.run.context import TRAINER_CHECKPOINT, Observer, Policy, Run
from espl.run.kept_precision import plan_kept_run
from espl.run.plan import EngineSpec, RunPlan, operator_specs
from espl.run.ranks import Followers
from espl.run.resume import RunDirError, open_run
from espl.run.run_dir import CHECKPOINT, RunDir
from espl.tracking import TrackerContext, open_trackers

if TYPE_CHECKING:
    from espl.config import RunConfig
    from espl.methods.protocol import Method

__all__ = ["RunDirError", "adapter_prefix", "build_evolver", "build_policy", "build_reflector", "build_run",
           "build_selection", "build_trainer", "reflector_overlaps_update"]

ADAPTER_DIR = "adapters"


def build_run(
    config: RunConfig, run_dir: RunDir, method: Method, *, observer: Observer | None = None,
    followers: Followers | None = None,
) -> Run:
    """Check the config, open `run_dir` (fresh or resumed), and build what `method` needs;
    under `torchrun`, `followers` are the other ranks, which train with this one (and build
    their trainers from this plan, so a resumed run's kept precision is theirs too)."""
    plan, _ = plan_kept_run(config, run_dir)
    state, resumed = open_run(run_dir)
    if state.precision is None:  # a new run, or one checkpointed before runs recorded it
        state.precision = plan.precision  # `espl.run.kept_precision`: the checkpoints carry it on
    policy = build_policy(plan, adapter_dir=str(run_dir.file(ADAPTER_DIR)), followers=followers,
                          run_name=adapter_prefix(run_dir), first_adapter=not resumed)
    if resumed and policy.trainer is not None:
        _restore_trainer(policy, run_dir)  # the engine's first adapter: the checkpoint's
    tokenizer = policy.engine.tokenizer
    run = Run(
        config, run_dir, policy,
        RolloutDriver(policy.engine, env_factory(plan, plan.splits[0], tokenizer, training=True), plan.train_rollout),
        RolloutDriver(policy.engine, env_factory(plan, plan.splits[1], tokenizer), plan.eval_rollout),
        state=state, resumed=resumed, observer=observer,
    )
    run.plan = plan
    if plan.trackers:
        run.tracker = open_trackers(plan.trackers, tracker_context(config, run_dir, state.iteration if resumed else None))
    return run


def tracker_context(config: RunConfig, run_dir: RunDir, resumed_after: int | None) -> TrackerContext:
    """What the trackers are told: the run's folder, a readable name, its config, where it resumes."""
    name = f"{config.env.name}--{config.method}--{Path(config.policy.model).name}/{run_dir.path.name}"
    return TrackerContext(run_dir.path, name, config.to_dict(), resumed_after)


def _restore_trainer(policy: Policy, run_dir: RunDir) -> None:
    """Load the checkpoint's trainer (on every rank), then hand its adapter to the engine: a
    fleet loads it on every server, new ones included, before any request is sent."""
    from espl.rl.checkpoint import CheckpointError, load_checkpoint

    path = readable_directory(run_dir.file(CHECKPOINT)) / TRAINER_CHECKPOINT
    try:
        load_checkpoint(policy.trainer, path)
    except CheckpointError as error:
        raise RunDirError(str(error)) from None
    if policy.followers is not None:
        policy.followers.load(path)
    policy.after_update()


# -- the policy --------------------------------------------------------------------------------


def adapter_prefix(run_dir: RunDir) -> str:
    """What the fleet's adapter names begin with (`<prefix>-v<k>`): the run directory's name,
    so a server's log says which run loaded what (in a suite, `<env>--<method>--seed<k>`,
    unique among its runs), then a random tag, because names must never repeat on servers
    that outlive a run: a resumed run, or a run of the same name in another suite, counts
    from v1 again."""
    return f"{run_dir.path.resolve().name}-{secrets.token_hex(3)}"


def build_policy(
    plan: RunPlan, *, adapter_dir: str, followers: Followers | None = None, run_name: str | None = None,
    first_adapter: bool = True,
) -> Policy:
    """The policy's engine and, when the method trains, its trainer; `run_name` prefixes the
    adapter versions a fleet loads on its servers (None: a random prefix). `first_adapter`
    False leaves the engine without the fresh trainer's adapter, for a resumed run, whose
    restored trainer hands over its own (a fleet would otherwise load and publish an untrained
    adapter first, in the folder of step 0)."""
    from agents.engines import make_engine

    spec = plan.engine
    if spec.name == "fleet" and run_name is not None:
        spec = EngineSpec(spec.name, spec.model, {**spec.kwargs, "run_name": run_name})
    if plan.trainer is None:
        if followers is not None:  # nothing to train: the other ranks are not needed, they end now
            followers.stop(0)
        return Policy(make_engine(spec.name, model=spec.model, **spec.kwargs))
    trainer, tokenizer = build_trainer(plan, adapter_dir=adapter_dir, followers=followers)
    if spec.name == "hf":
        from agents.engines.hf import HFEngine

        engine = HFEngine(trainer.model, tokenizer=tokenizer)  # samples from the weights it trains
    else:
        engine = make_engine(spec.name, model=spec.model, **spec.kwargs)
    built = Policy(engine, trainer, followers=followers)
    if first_adapter:
        built.after_update()
    return built


def build_trainer(
    plan: RunPlan, *, adapter_dir: str | None, followers: Followers | None = None, distributed: Any = None,
) -> tuple[Any, Any]:
    """The LoRA trainer on the policy's model, and its tokenizer. Under `torchrun` rank 0
    passes its `followers` (told to build theirs once this rank's model is loaded, so that a
    failure before then never leaves them waiting in a collective) and the other ranks their
    `distributed` context; each rank trains on its own GPU."""
    from agents import models
    from espl.rl.distributed import DistributedContext
    from espl.rl.sharding import check_sharding
    from espl.rl.trainer import LoRATrainer

    assert plan.precision is not None, "the plan refuses training on an engine that places itself remotely"
    spec = plan.engine
    distributed = followers.ranks if followers is not None else distributed
    check_sharding(plan.trainer, distributed or DistributedContext())  # before a model is loaded
    device = plan.precision.device if distributed is None else distributed.local_device(plan.precision.device)
    tokenizer = models.load_tokenizer(spec.model)
    # A base sharded by FSDP is loaded in host memory; each rank moves only its slice to `device`.
    model = models.load_model(spec.model, dtype=plan.precision.dtype, device="cpu" if plan.trainer.fsdp else device)
    if followers is not None:
        followers.start(plan)
    trainer = LoRATrainer(model, plan.trainer, pad_id=tokenizer.pad_token_id or 0, seed=plan.seed,
                          publish_dir=adapter_dir, distributed=distributed, device=device if plan.trainer.fsdp else None)
    return trainer, tokenizer


def env_factory(plan: RunPlan, split: str, tokenizer: Any = None, *, training: bool = False) -> Callable[[], TextEnv]:
    """A zero-argument builder of the run's env on `split`; an env that declares a `tokenizer`
    argument gets the policy's (token budgets of search observations). Training envs give
    partial credit when the plan asks for it; evaluation envs never do."""
    from espl.run.env_plan import env_parameters

    kwargs = dict(plan.env_kwargs)
    if training and plan.partial_credit is not None:
        kwargs["partial_credit"] = True
    if "tokenizer" in env_parameters(plan.env_id) and tokenizer is not None:
        kwargs.setdefault("tokenizer", tokenizer)
    return lambda: registry.make(plan.env_id, split=split, **kwargs)


# -- evolution -------------------------------------------------------------------------------------


def build_reflector(run: Run) -> Any:
    """The run's reflector (built once): by default the policy's engine with the adapter off
    (the frozen base model), or its own engine."""
    if run.reflector is None:
        run.reflector = reflector_for(run.plan, run.policy)
    return run.reflector


def reflector_for(plan: RunPlan, policy: Policy) -> Any:
    from espl.evolution.reflector import Reflector

    if plan.reflector is None:
        engine = policy.engine
    else:
        from agents.engines import make_engine

        spec = plan.reflector
        engine = make_engine(spec.name, model=spec.model or None, **spec.kwargs)
    return Reflector(engine, plan.reflector_sampling, adapter=None, structured=plan.reflector_structured)


def reflector_overlaps_update(plan: RunPlan, reflector_engine: Any, policy_engine: Any) -> bool:
    """Whether an iteration's evolution may run while the trainer steps (`Evolver.concurrent`).

    Evolution draws from its own seeds (the reflector's, from the run seed and the iteration)
    and touches neither the trainer's weights nor its RNG, so running it beside the step gives
    exactly the sequential result wherever the two share nothing that computes. That holds for
    a reflector on remote servers (`RequestEngine`: the `openai` engine, or the `fleet` the
    policy samples on, asked with the adapter off while the trainer's update is published under
    a new name), and for a reflector engine of its own. It does not hold for the policy's own
    in-process engine: `hf` samples from the very peft model the trainer updates, and `vllm`
    may sleep to give the trainer its memory.
    """
    from agents.engine import RequestEngine

    return plan.reflector is not None or (reflector_engine is policy_engine and isinstance(policy_engine, RequestEngine))


def build_selection(plan: RunPlan) -> SelectionStrategy:
    name, options = plan.selection
    return make_strategy(name, **options)


def build_evolver(run: Run, population: Population, *, rated: bool, operators: Sequence[str] | None = None) -> Evolver:
    """The run's evolver over `population` (its operators: the config's unless named here)."""
    plan = run.plan
    specs = plan.operators if operators is None else operator_specs(run.config, operators)
    scheduled = [ScheduledOperator(make_operator(s.name, **s.options), s.probability) for s in specs]
    reflector = build_reflector(run)
    return Evolver(
        population, reflector, scheduled, ratings=run.ratings if rated else None,
        concurrent=reflector_overlaps_update(plan, reflector.engine, run.policy.engine),
        children_order=plan.evolver["children_order"], duplicate_scores=plan.evolver["duplicate_scores"],
    )
