"""Per-process runtime settings shared by the model filters: thread counts and devices.

Inside Spark each task gets one core, so models must not spawn a thread per core each;
`pipeline.spark` exports PHOTOGENIC_WORKER_THREADS=1 to the workers. Outside Spark (tests, a
plain loop) the variable is unset and libraries pick their own defaults.
"""
from __future__ import annotations

import importlib
import os


class LazyModule:
    """A module imported on first attribute access.

    The registry imports every filter module to read what the classes declare; heavy libraries
    (cv2, imagehash) must not load then, or `photogenic config` would take seconds.
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


def worker_threads() -> int:
    """Threads one model may use in this process; 0 means "library default"."""
    try:
        return max(0, int(os.environ.get("PHOTOGENIC_WORKER_THREADS", "0") or 0))
    except ValueError:
        return 0


def onnx_session(model_path: str, use_gpu: bool | None = None):
    """An onnxruntime session honouring the worker thread count; CUDA when present."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = worker_threads()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if use_gpu is not False and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model_path, sess_options=options, providers=providers)


def torch_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA GPU; use device = \"auto\" or \"cpu\"")
    return device


def set_torch_threads() -> None:
    threads = worker_threads()
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
