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
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def tree_state(folder):
    """{relative path: (size, mtime_ns, inode)} of everything under `folder`: what a kill test watches."""
    state = {}
    for root, folders, names in os.walk(folder):
        for name in folders + names:
            path = os.path.join(root, name)
            try:
                status = os.lstat(path)
            except FileNotFoundError:  # removed while walking
                continue
            state[os.path.relpath(path, folder)] = (status.st_size, status.st_mtime_ns, status.st_ino)
    return state


# Runs before a child's code: files opened for writing under $TFSEG_SLOW_WRITES are written slowly, one chunk at a
# time with a pause after each, so that a kill lands in the middle of a small file's write deterministically.
SLOW_WRITES = """
import builtins, os, time
_open, _slow = builtins.open, os.path.realpath(os.environ["TFSEG_SLOW_WRITES"])

class _SlowFile:
    def __init__(self, f):
        self._f = f
    def write(self, data):
        n = self._f.write(data)
        self._f.flush()
        time.sleep(0.5)
        return n
    def __getattr__(self, name):
        return getattr(self._f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._f.__exit__(*exc)
    def __iter__(self):
        return iter(self._f)

def _open_slowly(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    writing = any(c in mode for c in "wax+") and isinstance(file, (str, os.PathLike))
    return _SlowFile(f) if writing and os.path.realpath(file).startswith(_slow + os.sep) else f

builtins.open = _open_slowly
"""


def kill_when_changed(code, watch, changes=1, slow_writes=False, timeout=300):
    """Runs `python -c code` and SIGKILLs it as soon as anything under the folder `watch` has changed `changes`
    times (a file created, grown, replaced or removed): the way a crash or a power cut stops a writer. With
    `slow_writes`, Python-level writes under `watch` pause after each chunk (small files are otherwise written
    before the kill lands). Returns "killed", or the exit status when the child ended first, and its stderr."""
    import signal
    import time

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFSEG_SLOW_WRITES": str(watch)}
    script = (SLOW_WRITES if slow_writes else "") + code
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    before, seen, deadline = tree_state(watch), 0, time.monotonic() + timeout
    try:
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # a poll every 2 ms: a busy loop would hold a core the child and other tests need
            now = tree_state(watch)
            if now != before:
                seen, before = seen + 1, now
                if seen >= changes:
                    child.send_signal(signal.SIGKILL)
                    child.wait()
                    return "killed", child.stderr.read()
        if child.poll() is None:
            child.kill()
            raise TimeoutError(f"the child did not change {watch} within {timeout} s")
        return child.returncode, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
