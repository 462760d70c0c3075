"""Shared by the top-level scripts: flags with both spellings."""


def add_flag(parser, name, *aliases, **kwargs):
    """Adds `--name` (and `aliases`) with their dash spellings (`--data-path` for `--data_path`)."""
    flags = [f"--{name}", *aliases]
    flags += [f.replace("_", "-") for f in flags if "_" in f]
    parser.add_argument(*flags, dest=name, **kwargs)
