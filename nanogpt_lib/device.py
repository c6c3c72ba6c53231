"""Choosing the device and the mixed-precision mode, and describing the hardware honestly."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import platform
import sys

import torch

from .errors import UserError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")  # the values of every --device flag
AMP_CHOICES = ("auto", "off", "fp16", "bf16")  # the values of every --amp flag
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU (is this a CPU-only build of torch?)")
    if name == "mps" and not mps:
        raise UserError("--device mps was requested but this machine has no Apple MPS backend")
    return torch.device(name)


def cpu_bf16_units() -> list[str]:
    """The bf16 matrix instructions of this CPU that PyTorch's CPU kernels use (empty when it has none).

    Intel AMX (Sapphire Rapids and later Xeons) and AVX512-BF16 (Cooper Lake, AMD Zen 4 and later) multiply bf16
    matrices natively. Other CPUs only emulate bf16, converting to fp32 and back, which makes a bf16 step slower
    than an fp32 one.
    """
    checks = {"AMX": "_is_amx_tile_supported", "AVX512-BF16": "_is_avx512_bf16_supported"}
    return [name for name, check in checks.items() if getattr(torch.cpu, check, lambda: False)()]


def amp_decision(amp: str, device: torch.device) -> tuple[str, str]:
    """The mixed-precision mode to use and why: ``auto`` picks per device, anything else is taken as asked.

    ``auto``: bf16 on CUDA GPUs that support it, fp16 (with a GradScaler) on older ones; bf16 on CPUs with native
    bf16 matrix instructions (see :func:`cpu_bf16_units`); off (fp32) on other CPUs and on MPS.
    """
    if amp == "fp16" and device.type != "cuda":
        raise UserError(f"--amp fp16 needs a CUDA GPU (device is {device.type}); use --amp bf16 or --amp off")
    if amp != "auto":
        return amp, f"--amp {amp} as given"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU supports bf16"
        return "fp16", "auto: this GPU has no bf16, so fp16 with a gradient scaler"
    if device.type == "cpu":
        units = cpu_bf16_units()
        if units:
            return "bf16", f"auto: this CPU multiplies bf16 matrices natively ({', '.join(units)})"
        return "off", "auto: this CPU has no native bf16 matrix instructions, where bf16 is slower than fp32"
    return "off", f"auto: fp32 on {device.type}"


def resolve_amp(amp: str, device: torch.device) -> str:
    """The mixed-precision mode to use (see :func:`amp_decision`, which also says why)."""
    return amp_decision(amp, device)[0]


def autocast(device: torch.device, amp: str):
    """The autocast context for a forward pass (a no-op context when amp is off)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def configure_backends(device: torch.device, keep_freed: bool = True) -> dict[str, bool]:
    """Process settings for fast training; returns what was set, for run_config.json and the benchmark.

    TF32 matmuls on CUDA (fp32 results at tensor-core speed; PyTorch leaves them off by default), and glibc's
    allocator told to keep freed memory (see keep_freed_memory).
    """
    tf32 = device.type == "cuda"
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return {"tf32": tf32, "keep_freed_memory": keep_freed and keep_freed_memory()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    units = ", ".join(cpu_bf16_units()) or "no bf16 units"
    model = cpu_model()
    return f"CPU{f' {model}' if model else ''} ({platform.machine()}, {torch.get_num_threads()} threads, {units})"


def cpu_model() -> str:
    """The CPU's model name as the system gives it (Linux: /proc/cpuinfo), or "" where it says none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() if platform.processor() not in ("", platform.machine()) else ""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def keep_freed_memory() -> bool:
    """Let glibc reuse freed large blocks instead of returning them to the kernel; True if it took effect.

    By default glibc serves allocations above its mmap threshold (at most 32 MB) with fresh pages from the kernel
    and unmaps them when freed, so each training step on a CPU maps its large tensors (logits: B*T x 50,257 floats)
    anew and takes a page fault per 4 KB of them. Measured on a 2-core x86 CPU (python -m nanogpt_lib.bench, and the
    sanity configuration): a training step 1.2-1.7x faster. Other platforms are left as they are.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 31))


def machine_kind(device: torch.device | None = None) -> str:
    """Which of the README's three kinds of machine runs here: ``gpu`` (CUDA or MPS), ``cpu-bf16`` (a CPU with bf16
    matrix units) or ``cpu-no-bf16``. ``device`` defaults to the one ``--device auto`` picks."""
    device = device or pick_device("auto")
    if device.type != "cpu":
        return "gpu"
    return "cpu-bf16" if cpu_bf16_units() else "cpu-no-bf16"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.device",
        description="The device --device auto picks here, its precision under --amp auto, and the kind of machine.",
    )
    parser.add_argument("--kind", action="store_true", help="print only the kind: gpu, cpu-bf16 or cpu-no-bf16")
    args = parser.parse_args(argv)
    device = pick_device("auto")
    if args.kind:
        print(machine_kind(device))
    else:
        amp, why = amp_decision("auto", device)
        print(f"{device_name(device)} | amp {amp} ({why}) | kind {machine_kind(device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
