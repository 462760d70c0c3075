"""Dataset manifests (names, byte sizes and sha256 of every image and mask, per set), the known public releases
and protocols (`tfseg/data/known/*.json`) and the check of a folder against them. Pure Python: no TensorFlow.

A manifest: {"format": FORMAT, "sets": {set name: {"layout", "fingerprint", "pairs": {stem: {"image": {"name",
"size", "sha256"}, "mask": {...}[, "fov": {...}]}}}}}. A known protocol adds "name", "task", "source", "match"
(what is compared: "sha256" every file, "names" the official names, "counts" the folder name and count) and
"subsets" ({set name: {"of": set, "stems": [...]}}, e.g. PraNet's 900/100 split of Kvasir-SEG).
"""

import concurrent.futures
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from tfseg.data.layouts import detect_layout, find_dataset, find_datasets
from tfseg.data.sources import DatasetError, split_by_file
from tfseg.files import fingerprint

FORMAT = "tfseg-manifest/1"
KNOWN_DIR = Path(__file__).with_name("known")
LEVELS = ("sha256", "names", "counts")  # strongest first
ROLES = ("image", "mask", "fov")
MAX_LISTED = 20


def _sha256(path):
    return fingerprint(path).removeprefix("sha256:")


def _hash_all(paths):
    """{path: sha256 hex}, read in threads (hashlib releases the GIL)."""
    paths = sorted(set(paths))
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(paths, pool.map(_sha256, paths)))


def _entries(pairs, hashes=None):
    """{stem: {role: {"name", "size"[, "sha256"]}}} of `pairs`; sha256 when `hashes` ({path: hex}) is given."""
    result = {}
    for pair in pairs:
        entry = {}
        for role in ROLES:
            path = getattr(pair, role)
            if path is not None:
                entry[role] = {"name": os.path.basename(path), "size": os.path.getsize(path)}
                if hashes is not None:
                    entry[role]["sha256"] = hashes[path]
        result[pair.stem] = entry
    return result


def _fingerprint_of(entries):
    """The fingerprint of {stem: entry} with sha256: see `dataset_fingerprint`."""
    lines = sorted(
        f"{e['image']['name']}\0{e['image']['sha256']}\0{e['mask']['name']}\0{e['mask']['sha256']}\n"
        for e in entries.values()
    )
    return {"images": len(lines), "sha256": hashlib.sha256("".join(lines).encode()).hexdigest()}


def dataset_fingerprint(pairs):
    """{"images": n, "sha256": hex}: ONE sha256 over the pairs sorted by image name, each as `image name \\0
    sha256(image bytes) \\0 mask name \\0 sha256(mask bytes) \\n` (files hashed in threads). Folder locations do
    not count; a renamed, changed, added or removed image or mask changes it."""
    pairs = list(pairs)
    return _fingerprint_of(_entries(pairs, _hash_all(p for pair in pairs for p in pair[1:] if p is not None)))


def set_manifest(pairs, layout=None):
    """The manifest entry of one set of pairs: layout, fingerprint and every file's name, size and sha256."""
    pairs = list(pairs)
    entries = _entries(pairs, _hash_all(p for pair in pairs for p in pair[1:] if p is not None))
    return {"layout": layout, "fingerprint": _fingerprint_of(entries), "pairs": entries}


def manifest(folder, observer=1):
    """The manifest of the dataset(s) in `folder` (one set, or each sub-folder that is one)."""
    sets = {}
    for name, pairs in find_datasets(folder, observer):
        root = Path(folder) if detect_layout(folder) else Path(folder) / name
        sets[name] = set_manifest(pairs, detect_layout(root))
    return {"format": FORMAT, "sets": sets}


def manifest_text(value):
    """JSON text of a manifest or known protocol, one pair a line (diffable, a third of the indented size)."""
    value = dict(value)
    sets = value.pop("sets", {})
    head = json.dumps(value, indent=2)[:-2]  # without the closing brace
    parts = []
    for name, entry in sets.items():
        entry = dict(entry)
        pairs = entry.pop("pairs", None)
        fields = [f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in entry.items()]
        if pairs is not None:
            rows = ",\n".join(f"        {json.dumps(stem)}: {json.dumps(e)}" for stem, e in pairs.items())
            fields.append('      "pairs": {\n' + rows + "\n      }")
        parts.append(f"    {json.dumps(name)}: {{\n" + ",\n".join(fields) + "\n    }")
    body = '  "sets": {\n' + ",\n".join(parts) + "\n  }"
    return (head + ",\n" if value else "{\n") + body + "\n}\n"


def read_manifest(path):
    """A manifest file; DatasetError when it is not one."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"Cannot read the manifest {path}: {error}") from None
    if not isinstance(value, dict) or not isinstance(value.get("sets"), dict):
        raise DatasetError(f"{path} is not a tfseg manifest (no 'sets')")
    return value


@lru_cache(maxsize=1)
def known_sets():
    """[(protocol name, set name, level, set)] of every known release and protocol, subsets expanded (with
    their fingerprints), the sets of the strongest level first."""
    found = []
    for path in sorted(KNOWN_DIR.glob("*.json")):
        protocol = json.loads(path.read_text())
        level = protocol["match"]
        sets = dict(protocol["sets"])
        for name, subset in protocol.get("subsets", {}).items():
            parent = sets[subset["of"]]["pairs"]
            pairs = {stem: parent[stem] for stem in subset["stems"]}
            sets[name] = {"pairs": pairs, "count": len(pairs)}
            if level == "sha256":
                sets[name]["fingerprint"] = _fingerprint_of(pairs)
        for name, entry in sets.items():
            count = entry.get("count") or len(entry["pairs"])
            found.append((protocol["name"], name, level, {**entry, "count": count}))
    return sorted(found, key=lambda item: LEVELS.index(item[2]))


def known_layouts():
    """{layout name: [set names]}: roots of several sets (PraNet's TestDataset)."""
    layouts = {}
    for path in sorted(KNOWN_DIR.glob("*.json")):
        protocol = json.loads(path.read_text())
        if protocol.get("layout"):
            layouts[protocol["name"]] = sorted(protocol["sets"])
    return layouts


def _folder_name(pairs):
    """The set folder of pairs: the parent of `images/` (or CHASE_DB1's flat folder)."""
    folder = Path(pairs[0].image).parent
    return folder.parent.name if folder.name == "images" else folder.name


def match_known(pairs_or_folder):
    """The name of the known set the pairs (or the single dataset in a folder) are, or None. Cheap first:
    counts, then names and byte sizes; files are hashed only when all of those agree (once per call)."""
    if isinstance(pairs_or_folder, (str, os.PathLike)):
        pairs = find_dataset(pairs_or_folder)
    else:
        pairs = list(pairs_or_folder)
    if not pairs:
        return None
    names = _entries(pairs)
    fingerprint_now = None
    for _, name, level, known in known_sets():
        if known["count"] != len(pairs):
            continue
        if level == "counts":
            if known.get("folder", name.split("/")[-1]) == _folder_name(pairs):
                return name
            continue
        if names.keys() != known["pairs"].keys() or any(
            names[stem][role]["name"] != entry["name"]
            for stem, expected in known["pairs"].items()
            for role, entry in expected.items()
            if role in ("image", "mask")
        ):
            continue
        if level == "names":
            return name
        if any(
            names[stem][role]["size"] != expected[role]["size"]
            for stem, expected in known["pairs"].items()
            for role in ("image", "mask")
        ):
            continue
        fingerprint_now = fingerprint_now or dataset_fingerprint(pairs)
        if fingerprint_now == known["fingerprint"]:
            return name
    return None


def compare(actual, expected, level="sha256"):
    """{"identical": n, "missing": [stems], "extra": [stems], "changed": ["stem: what"]} of two {stem: entry}
    maps; `level` "names" compares names only."""
    changed = []
    for stem in sorted(actual.keys() & expected.keys()):
        what = []
        for role, want in expected[stem].items():
            have = actual[stem].get(role)
            if have is None:
                what.append(f"no {role}")
                continue
            if have["name"] != want["name"]:
                what.append(f"{role} named {have['name']}, expected {want['name']}")
            elif level == "sha256" and "sha256" in want and have.get("sha256") != want["sha256"]:
                sizes = f"{want['size']} -> {have['size']} bytes" if have["size"] != want["size"] else "same size"
                what.append(f"{role} {have['name']} changed ({sizes})")
        if what:
            changed.append(f"{stem}: {'; '.join(what)}")
    missing, extra = sorted(expected.keys() - actual.keys()), sorted(actual.keys() - expected.keys())
    common = len(actual.keys() & expected.keys())
    return {"identical": common - len(changed), "missing": missing, "extra": extra, "changed": changed}


def identify(entries, folder_name):
    """Which known set a set ({stem: entry} with sha256) matches, or its closest known set and what differs:
    {"match": name or None, "level", "closest", "differences", "contains": [known sets found whole inside]}."""
    result = {"match": None, "level": None, "closest": None, "differences": None, "contains": []}
    best = None
    for _, name, level, known in known_sets():
        if level == "counts":
            if known.get("folder", name.split("/")[-1]) != folder_name:
                continue
            if known["count"] == len(entries):
                return {**result, "match": name, "level": level}
            best = best or (len(entries), name, level, {"count": len(entries), "expected_count": known["count"]})
            continue
        differences = compare(entries, known["pairs"], level)
        if differences["identical"] == known["count"] == len(entries):
            return {**result, "match": name, "level": level, "contains": _contained(entries, name)}
        if differences["identical"] == known["count"]:
            result["contains"].append(name)
        overlap = len(entries.keys() & known["pairs"].keys())
        wrong = sum(len(differences[key]) for key in ("missing", "extra", "changed"))
        if overlap * 2 > max(known["count"], len(entries)) and (best is None or wrong < best[0]):
            best = (wrong, name, level, differences)
    if best is not None:
        result.update(closest=best[1], level=best[2], differences=best[3])
    return result


def _contained(entries, matched):
    return [
        name
        for _, name, level, known in known_sets()
        if name != matched and level != "counts" and known["count"] < len(entries)
        if compare(entries, known["pairs"], level)["identical"] == known["count"]
    ]


def _sets_of(folders, split_file=None):
    """[(label, folder, pairs)] of the datasets in `folders`; with `split_file`, each set cut in its train and
    val parts (labels `<set> train`, `<set> val`)."""
    found = []
    for folder in folders:
        for name, pairs in find_datasets(folder):
            root = Path(folder) if detect_layout(folder) else Path(folder) / name
            if split_file:
                train, val = split_by_file(pairs, split_file)
                found += [(f"{name} train", root, train), (f"{name} val", root, val)]
            else:
                found.append((name, root, pairs))
    labels = [label for label, _, _ in found]
    if len(set(labels)) < len(labels):  # the same set name in two folders: tell them apart by their parent
        found = [(f"{root.parent.name}/{label}", root, pairs) for label, root, pairs in found]
    return found


def check(folders, manifest=None, split_file=None, near_duplicates=True, threshold=None):
    """Checks the datasets in `folders` (one folder or several): per set its fingerprint, the known release or
    protocol it matches (or the closest one and what differs: missing, extra, changed files), what differs from
    `manifest` (a manifest dict or file), the known multi-set layouts the sets form, and near-duplicate groups
    inside and across the sets (`threshold`: default by task, duplicates.THRESHOLDS). Returns that as a dict."""
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    if manifest is not None and not isinstance(manifest, dict):
        manifest = read_manifest(manifest)
    sets = _sets_of(folders, split_file)
    report = {"sets": [], "layouts": [], "near_duplicates": None}
    for label, root, pairs in sets:
        entry = set_manifest(pairs, detect_layout(root))
        item = {
            "name": label,
            "folder": str(root),
            "pairs": len(pairs),
            "fingerprint": entry["fingerprint"],
            "known": identify(entry["pairs"], root.name),
        }
        if manifest is not None:
            expected = _manifest_set(manifest, label, len(sets))
            item["manifest"] = None if expected is None else compare(entry["pairs"], expected["pairs"])
        report["sets"].append(item)
    matched = {item["known"]["match"] for item in report["sets"]}
    report["layouts"] = [name for name, members in known_layouts().items() if set(members) <= matched]
    if near_duplicates:
        from tfseg.data import duplicates  # imagehash and scipy only here: match_known stays light

        if threshold is None:  # by task: fundus photographs look alike to a perceptual hash
            threshold = {label: duplicates.THRESHOLDS[_task(root, pairs)] for label, root, pairs in sets}
            threshold = threshold.popitem()[1] if len(set(threshold.values())) == 1 else threshold
        named = [(label, [p.image for p in pairs]) for label, _, pairs in sets]
        report["near_duplicates"] = duplicates.find_near_duplicates(named, threshold)
    return report


def _task(root, pairs):
    """'vessel' for the retinal layouts (DRIVE, STARE, CHASE_DB1) and sets with FOV masks, else 'polyp'."""
    return "vessel" if detect_layout(root) in ("drive", "stare", "chase") or pairs[0].fov else "polyp"


def _manifest_set(manifest, label, n_sets):
    """The manifest's set of that name, or its only set when both sides have one."""
    sets = manifest["sets"]
    if label in sets:
        return sets[label]
    if len(sets) == 1 and n_sets == 1:
        return next(iter(sets.values()))
    return None


def _names(values, limit=MAX_LISTED):
    values = list(values)
    return ", ".join(values[:limit]) + (f" ... and {len(values) - limit} more" if len(values) > limit else "")


def _difference_lines(differences, indent="    "):
    lines = []
    for key in ("missing", "extra", "changed"):
        if differences.get(key):
            lines.append(f"{indent}{key} ({len(differences[key])}): {_names(differences[key])}")
    return lines


def _threshold_text(threshold):
    if isinstance(threshold, dict):
        return ", ".join(f"{value} ({name})" for name, value in threshold.items())
    return str(threshold)


def report_text(report):
    """The check report as text lines for a terminal."""
    lines = []
    for item in report["sets"]:
        known = item["known"]
        digest = item["fingerprint"]["sha256"][:16]
        lines.append(f"{item['name']} ({item['folder']}): {item['pairs']} pairs, fingerprint sha256:{digest}")
        if known["match"]:
            how = {"sha256": "every file's sha256", "names": "official names", "counts": "folder name and count"}
            lines.append(f"  matches {known['match']} ({how[known['level']]})")
        elif known["closest"]:
            d = known["differences"]
            if "expected_count" in d:
                lines.append(f"  closest known: {known['closest']}: {d['count']} pairs, expected {d['expected_count']}")
            else:
                counts = f"{d['identical']} identical, {len(d['changed'])} changed, {len(d['extra'])} extra, "
                lines.append(f"  closest known: {known['closest']}: {counts}{len(d['missing'])} missing")
                lines += _difference_lines(d)
        else:
            lines.append("  matches no known release or protocol")
        if known["contains"]:
            lines.append(f"  contains: {', '.join(known['contains'])}")
        if "manifest" in item:
            d = item["manifest"]
            if d is None:
                lines.append("  manifest: no set of this name")
            elif d["missing"] or d["extra"] or d["changed"]:
                lines.append(f"  manifest: {d['identical']} identical; differs:")
                lines += _difference_lines(d)
            else:
                lines.append(f"  manifest: identical ({d['identical']} pairs)")
    for layout in report["layouts"]:
        lines.append(f"layout: {layout}")
    found = report["near_duplicates"]
    if found is not None:
        across = [g for g in found["groups"] if len(g["sets"]) > 1]
        lines.append(
            f"near-duplicates ({found['hash']}, distance <= {_threshold_text(found['threshold'])}): "
            f"{len(found['pairs'])} pair(s) in "
            f"{len(found['groups'])} group(s), {len(across)} across sets"
        )
        for group in found["groups"]:
            where = "ACROSS " + " / ".join(group["sets"]) if len(group["sets"]) > 1 else f"within {group['sets'][0]}"
            lines.append(f"  {where}: {', '.join(group['members'])}")
    return lines
