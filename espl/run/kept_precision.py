"""A resumed run computes in the precision it started in, where the config says "auto".

`policy.device = "auto"` and `policy.dtype = "auto"` are resolved on the machine at hand
(`agents.devices`: bfloat16 on a CPU that multiplies bf16 natively, float32 on one that does
not; cuda where torch sees a GPU). `config.json` keeps "auto", as it must (`compare` tells a
stale run by its config), so a run resumed on another machine would, unrecorded, continue in
another dtype or on another device: numerically another run.

The precision a run starts in is recorded in its checkpoint's loop state (`LoopState.precision`,
JSON in `checkpoint/loop.json`), not in a file beside `config.json`: it describes the trainer
state saved with it (the weights and optimizer moments were computed in it), the checkpoint
swaps both in at once so they never disagree, and a run without a checkpoint starts over from
nothing (`espl.run.resume`), free to resolve afresh, so a record from a start that never
checkpointed could only mislead. The record is made when the run starts (or, for a run
checkpointed before runs recorded it, when it first resumes) and carried unchanged from one
checkpoint to the next.

On resume, with a record (`keep_precision`):

- `policy.dtype = "auto"`: the recorded dtype, whatever auto would pick here (`resume_note`);
- `policy.device = "auto"`: the recorded kind, cpu or cuda; a cuda run on a machine without a
  GPU is refused (`--resume` takes no overrides of the config: it continues on a machine with one);
- an explicit setting: resolved as a new run resolves it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from agents.devices import DeviceError, Precision, resolve_device, resolve_precision

if TYPE_CHECKING:
    from espl.config import PolicyConfig, RunConfig
    from espl.run.plan import RunPlan
    from espl.run.run_dir import RunDir


def device_kind(device: str) -> str:
    """`cuda:1` → `cuda`: what `policy.device = "auto"` chooses between."""
    return device.partition(":")[0]


def keep_precision(device: str, dtype: str, started: Precision) -> Precision:
    """The precision a run that started in `started` continues in, for the config's `device`
    and `dtype` settings (see the module doc); DeviceError for a cuda run on a machine without a GPU."""
    placed = device
    if device == "auto":
        placed = device_kind(started.device)
        if placed == "cuda" and resolve_device("auto") != "cuda":
            raise DeviceError(
                f"auto, and this run started on cuda ({started.device_name}), but torch sees no GPU on this "
                "machine: resume it on a machine with a GPU (a resumed run keeps the device kind it started on)"
            )
    here = resolve_precision(placed, dtype)
    if dtype != "auto" or here.dtype == started.dtype:
        return here
    return replace(here, dtype=started.dtype, reason=f"kept from the run's start ({started.reason})")


def resume_note(policy: PolicyConfig, started: Precision | None, kept: Precision | None) -> str | None:
    """One plain line for the user when a resumed run's precision is not what "auto" picks here,
    or when its checkpoint records none; None when there is nothing to say."""
    if kept is None or "auto" not in (policy.device, policy.dtype):
        return None
    if started is None:
        return (f"note: this run's checkpoint records no precision (it predates the record), so policy.device/dtype "
                f"\"auto\" are resolved on this machine as before: {kept.dtype} on {kept.device}; the run keeps "
                "them from now on")
    notes = []
    if policy.device == "auto" and device_kind(kept.device) != resolve_device("auto"):
        notes.append(f"policy.device auto: keeping {kept.device}, which the run started on "
                     f"(auto would pick {resolve_device('auto')} on this machine)")
    if policy.dtype == "auto":
        auto_here = resolve_precision(kept.device, "auto").dtype
        if auto_here != kept.dtype:
            notes.append(f"policy.dtype auto: keeping {kept.dtype}, which the run started with "
                         f"(auto would pick {auto_here} on this machine)")
    return "; ".join(notes) or None


def plan_kept_run(config: RunConfig, run_dir: RunDir | None) -> tuple[RunPlan, str | None]:
    """The plan of the run in `run_dir` (None: a new run), in the precision its checkpoint
    records, with `resume_note`'s line; reads the checkpoint and changes nothing on disk."""
    from espl.run.plan import plan_run
    from espl.run.resume import checkpoint_state

    state = None if run_dir is None else checkpoint_state(run_dir)
    started = None if state is None else state.precision
    plan = plan_run(config, started_in=started)
    return plan, None if state is None else resume_note(config.policy, started, plan.precision)
