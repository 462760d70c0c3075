"""The command lines: argparse over the library, one module per command, each with `main(argv=None)` (errors as
one `error:` line) and `console`, the entry point pyproject installs (`tfseg-train-pranet`, ...). The top-level
scripts (train_pranet.py, ...) run the same `main`. The rest of tfseg never parses argv, prints or exits."""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # 13-58 % faster training on x86 CPUs (docs/BENCHMARKS.md)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines
