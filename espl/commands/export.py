"""`espl-bench export`: a run's trained adapter and system prompt, ready to load or serve.

    espl-bench export runs/gsm8k--espl--smollm2-135m/20261121-120000 --out exported/
    espl-bench export RUN_DIR --out exported-it5/ --iteration 5 --merge

Loading what it writes (see `espl.run.export` for the layout):

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), "exported/adapter")
    AutoModelForCausalLM.from_pretrained("exported/merged")          # after --merge
    vllm serve BASE --enable-lora --lora-modules espl=exported/adapter --max-lora-rank R
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (espl-bench run --out)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (refused if not empty, unless --force)")
    parser.add_argument("--iteration", type=int, metavar="K",
                        help="export iteration K's adapter and prompt (default: the last completed iteration)")
    parser.add_argument("--merge", action="store_true", help="also write the base model with the adapter merged in")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of the merged model's weights (the merge itself runs in float32)")
    parser.add_argument("--force", action="store_true", help="replace an earlier export in a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agents.models import ModelUnavailable
    from espl.run.export import ExportError, export, find_source

    console = Console()
    try:
        source = find_source(args.run_dir, args.iteration)
        with console.status("writing the export" + (" and merging the adapter" if args.merge else "")):
            record = export(source, args.out, merge=args.merge, dtype=args.dtype, force=args.force)
    except (ExportError, ModelUnavailable, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return 2
    state = "final" if record["finished"] else "last completed"
    if args.iteration is not None:
        state = "chosen"
    console.print(f"exported iteration {record['iteration']} ({state}) of {args.run_dir} to {args.out}:",
                  highlight=False, soft_wrap=True)
    if record["adapter"]:
        console.print(f"  adapter/            peft LoRA adapter on {record['model']}", highlight=False)
    else:
        console.print(f"  (no adapter: {record['method']} trains no weights)", highlight=False)
    if record["merged"]:
        console.print(f"  merged/             transformers model, {record['merged_dtype']}", highlight=False)
    console.print(f"  system_prompt.txt   prompt {record['prompt_id']} (placement: {record['prompt_placement']})",
                  highlight=False)
    console.print("  export.json         where it came from", highlight=False)
    return 0
