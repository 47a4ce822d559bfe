"""What every run records besides its config: package versions and the hardware it ran on."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from oneml.tracking import tags as tag

PACKAGES = ("oneml", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "mlflow", "bitsandbytes")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, str]:
    import psutil
    import torch

    info = {
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "ram_gib": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "gpu_count": str(torch.cuda.device_count() if torch.cuda.is_available() else 0),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=f"{props.total_memory / 2**30:.1f}", cuda=str(torch.version.cuda))
    return info


def process_alive(pid: int) -> bool:
    """Whether a process of this machine is still running (to tell a crashed run from a live one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def process_tags() -> dict[str, str]:
    """The process recording a run: a rerun finds records whose process died without ending them (kill -9)."""
    return {tag.HOST: platform.node(), tag.PID: str(os.getpid())}
