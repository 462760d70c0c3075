"""`python -m tfseg.data manifest DIR -o FILE` and `python -m tfseg.data check DIR [DIR ...]`: see
tfseg.commands.data_tools."""

from tfseg.cli import run
from tfseg.commands.data_tools import main

if __name__ == "__main__":
    run(main)
