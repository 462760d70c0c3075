#!/usr/bin/env python
"""Regenerates the known-release manifests of tfseg/data/known/ (names, byte sizes and sha256 of every image and
mask: facts about the public releases, no image data): Kvasir-SEG (with PraNet's 900/100 split), STARE and
CHASE_DB1 from the copies in ../shared/data; DRIVE (official names and counts) and PraNet's five test sets
(counts) from the facts written below.

    python tools/make_known_manifests.py [--data ../shared/data] [--output tfseg/data/known]
"""

import argparse
import os
from pathlib import Path

from tfseg.data.layouts import find_dataset
from tfseg.data.manifest import manifest_text, set_manifest
from tfseg.files import write_text

PRANET_TEST_SETS = {"CVC-300": 60, "CVC-ClinicDB": 62, "Kvasir": 100, "CVC-ColonDB": 380, "ETIS-LaribPolypDB": 196}
PRANET = "PraNet (Fan et al., MICCAI 2020): TestDataset of github.com/DengPingFan/PraNet"


def source_line(folder):
    """The lines of the copy's SOURCE.txt before its `Layout:` line: which release it is."""
    lines = []
    for line in (Path(folder) / "SOURCE.txt").read_text().splitlines():
        if line.startswith("Layout"):
            break
        lines.append(line.strip())
    return " ".join(lines)


def released(name, task, folder, set_name, **extra):
    return {
        "name": name,
        "task": task,
        "source": source_line(folder),
        "match": "sha256",
        **extra,
        "sets": {set_name: set_manifest(find_dataset(folder))},
    }


def kvasir(data):
    folder = Path(data) / "Kvasir-SEG"
    protocol = released("Kvasir-SEG", "polyp", folder, "Kvasir-SEG")
    test = sorted(line.strip() for line in (folder / "pranet_kvasir_test_names.txt").read_text().splitlines() if line)
    train = sorted(set(protocol["sets"]["Kvasir-SEG"]["pairs"]) - set(test))
    protocol["subsets"] = {
        "Kvasir-SEG PraNet train": {"of": "Kvasir-SEG", "stems": train},
        "Kvasir-SEG PraNet test": {"of": "Kvasir-SEG", "stems": test},
    }
    return protocol


def drive():
    def split(name, numbers):
        pairs = {
            f"{n:02d}_{name}": {
                "image": {"name": f"{n:02d}_{name}.tif"},
                "mask": {"name": f"{n:02d}_manual1.gif"},
                "fov": {"name": f"{n:02d}_{name}_mask.gif"},
            }
            for n in numbers
        }
        return {"layout": "drive", "count": len(pairs), "pairs": pairs}

    return {
        "name": "DRIVE",
        "task": "vessel",
        "source": "DRIVE (Staal et al., TMI 2004), official release: training/ 21-40, test/ 01-20; images/, "
        "1st_manual/, mask/ (names and counts only: the release is not in ../shared/data)",
        "match": "names",
        "sets": {"DRIVE training": split("training", range(21, 41)), "DRIVE test": split("test", range(1, 21))},
    }


def pranet_test_sets():
    return {
        "name": "PraNet TestDataset",
        "task": "polyp",
        "source": PRANET + " (folder names and counts only)",
        "match": "counts",
        "layout": True,
        "sets": {f"PraNet TestDataset/{name}": {"folder": name, "count": n} for name, n in PRANET_TEST_SETS.items()},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join("..", "shared", "data"))
    p.add_argument("--output", default=os.path.join("tfseg", "data", "known"))
    args = p.parse_args()
    protocols = {
        "kvasir_seg.json": kvasir(args.data),
        "stare.json": released("STARE", "vessel", Path(args.data) / "STARE", "STARE"),
        "chase_db1.json": released("CHASE_DB1", "vessel", Path(args.data) / "CHASEDB1", "CHASE_DB1"),
        "drive.json": drive(),
        "pranet_testdataset.json": pranet_test_sets(),
    }
    for name, protocol in protocols.items():
        write_text(os.path.join(args.output, name), manifest_text(protocol))
        print(f"{args.output}/{name}: {', '.join(protocol['sets'])}")


if __name__ == "__main__":
    main()
