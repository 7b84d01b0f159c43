"""Where the policy's model runs and in which precision, resolved from the machine.

`policy.device` is `auto` (a GPU when torch sees one, else the CPU), `cpu`, `cuda` or
`cuda:N`; a GPU that is not there is refused before any model loads, with what was asked
and what this torch can see. `policy.dtype = "auto"` picks bfloat16 base weights on a GPU,
and on a CPU only where the CPU multiplies bf16 natively (`amx_bf16` or `avx512_bf16`):
elsewhere bf16 is emulated and float32 generates about 3x faster, while on an AMX Xeon bf16
is about 1.5x faster than float32. A constant would be wrong on one machine or the other.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (as /proc/cpuinfo spells them) of units that multiply bf16 matrices natively."""
CPUINFO = Path("/proc/cpuinfo")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


class DeviceError(ValueError):
    """A device or dtype that cannot be honoured on this machine."""


@dataclass(frozen=True)
class Precision:
    """The resolved placement of the policy's model, and why its dtype was chosen."""

    device: str
    dtype: str
    reason: str
    device_name: str

    def describe(self) -> str:
        return f"{self.dtype} on {self.device} ({self.device_name}): {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Precision:
        """A recorded precision (a run directory's JSON), checked: a device and a dtype this
        module could have resolved; ValueError otherwise."""
        device, dtype = str(data["device"]), str(data["dtype"])
        if device == "auto" or not DEVICE_PATTERN.fullmatch(device) or dtype not in DTYPES:
            raise ValueError(f"not a resolved precision: device {device!r}, dtype {dtype!r}")
        return cls(device, dtype, str(data["reason"]), str(data["device_name"]))


# -- the CPU ---------------------------------------------------------------------------------------


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of a /proc/cpuinfo text (its first `flags` line; all cores agree)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_model_name(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


@lru_cache(maxsize=1)
def host_cpuinfo() -> str:
    """This machine's /proc/cpuinfo, read once ("" where there is none: not Linux, a sandbox)."""
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


def host_cpu_name() -> str:
    import platform

    return cpu_model_name(host_cpuinfo()) or platform.processor() or platform.machine()


# -- device and dtype --------------------------------------------------------------------------------


def resolve_device(requested: str = "auto") -> str:
    """`auto` → `cuda` when torch sees a GPU, else `cpu`; `cuda`/`cuda:N` only when that GPU exists."""
    if not DEVICE_PATTERN.fullmatch(requested):
        raise DeviceError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N")
    if requested == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if available else "cpu"
    count = torch.cuda.device_count() if available else 0
    index = int(requested.partition(":")[2] or 0)
    if index >= count:
        seen = f"{count} CUDA device(s) (cuda:0..cuda:{count - 1})" if count else "no CUDA device"
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise DeviceError(
            f"{requested!r} was asked for, but {build} sees {seen}. Use auto or cpu here; on a machine with an "
            "NVIDIA GPU, install a CUDA build of torch (the README's set-up run there) to train on it."
        )
    return requested


def auto_dtype(device: str, flags: frozenset[str]) -> tuple[str, str]:
    """(dtype, reason) for `policy.dtype = "auto"` on `device`, given the CPU's `flags`."""
    if device.startswith("cuda"):
        return "bfloat16", "a GPU computes in bf16 natively"
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if native:
        return "bfloat16", f"cpu has {native[0]}"
    if not flags:
        return "float32", "cpu flags unknown (no /proc/cpuinfo): float32 is safe"
    return "float32", f"cpu has no {' or '.join(NATIVE_BF16_FLAGS)} (bf16 would be emulated)"


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device, the CPU's model name for `cpu`."""
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    return host_cpu_name()


def resolve_precision(device: str = "auto", dtype: str = "auto", *, cpuinfo: str | None = None) -> Precision:
    """Both settings resolved on this machine (`cpuinfo`: another machine's text, for tests)."""
    if dtype != "auto" and dtype not in DTYPES:
        raise DeviceError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    placed = resolve_device(device)
    if dtype == "auto":
        chosen, reason = auto_dtype(placed, cpu_flags(host_cpuinfo() if cpuinfo is None else cpuinfo))
    else:
        chosen, reason = dtype, "set by policy.dtype"
    name = cpu_model_name(cpuinfo) if cpuinfo is not None and placed == "cpu" else device_name(placed)
    return Precision(placed, chosen, reason, name)
