"""Dataset manifests and checks: `manifest DIR -o FILE` writes the names, sizes and sha256 of every image and mask
(per set); `check DIR [DIR ...]` says which known release or protocol each set matches (Kvasir-SEG and PraNet's
900/100 split, STARE, CHASE_DB1, DRIVE, PraNet's five test sets) and what differs (missing, extra, changed files),
and lists near-duplicate images inside and across the sets. See docs/DATASETS.md."""

import argparse
import json
import os
import sys

from tfseg import cli
from tfseg.cli import add_flag as add


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tfseg.data", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="{manifest,check}")
    m = commands.add_parser("manifest", help="write the manifest of a dataset folder (or a root of several)")
    m.add_argument("folder", help="a dataset (images/ + masks/, or the DRIVE, STARE, CHASE_DB1 layout) or a root")
    add(m, "output", "-o", help="manifest file to write (default: print it)")
    add(m, "observer", type=int, default=1, choices=[1, 2], help="manual annotation of DRIVE/CHASE_DB1")
    c = commands.add_parser("check", help="match folders against the known releases, a manifest, near-duplicates")
    c.add_argument("folders", nargs="+", metavar="folder", help="datasets or roots of several, checked together")
    add(c, "manifest", metavar="FILE", help="also compare with this manifest (from `manifest`)")
    add(c, "split_file", help="check the train and val parts of the set apart (val ids, one a line)")
    add(
        c,
        "threshold",
        type=int,
        help="near-duplicate Hamming distance of 128 bits (default by task: 16 polyp, 12 retinal sets)",
    )
    add(c, "no_duplicates", action="store_true", help="skip the near-duplicate search")
    add(c, "json", metavar="FILE", help="also write the report as JSON")
    for parser in (m, c):
        cli.add_verbose_flag(parser)
    return p.parse_args(argv)


def _inputs(folders, *files):
    """Every file the command reads: what an output must never overwrite."""
    found = [path for path in files if path]
    for folder in folders:
        for root, _, names in os.walk(folder):
            found += [os.path.join(root, name) for name in names]
    return found


def _write(path, text, inputs):
    from tfseg.files import refuse_overwrite, write_text

    refuse_overwrite([path], inputs)
    write_text(path, text)


def work(args):
    from tfseg.data import manifest as manifests

    if args.command == "manifest":
        value = manifests.manifest(args.folder, args.observer)
        text = manifests.manifest_text(value)
        if not args.output:
            sys.stdout.write(text)
            return
        _write(args.output, text, _inputs([args.folder]))
        for name, entry in value["sets"].items():
            print(f"{name}: {len(entry['pairs'])} pairs, fingerprint sha256:{entry['fingerprint']['sha256']}")
        print(f"Manifest written to {args.output}")
        return
    report = manifests.check(args.folders, args.manifest, args.split_file, not args.no_duplicates, args.threshold)
    print("\n".join(manifests.report_text(report)))
    if args.json:
        _write(args.json, json.dumps(report, indent=2) + "\n", _inputs(args.folders, args.manifest, args.split_file))
        print(f"Report written to {args.json}")


main = cli.command(parse_args, work)
console = cli.console(main)
