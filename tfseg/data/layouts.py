"""The folder layouts of the public polyp and retinal-vessel datasets, recognised by their structure.

| layout  | files                                                                              |
|---------|------------------------------------------------------------------------------------|
| generic | `images/<id>.*`, `masks/<id>[_mask].*`, optional `fov/<id>[_mask or _fov].*`        |
|         | (Kvasir-SEG, PraNet's TrainDataset and TestDataset/<name>, most polyp sets)         |
| DRIVE   | `images/NN_<split>.tif`, `1st_manual/NN_manual1.gif`, `mask/NN_<split>_mask.gif`    |
|         | (the `training/` or `test/` folder of the official release)                         |
| STARE   | `images/imNNNN.ppm`, `labels-ah/imNNNN.ah.ppm` (or `labels-vk/imNNNN.vk.ppm`)       |
| CHASE   | one flat folder: `Image_NN{L,R}.jpg`, `Image_NN{L,R}_1stHO.png` (`_2ndHO`: observer 2) |

A *dataset root* may instead hold several datasets as sub-folders (e.g. PraNet's
`TestDataset/{CVC-300, CVC-ClinicDB, Kvasir, CVC-ColonDB, ETIS-LaribPolypDB}`): see `find_datasets`.
"""

import re
from pathlib import Path

from tfseg.data.sources import DatasetError, Pair, files_by_key, find_pairs, match_files, raise_listing, strip_suffix

CHASE_NAME = re.compile(r"^(Image_\d+[LR])(?:_(1st|2nd)HO)?$")
DRIVE_NUMBER = re.compile(r"^(\d+)_")
STARE_LABELS = {"labels-ah": ".ah", "labels-vk": ".vk"}
FOV_FOLDER = "fov"
FOV_SUFFIXES = ("_mask", "_fov")


def detect_layout(root):
    """'generic', 'drive', 'stare', 'chase' or None for a folder that holds no dataset."""
    root = Path(root)
    if (root / "images").is_dir():
        if (root / "masks").is_dir():
            return "generic"
        if (root / "1st_manual").is_dir():
            return "drive"
        if any((root / folder).is_dir() for folder in STARE_LABELS):
            return "stare"
    if root.is_dir() and any(CHASE_NAME.match(path.stem) and path.stem.endswith("HO") for path in root.iterdir()):
        return "chase"
    return None


def find_dataset(root, observer=1):
    """Sorted `Pair`s (with `fov` where the layout has FOV masks) of the dataset in `root`, any layout above.
    `observer` picks the manual annotation where a dataset has two (DRIVE, CHASE_DB1: 1 or 2)."""
    root = Path(root)
    layout = detect_layout(root)
    if layout is None:
        raise DatasetError(
            f"No dataset in {root}: expected images/ with masks/ (or DRIVE's 1st_manual/, STARE's "
            f"labels-ah/), or CHASE_DB1's flat Image_NN*_1stHO files"
        )
    return {"generic": _generic, "drive": _drive, "stare": _stare, "chase": _chase}[layout](root, observer)


def find_datasets(root, observer=1):
    """[(name, pairs)]: `root` itself when it is a dataset, otherwise each sub-folder that is one (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Dataset folder not found: {root}")
    if detect_layout(root):
        return [(root.resolve().name, find_dataset(root, observer))]
    folders = sorted(path for path in root.iterdir() if path.is_dir() and detect_layout(path))
    if not folders:
        raise DatasetError(
            f"No dataset in {root} nor in its sub-folders: expected images/ and masks/ folders "
            f"(or the DRIVE, STARE or CHASE_DB1 layout)"
        )
    return [(folder.name, find_dataset(folder, observer)) for folder in folders]


def _generic(root, observer):
    pairs = find_pairs(root)
    if not (root / FOV_FOLDER).is_dir():
        return pairs
    return _with_fov(root, pairs, files_by_key(root / FOV_FOLDER, _strip_any(FOV_SUFFIXES)), root / FOV_FOLDER)


def _drive(root, observer):
    number = lambda stem: match[1] if (match := DRIVE_NUMBER.match(stem)) else None
    manual_dir = root / f"{_ordinal(observer)}_manual"
    images = files_by_key(root / "images", number)
    manual = files_by_key(manual_dir, lambda stem: number(stem) if stem.endswith(f"_manual{observer}") else None)
    pairs = [
        Pair(Path(p.image).stem, p.image, p.mask)
        for p in match_files(root, images, root / "images", manual, manual_dir)
    ]
    if not (root / "mask").is_dir():
        return pairs
    return _with_fov(root, pairs, files_by_key(root / "mask", strip_suffix("_mask")), root / "mask")


def _stare(root, observer):
    folder = next(folder for folder in STARE_LABELS if (root / folder).is_dir())
    return find_pairs(root, "images", folder, mask_suffix=STARE_LABELS[folder])


def _chase(root, observer):
    def key(wanted):
        return lambda stem: match[1] if (match := CHASE_NAME.match(stem)) and match[2] == wanted else None

    return match_files(root, files_by_key(root, key(None)), root, files_by_key(root, key(_ordinal(observer))), root)


def _ordinal(observer):
    if observer not in (1, 2):
        raise DatasetError(f"observer must be 1 or 2, got {observer}")
    return {1: "1st", 2: "2nd"}[observer]


def _strip_any(suffixes):
    def key(stem):
        for suffix in suffixes:
            if stem.endswith(suffix):
                return stem[: -len(suffix)]
        return stem

    return key


def _with_fov(root, pairs, fov_files, fov_dir):
    missing = [pair.stem for pair in pairs if pair.stem not in fov_files]
    raise_listing(f"{fov_dir} lacks the FOV mask of some images of {root}:", [(missing, "image(s) without one")])
    return [pair._replace(fov=fov_files[pair.stem]) for pair in pairs]
