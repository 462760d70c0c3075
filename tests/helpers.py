"""Shared test helpers: small inputs, output comparison, run-a-script."""

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def random_images(batch, height, width, seed=0):
    """Normalised-looking float32 images."""
    return np.random.default_rng(seed).normal(size=(batch, height, width, 3)).astype("float32")


def max_abs_diff(outputs_a, outputs_b):
    """Largest absolute difference over matching outputs (lists or single tensors)."""
    as_list = lambda o: o if isinstance(o, (list, tuple)) else [o]
    pairs = list(zip(as_list(outputs_a), as_list(outputs_b)))
    assert len(pairs) == len(as_list(outputs_a)) == len(as_list(outputs_b))
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)


def run_python(args, env=None, timeout=600, cwd=ROOT):
    """Runs `python ARGS` in a fresh interpreter (needed for device setup and multi-process runs)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
