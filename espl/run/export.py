"""Take a run's policy out of its run directory: the LoRA adapter and the system prompt.

    OUT/adapter/          a peft folder (adapter_config.json, adapter_model.safetensors): load it
                          with `PeftModel.from_pretrained(base, OUT/adapter)`, or serve it with
                          `vllm serve BASE --enable-lora --lora-modules name=OUT/adapter`
    OUT/merged/           with --merge: the base with the adapter merged in, a transformers folder
    OUT/system_prompt.txt the prompt the run evaluated at that iteration (`evolution.eval_prompt`)
    OUT/export.json       where it came from: run, iteration, model, prompt id, its placement

The adapter of the final policy is the checkpoint's (the weights after the last completed
iteration). An earlier iteration's is there only if the run published it to `adapters/`
(engines that load adapters from disk do, keeping the newest `rl.keep_adapters`); a version
there is the trainer's batch count, one per iteration. Methods that do not train weights
export the prompt alone.

A run directory is data: only `.safetensors` weights and JSON are read from it, never a
pickle (a folder whose weights are only `adapter_model.bin` is refused).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espl.config import ConfigError, RunConfig, build
from espl.evolution.prompt_log import load_prompt_log
from espl.evolution.selection import choose_eval_prompt
from espl.evolution.system_prompt import SystemPrompt
from espl.files.atomic import readable_directory
from espl.run.builder import ADAPTER_DIR
from espl.run.context import TRAINER_CHECKPOINT
from espl.run.run_dir import CHECKPOINT, CONFIG, LOOP_STATE, PROMPTS, SUMMARY, RunDir

ADAPTER, MERGED, PROMPT_FILE, RECORD = "adapter", "merged", "system_prompt.txt", "export.json"
WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
POLICY_ADAPTER = "policy"
"""The trainer's adapter name: peft saves a named adapter in a subfolder of that name."""


class ExportError(RuntimeError):
    """A run directory (or output folder) that cannot be exported as asked (one line)."""


@dataclass(frozen=True)
class ExportSource:
    """What one iteration of a run has to export."""

    run_dir: RunDir
    config: RunConfig
    iteration: int
    adapter: Path | None
    """A peft folder holding `adapter_model.safetensors`; None: the method trains no weights."""
    prompt: SystemPrompt
    finished: bool


def find_source(path: str | Path, iteration: int | None = None) -> ExportSource:
    """The adapter folder and the evaluated prompt of `iteration` (None: the last completed)."""
    run_dir = RunDir(path)
    config = _config(run_dir)
    done = _completed(run_dir)
    chosen = done if iteration is None else iteration
    if not 0 <= chosen <= done:
        raise ExportError(f"{run_dir.path} has completed iterations 0..{done}; there is no iteration {chosen}")
    return ExportSource(run_dir, config, chosen, _adapter(run_dir, chosen, done), _prompt(run_dir, config, chosen),
                        finished=run_dir.file(SUMMARY).exists() and chosen == done)


def _config(run_dir: RunDir) -> RunConfig:
    try:
        return build(RunConfig, run_dir.read_json(CONFIG))
    except FileNotFoundError:
        raise ExportError(f"{run_dir.file(CONFIG)} does not exist: {run_dir.path} is not a run directory") from None
    except (ValueError, ConfigError) as error:
        raise ExportError(f"{run_dir.file(CONFIG)}: {error}") from None


def _completed(run_dir: RunDir) -> int:
    loop_file = readable_directory(run_dir.file(CHECKPOINT)) / LOOP_STATE
    try:
        return int(json.loads(loop_file.read_text())["iteration"])
    except FileNotFoundError:
        raise ExportError(f"{run_dir.path} has no checkpoint: no iteration of it was completed") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{loop_file}: unreadable loop state ({type(error).__name__}: {error})") from None


def _adapter(run_dir: RunDir, iteration: int, done: int) -> Path | None:
    trainer = readable_directory(run_dir.file(CHECKPOINT)) / TRAINER_CHECKPOINT
    if not trainer.exists():
        return None  # frozen weights: nothing but the prompt
    candidates = [run_dir.file(ADAPTER_DIR) / f"v{iteration:06d}"]
    if iteration == done:
        candidates.insert(0, trainer / "adapter")
    for folder in candidates:
        for peft_folder in (folder / POLICY_ADAPTER, folder):
            if (peft_folder / ADAPTER_CONFIG).exists():
                return _checked(peft_folder)
    published = sorted(int(p.name[1:]) for p in run_dir.file(ADAPTER_DIR).glob("v[0-9]*") if p.name[1:].isdigit())
    kept = sorted({*published, done})
    raise ExportError(f"{run_dir.path} keeps the adapter of iteration(s) {', '.join(map(str, kept))} only, "
                      f"not of iteration {iteration} (see rl.keep_adapters)")


def _checked(folder: Path) -> Path:
    if not (folder / WEIGHTS).exists():
        pickled = " (it holds a pickled adapter_model.bin, which is never loaded)" if (folder / "adapter_model.bin").exists() else ""
        raise ExportError(f"{folder} has no {WEIGHTS}{pickled}")
    try:
        json.loads((folder / ADAPTER_CONFIG).read_text())
    except ValueError as error:
        raise ExportError(f"{folder / ADAPTER_CONFIG}: {error}") from None
    return folder


def _prompt(run_dir: RunDir, config: RunConfig, iteration: int) -> SystemPrompt:
    """The prompt the run evaluated after `iteration`: the population replayed from the prompt
    log to that step, chosen by the run's own rule (as `espl.run.context.Run.eval_prompt`)."""
    if not run_dir.file(PROMPTS).exists():
        raise ExportError(f"{run_dir.file(PROMPTS)} does not exist: the run's prompts are not on file")
    try:
        population = load_prompt_log(run_dir.file(PROMPTS), up_to_step=iteration)
    except (ValueError, KeyError) as error:
        raise ExportError(f"{run_dir.file(PROMPTS)}: {error}") from None
    members = population.member_ids
    return population.get(choose_eval_prompt(members, population.ratings(members), config.evolution.eval_prompt))


# -- writing -----------------------------------------------------------------------------------


def export(source: ExportSource, out: str | Path, *, merge: bool = False, dtype: str = "float32",
           force: bool = False) -> dict[str, Any]:
    """Write `source` to `out` (see the module doc); returns what `export.json` records.

    Everything is written to a staging folder beside `out` first, so a failed merge leaves no
    half export. A non-empty `out` is refused unless `force`; then only the entries named in
    the module doc are replaced, anything else in it is left alone."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty; choose another --out, or --force to replace its export")
    if merge and source.adapter is None:
        raise ExportError(f"a {source.config.method} run trains no weights: there is no adapter to merge "
                          f"(its model is {source.config.policy.model})")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        record = _write(source, staging, merge=merge, dtype=dtype)
        for entry in sorted(staging.iterdir()):
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            entry.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()  # the folder this call made, left empty by a failure
    return record


def _write(source: ExportSource, staging: Path, *, merge: bool, dtype: str) -> dict[str, Any]:
    from agents import models

    config = source.config
    base = models.resolve(config.policy.model)
    (staging / PROMPT_FILE).write_text(source.prompt.text + "\n", encoding="utf-8")
    record: dict[str, Any] = {
        "run": str(source.run_dir.path.resolve()), "iteration": source.iteration, "finished": source.finished,
        "env": config.env.name, "method": config.method, "model": config.policy.model, "base_model": base,
        "prompt_id": source.prompt.id, "prompt_placement": config.policy.placement, "system_prompt": PROMPT_FILE,
        "adapter": None, "merged": None,
    }
    if source.adapter is not None:
        adapter = staging / ADAPTER
        adapter.mkdir()
        shutil.copyfile(source.adapter / WEIGHTS, adapter / WEIGHTS)
        adapter_config = json.loads((source.adapter / ADAPTER_CONFIG).read_text())
        adapter_config["base_model_name_or_path"] = base
        (adapter / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
        record["adapter"] = ADAPTER
        if merge:
            from espl.run.merge import merge_adapter

            merge_adapter(config.policy.model, adapter, staging / MERGED, dtype=dtype)
            record["merged"] = MERGED
            record["merged_dtype"] = dtype
    (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record
