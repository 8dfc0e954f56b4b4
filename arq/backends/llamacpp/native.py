"""The two things `LlamaCppBackend` needs that llama-cpp-python's `Llama` class does not offer.

Everything else goes through `Llama`'s documented methods and properties. These two calls
use llama.cpp's C functions, whose Python names have changed across 0.3.x releases, so they
live here and nowhere else:

- the logits of the last token `Llama.eval` read: `Llama` keeps them only with
  `logits_all=True`, which computes logits for every prompt token too (a vocabulary-wide
  matrix product per token of the prompt);
- re-encoding a model file's weights (`llama_model_quantize`), which `Llama` cannot do.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["last_logits", "quantize"]


def last_logits(lib: Any, llm: Any) -> np.ndarray:
    """A copy of the logits after the last token `llm.eval` evaluated (float32, one per
    token of the vocabulary)."""
    pointer = lib.llama_get_logits_ith(llm.ctx, -1)
    return np.array(np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)))


def quantize(lib: Any, source: Path, target: Path, file_type: int) -> None:
    """Write `source`'s weights re-encoded as llama.cpp's `file_type` to `target`.

    Raises:
        OSError: llama.cpp could not convert the file.
    """
    params = lib.llama_model_quantize_default_params()
    params.ftype = file_type
    params.allow_requantize = True  # the source is quantized already
    params.nthread = 1
    code = lib.llama_model_quantize(os.fsencode(source), os.fsencode(target), ctypes.byref(params))
    if code != 0:
        raise OSError(f"llama.cpp's conversion failed with code {code}")
