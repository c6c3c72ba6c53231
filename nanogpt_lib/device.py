"""The machine: the device, the facts about it that decide precision and compilation (``Machine``), those decisions
with their reasons, an NVIDIA GPU that this torch cannot use, process settings, and the hardware described
honestly."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any

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
        why = unused_gpu(nvidia_gpu()) or "is this a CPU-only build of torch?"
        raise UserError(f"--device cuda was requested but PyTorch sees no CUDA GPU: {why}")
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


@dataclasses.dataclass(frozen=True)
class Decision:
    """One choice of the run's plan: the value, why, and a warning to print when the choice is a poor one."""

    value: Any
    reason: str
    warning: str | None = None


@dataclasses.dataclass(frozen=True)
class Machine:
    """The facts about this machine that precision, compilation and the micro-batch are decided from.

    ``probe`` reads them from torch; tests build fake ones (a T4 on Colab, an RTX card on Windows, ...), so that every
    decision below runs on a CPU.
    """

    device: torch.device
    name: str
    platform: str = sys.platform  # "linux", "win32", "darwin"
    capability: tuple[int, int] | None = None  # a CUDA card's compute capability
    memory_bytes: int | None = None  # the GPU memory this process may use
    triton: bool = False  # a Triton package that torch.compile can use on a GPU
    bf16_units: tuple[str, ...] = ()  # a CPU's native bf16 matrix instructions (see cpu_bf16_units)

    @property
    def card(self) -> str:
        """The card and its compute capability, as the reasons name it."""
        if self.capability is None:
            return self.name
        return f"{self.name} (compute capability {self.capability[0]}.{self.capability[1]})"


def probe(device: torch.device) -> Machine:
    """This machine's facts, for ``device``."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        memory = int(props.total_memory * torch.cuda.get_per_process_memory_fraction(device))
        return Machine(device, props.name, sys.platform, (props.major, props.minor), memory, triton_installed())
    if device.type == "cpu":
        return Machine(device, device_name(device), sys.platform, bf16_units=tuple(cpu_bf16_units()))
    return Machine(device, device_name(device), sys.platform)


def triton_installed() -> bool:
    """Whether the Triton package that torch.compile generates GPU kernels with can be imported here."""
    return importlib.util.find_spec("triton") is not None


BF16_FROM = (8, 0)  # Ampere: the first cards whose tensor cores multiply bf16
FP16_FROM = (7, 0)  # Volta: the first with fp16 tensor cores
TRITON_FROM = (7, 0)  # the oldest card Triton generates kernels for (torch._inductor's GPUTooOldForTriton)
CPU_COMPILE_BENCHES = ("results/bench_cpu_124m_bf16_compiled.md", "results/bench_cpu_124m_fp32_compiled.md")


def amp_decision(amp: str, machine: Machine) -> Decision:
    """The mixed-precision mode and why: ``auto`` picks what the hardware multiplies natively, anything else is taken
    as asked (with a warning where the hardware only emulates it).

    ``auto`` on CUDA: bf16 from compute capability 8.0, fp16 with a gradient scaler on 7.x, fp32 below (PyTorch's
    ``is_bf16_supported()`` also answers yes where bf16 is only emulated, so the capability decides). On a CPU: bf16
    with native bf16 matrix instructions (see :func:`cpu_bf16_units`), fp32 otherwise. fp32 on MPS.
    """
    device, cap = machine.device, machine.capability
    if amp != "auto":
        warning = None
        if amp == "bf16" and device.type == "cuda" and cap is not None and cap < BF16_FROM:
            warning = (
                f"--amp bf16 on {machine.card}: this card only emulates bf16, which is slow; --amp auto picks "
                f"{'fp16 with a gradient scaler' if cap >= FP16_FROM else 'fp32'} here"
            )
        if amp == "fp16" and device.type == "mps":
            raise UserError("--amp fp16 needs a CUDA GPU or the CPU (device is mps); use --amp bf16 or --amp off")
        if amp == "fp16" and device.type == "cpu":
            warning = "--amp fp16 on a CPU: slower than bf16 or fp32 here (it is the precision of 7.x CUDA cards)"
        return Decision(amp, f"--amp {amp} as given", warning)
    if device.type == "cuda" and cap is not None:
        if cap >= BF16_FROM:
            return Decision("bf16", f"auto: {machine.card} multiplies bf16 natively")
        if cap >= FP16_FROM:
            return Decision("fp16", f"auto: {machine.card} only emulates bf16: fp16 with a gradient scaler")
        return Decision("off", f"auto: {machine.card} has no fp16 or bf16 tensor cores: fp32")
    if device.type == "cpu":
        if machine.bf16_units:
            return Decision(
                "bf16", f"auto: this CPU multiplies bf16 matrices natively ({', '.join(machine.bf16_units)})"
            )
        return Decision("off", "auto: this CPU has no native bf16 matrix instructions, where bf16 is slower than fp32")
    return Decision("off", f"auto: fp32 on {device.type}")


def compile_decision(compile_model: bool | str, machine: Machine) -> Decision:
    """Whether to run the model through torch.compile, and why: ``auto`` compiles where it will work and pays.

    On CUDA it needs Triton, which PyTorch ships for Linux only, and a card Triton supports (compute capability 7.0
    and up). On a CPU it did not pay: on a 2-core Xeon with AMX a compiled 124M training step ran 1.04x as fast as
    eager in bf16 and 0.95x in fp32, both within the spread of the timings (``CPU_COMPILE_BENCHES``), so ``auto``
    stays eager there, as on MPS. A compilation that fails anyway falls back to eager at the first step (session.py).
    """
    if compile_model != "auto":
        return Decision(bool(compile_model), f"--compile {str(bool(compile_model)).lower()} as given")
    device = machine.device
    if device.type == "cuda":
        if not machine.triton:
            where = "PyTorch ships none for Windows" if machine.platform == "win32" else "pip install triton adds it"
            return Decision(False, f"auto: this machine has no Triton for torch.compile ({where})")
        if machine.capability is not None and machine.capability < TRITON_FROM:
            return Decision(False, f"auto: Triton does not support {machine.card}")
        return Decision(True, f"auto: Triton supports {machine.card}")
    if device.type == "cpu":
        return Decision(False, f"auto: compiling gained nothing measurable on a CPU ({', '.join(CPU_COMPILE_BENCHES)})")
    return Decision(False, f"auto: torch.compile on {device.type} is experimental")


# The CUDA builds of torch that pytorch.org lists for its recent releases (2.9: cu126, cu128, cu130), newest first.
CUDA_WHEELS = ((13, 0), (12, 8), (12, 6))


def nvidia_gpu() -> tuple[str, tuple[int, int] | None] | None:
    """An NVIDIA GPU that the driver sees, whatever torch sees: its name and the newest CUDA version the driver
    supports (None where unknown); None without one."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            names = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                   text=True, timeout=15).stdout.strip().splitlines()  # fmt: skip
            header = subprocess.run([smi], capture_output=True, text=True, timeout=15).stdout
        except (OSError, subprocess.SubprocessError):
            names, header = [], ""
        if names:
            found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", header)
            return names[0].strip(), (int(found[1]), int(found[2])) if found else None
    if os.path.isdir("/proc/driver/nvidia/gpus") and os.listdir("/proc/driver/nvidia/gpus"):
        return "an NVIDIA GPU (its Linux driver is loaded)", None
    return None


def cuda_install_command(driver_cuda: tuple[int, int] | None) -> str:
    """The commands that replace this torch by its CUDA build, for the newest CUDA the driver supports."""
    build = next((v for v in CUDA_WHEELS if driver_cuda is None or v <= driver_cuda), CUDA_WHEELS[-1])
    version = torch.__version__.split("+")[0]
    return (
        f"pip uninstall -y torch, then pip install torch=={version} --index-url "
        f"https://download.pytorch.org/whl/cu{build[0]}{build[1]}"
    )


def unused_gpu(gpu: tuple[str, tuple[int, int] | None] | None) -> str | None:
    """What is wrong when this machine has an NVIDIA GPU (``gpu``, from ``nvidia_gpu``) that this torch cannot use,
    with the commands that fix it; None when torch uses it or there is none."""
    if gpu is None or torch.cuda.is_available():
        return None
    name, driver_cuda = gpu
    if torch.version.cuda is None:
        why = f"this torch ({torch.__version__}) is a CPU-only build"
    else:
        supports = f"CUDA {driver_cuda[0]}.{driver_cuda[1]}" if driver_cuda else "an older CUDA"
        why = f"this torch is built for CUDA {torch.version.cuda} and the driver supports {supports}"
    return f"this machine has {name}, but {why}. To train on it: {cuda_install_command(driver_cuda)}"


def resolve_amp(amp: str, device: torch.device) -> str:
    """The mixed-precision mode to use on ``device`` (see :func:`amp_decision`, which also says why)."""
    return amp_decision(amp, probe(device)).value


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
    anew and takes a page fault per 4 KB of them. Measured on a 2-core x86 CPU with python -m nanogpt_lib.bench: a
    training step of the tiny model 1.60x faster (results/bench_cpu.md against results/bench_cpu_default_allocator.md).
    Other platforms are left as they are.
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
        description="The device --device auto picks here, its precision under --amp auto, compilation under --compile "
        "auto, and the kind of machine.",
    )
    parser.add_argument("--kind", action="store_true", help="print only the kind: gpu, cpu-bf16 or cpu-no-bf16")
    args = parser.parse_args(argv)
    device = pick_device("auto")
    if args.kind:
        print(machine_kind(device))
    else:
        machine = probe(device)
        amp, compiled = amp_decision("auto", machine), compile_decision("auto", machine)
        print(f"{device_name(device)} | amp {amp.value} ({amp.reason}) | compile {compiled.value} ({compiled.reason}) "
              f"| kind {machine_kind(device)}")  # fmt: skip
        print("The plan of the proven recipe for this machine, micro-batch included: nanogpt plan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
