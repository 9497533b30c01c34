"""llama.cpp's compute devices as ggml sees them, for the memory a child really uses on the GPU.

llama-cpp-python binds llama.h only; ggml's device registry (ggml-backend.h) is reached through
the same library handle, whose symbol lookup covers the ggml libraries it links. The free memory
of each dedicated GPU before and after a load is what the load took there (ollama measures a
runner the same way); with no such device (CPU builds, CPU-only machines) there is nothing to
measure and the scheduler keeps its estimate from the GGUF header.
"""

from __future__ import annotations

import ctypes

import llama_cpp.llama_cpp as bindings

from runner.engine.native import init_backend

_GPU = 1  # enum ggml_backend_dev_type: CPU 0, GPU 1 (dedicated memory), IGPU 2, ACCEL 3

_lib = bindings._lib
_lib.ggml_backend_dev_count.argtypes = []
_lib.ggml_backend_dev_count.restype = ctypes.c_size_t
_lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
_lib.ggml_backend_dev_get.restype = ctypes.c_void_p
_lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
_lib.ggml_backend_dev_type.restype = ctypes.c_int
_lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
_lib.ggml_backend_dev_name.restype = ctypes.c_char_p
_size_p = ctypes.POINTER(ctypes.c_size_t)
_lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, _size_p, _size_p]
_lib.ggml_backend_dev_memory.restype = None


def gpu_free_memory() -> dict[str, int]:
    """Free bytes of each dedicated GPU this process can see, by device name; empty without one."""
    init_backend()
    free: dict[str, int] = {}
    for index in range(_lib.ggml_backend_dev_count()):
        device = _lib.ggml_backend_dev_get(index)
        if _lib.ggml_backend_dev_type(device) != _GPU:
            continue
        available, total = ctypes.c_size_t(), ctypes.c_size_t()
        _lib.ggml_backend_dev_memory(device, ctypes.byref(available), ctypes.byref(total))
        free[_lib.ggml_backend_dev_name(device).decode(errors="replace")] = available.value
    return free
