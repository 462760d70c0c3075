"""Dataset manifests, the known releases and protocols, `check` (missing, extra, changed files), near-duplicates
(a planted re-encoded, resized, cropped copy is found) and the training-start warning; the real Kvasir-SEG,
STARE and CHASE_DB1 copies when ../shared/data is present."""

import hashlib
import io
import json
import logging
import os
import shutil

import pytest
from PIL import Image

from tests.helpers import SHARED_DATA, run_python
from tfseg.commands import data_tools
from tfseg.data import duplicates
from tfseg.data import manifest as manifests
from tfseg.data.layouts import find_dataset
from tfseg.data.sources import Pair, find_pairs, split_by_file
from tfseg.data.synthetic import write_polyp_dataset, write_vessel_dataset

KVASIR = os.path.join(SHARED_DATA, "Kvasir-SEG")
needs_shared = pytest.mark.skipif(not os.path.isdir(KVASIR), reason="../shared/data is absent")


@pytest.fixture(scope="module")
def polyps(tmp_path_factory):
    """20 synthetic polyp pairs of various sizes."""
    return write_polyp_dataset(tmp_path_factory.mktemp("manifest") / "polyps", 20, size=None, seed=5)


def plant_copy(source, target, crop=(0.02, 0.03, 0.01, 0.02), scale=0.7, quality=55):
    """The same scene re-encoded: cropped a little (left, top, right, bottom fractions), resized, JPEG."""
    with Image.open(source) as image:
        image = image.convert("RGB")
    w, h = image.size
    left, top, right, bottom = crop
    image = image.crop((int(w * left), int(h * top), w - int(w * right), h - int(h * bottom)))
    image = image.resize((int(image.width * scale), int(image.height * scale)), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    with open(target, "wb") as f:
        f.write(buffer.getvalue())
    return image.size


def plant_pair(root, stem, source_pair):
    """A new pair `stem` in root whose image is a re-encoded copy of source_pair's (and a mask of its size)."""
    size = plant_copy(source_pair.image, os.path.join(root, "images", f"{stem}.jpg"))
    Image.new("L", size).save(os.path.join(root, "masks", f"{stem}.png"))


def test_manifest_names_sizes_sha256_and_fingerprint(polyps):
    value = manifests.manifest(polyps)
    ((name, entry),) = value["sets"].items()
    assert name == "polyps" and value["format"] == manifests.FORMAT and len(entry["pairs"]) == 20
    pairs = find_pairs(polyps)
    first = entry["pairs"][pairs[0].stem]["image"]
    data = open(pairs[0].image, "rb").read()
    assert first == {
        "name": os.path.basename(pairs[0].image),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    fingerprint = manifests.dataset_fingerprint(pairs)
    assert fingerprint == entry["fingerprint"] and fingerprint["images"] == 20
    assert manifests.dataset_fingerprint(reversed(pairs)) == fingerprint  # order does not count
    assert manifests.dataset_fingerprint(pairs[1:])["sha256"] != fingerprint["sha256"]
    renamed = [pairs[0]._replace(image=pairs[1].image), *pairs[1:]]
    assert manifests.dataset_fingerprint(renamed)["sha256"] != fingerprint["sha256"]
    text = manifests.manifest_text(value)
    assert json.loads(text) == value and len(text.splitlines()) < 40  # one pair a line


@pytest.fixture()
def modified(polyps, tmp_path):
    """A copy of `polyps` with one image changed, one pair missing and one extra pair (a planted near-duplicate
    of synth_0003)."""
    copy = tmp_path / "copy"
    shutil.copytree(polyps, copy)
    pairs = find_pairs(copy)
    with Image.open(pairs[1].image) as image:
        image.convert("RGB").save(pairs[1].image, quality=70)  # the same picture, other bytes
    os.remove(pairs[2].image)
    os.remove(pairs[2].mask)
    plant_pair(copy, "planted", pairs[3])
    return copy


def test_check_against_a_manifest_lists_missing_extra_changed(polyps, modified, tmp_path):
    before = manifests.manifest(polyps)
    report = manifests.check(modified, manifest=before)
    (item,) = report["sets"]
    differences = item["manifest"]
    assert differences["missing"] == ["synth_0002"] and differences["extra"] == ["planted"]
    assert len(differences["changed"]) == 1 and differences["changed"][0].startswith("synth_0001: image")
    assert differences["identical"] == 18
    assert item["known"]["match"] is None
    groups = report["near_duplicates"]["groups"]
    assert [sorted(group["members"]) for group in groups] == [["copy/planted.jpg", "copy/synth_0003.jpg"]]
    text = "\n".join(manifests.report_text(report))
    assert "extra (1): planted" in text and "missing (1): synth_0002" in text and "changed (1)" in text
    unchanged = manifests.check(polyps, manifest=before, near_duplicates=False)
    assert unchanged["sets"][0]["manifest"]["identical"] == 20 and unchanged["near_duplicates"] is None


def test_near_duplicates_across_sets_given_together(polyps, tmp_path):
    other = write_polyp_dataset(tmp_path / "other", 6, size=(160, 200), seed=9)
    plant_pair(other, "leak", find_pairs(polyps)[7])
    found = manifests.check([polyps, other])["near_duplicates"]
    assert found["threshold"] == duplicates.THRESHOLD and found["hash"] == duplicates.HASH
    assert found["groups"] == [{"members": ["polyps/synth_0007.jpg", "other/leak.jpg"], "sets": ["other", "polyps"]}]


@pytest.mark.parametrize(
    "crop, scale, quality",
    [((0, 0, 0, 0), 1.0, 40), ((0.03, 0.03, 0.03, 0.03), 0.5, 75), ((0.04, 0.0, 0.0, 0.02), 0.8, 60)],
)
def test_re_encoded_resized_cropped_copies_are_near_duplicates(polyps, tmp_path, crop, scale, quality):
    pairs = find_pairs(polyps)
    target = tmp_path / "copy.jpg"
    plant_copy(pairs[4].image, target, crop, scale, quality)
    codes = duplicates.image_codes(p.image for p in pairs)
    found = duplicates.near_pairs(duplicates.image_codes([target]), codes)
    assert [(i, j) for i, j, _ in found] == [(0, 4)]


@pytest.fixture()
def known(polyps, tmp_path, monkeypatch):
    """tfseg/data/known replaced by a protocol made of `polyps` (with a 15/5 split) and the real DRIVE and
    PraNet-counts files."""
    folder = tmp_path / "known"
    folder.mkdir()
    for name in ("drive.json", "pranet_testdataset.json"):
        shutil.copy(manifests.KNOWN_DIR / name, folder / name)
    entry = manifests.set_manifest(find_pairs(polyps))
    stems = sorted(entry["pairs"])
    protocol = {
        "name": "Synthetic",
        "match": "sha256",
        "subsets": {
            "Synthetic train": {"of": "Synthetic", "stems": stems[5:]},
            "Synthetic val": {"of": "Synthetic", "stems": stems[:5]},
        },
        "sets": {"Synthetic": entry},
    }
    (folder / "synthetic.json").write_text(manifests.manifest_text(protocol))
    monkeypatch.setattr(manifests, "KNOWN_DIR", folder)
    manifests.known_sets.cache_clear()
    yield folder
    manifests.known_sets.cache_clear()


def test_match_known_exact_subsets_and_changes(polyps, modified, known, tmp_path):
    pairs = find_pairs(polyps)
    assert manifests.match_known(pairs) == "Synthetic" == manifests.match_known(polyps)
    assert manifests.match_known(pairs[5:]) == "Synthetic train" and manifests.match_known(pairs[:5]) == "Synthetic val"
    assert manifests.match_known(pairs[1:]) is None
    assert manifests.match_known(find_pairs(modified)) is None
    same_size = tmp_path / "same_size"
    shutil.copytree(polyps, same_size)
    image = find_pairs(same_size)[0].image
    data = bytearray(open(image, "rb").read())
    data[-3] ^= 1  # one bit: same size, other content
    open(image, "wb").write(data)
    assert manifests.match_known(same_size) is None
    (item,) = manifests.check(modified, near_duplicates=False)["sets"]
    assert item["known"]["closest"] == "Synthetic"
    assert item["known"]["differences"]["missing"] == ["synth_0002"]


def test_drive_by_names_and_pranet_test_sets_by_counts(known, tmp_path):
    drive = write_vessel_dataset(tmp_path / "DRIVE" / "training", 20, size=(24, 24), layout="drive")
    assert manifests.match_known(drive) == "DRIVE training"
    os.rename(drive / "images" / "40_training.tif", drive / "images" / "41_training.tif")
    os.rename(drive / "1st_manual" / "40_manual1.gif", drive / "1st_manual" / "41_manual1.gif")
    os.rename(drive / "mask" / "40_training_mask.gif", drive / "mask" / "41_training_mask.gif")
    assert manifests.match_known(drive) is None
    (item,) = manifests.check(drive, near_duplicates=False)["sets"]
    assert item["known"]["closest"] == "DRIVE training" and item["known"]["differences"]["extra"] == ["41_training"]
    assert manifests.check(drive)["near_duplicates"]["threshold"] == duplicates.THRESHOLDS["vessel"] < 16
    root = tmp_path / "TestDataset"
    for name, count in {"CVC-300": 60, "CVC-ClinicDB": 62, "Kvasir": 100, "CVC-ColonDB": 380}.items():
        write_tiny_set(root / name, count)
    write_tiny_set(root / "ETIS-LaribPolypDB", 195)
    report = manifests.check(root, near_duplicates=False)
    matches = {item["name"]: item["known"]["match"] for item in report["sets"]}
    assert matches["CVC-300"] == "PraNet TestDataset/CVC-300" and matches["ETIS-LaribPolypDB"] is None
    assert report["layouts"] == []
    write_tiny_set(root / "ETIS-LaribPolypDB", 196)
    assert manifests.check(root, near_duplicates=False)["layouts"] == ["PraNet TestDataset"]
    assert manifests.match_known(root / "CVC-ColonDB") == "PraNet TestDataset/CVC-ColonDB"


def write_tiny_set(root, count):
    for sub in ("images", "masks"):
        os.makedirs(root / sub, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (4, 4), (index % 256, 0, 0)).save(root / "images" / f"{index + 1}.png")
        Image.new("L", (4, 4)).save(root / "masks" / f"{index + 1}.png")


def test_training_start_warning_lists_val_near_duplicates(polyps, tmp_path, caplog):
    pairs = find_pairs(polyps)
    train, val = pairs[5:], pairs[:5]
    planted = tmp_path / "planted.jpg"
    plant_copy(val[2].image, planted)
    train = [*train, Pair("planted", str(planted), train[0].mask)]
    with caplog.at_level(logging.INFO, logger="tfseg"):
        record = duplicates.check_near_duplicates(train, val)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "synth_0002.jpg ~ planted.jpg" in warnings[0].getMessage()
    assert "--allow_near_duplicates" in warnings[0].getMessage()
    ((val_name, train_name, distance),) = record["near_duplicates"]
    assert (val_name, train_name) == ("synth_0002.jpg", "planted.jpg") and distance <= duplicates.THRESHOLD
    assert record["threshold"] == duplicates.THRESHOLD and record["hash"] == duplicates.HASH
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tfseg"):
        allowed = duplicates.check_near_duplicates(train, val, allow=True)
    assert allowed["near_duplicates"] == record["near_duplicates"] and allowed["allowed"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert duplicates.check_near_duplicates(pairs[5:], val)["near_duplicates"] == []


def test_training_flag_and_no_tensorflow():
    """--allow_near_duplicates is a training flag; the data tools import no TensorFlow."""
    import argparse
    import types

    from tfseg import cli

    defaults = types.SimpleNamespace(
        epochs=1, lr=1e-4, batch_size=2, steps_per_epoch=0, val_fraction=0.1, gclip=0.5, strategy="auto", seed=0
    )
    defaults.logdir = "runs"
    parser = argparse.ArgumentParser()
    cli.add_training_flags(parser, defaults, "data")
    assert parser.parse_args(["--allow-near-duplicates"]).allow_near_duplicates
    assert not parser.parse_args([]).allow_near_duplicates
    code = (
        "import sys, tfseg.data.manifest, tfseg.data.duplicates, tfseg.commands.data_tools; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    assert run_python(["-c", code]).returncode == 0


def test_command_line(polyps, modified, tmp_path, capsys):
    out = tmp_path / "out" / "manifest.json"
    data_tools.main(["manifest", str(polyps), "-o", str(out)])
    assert "20 pairs" in capsys.readouterr().out
    assert manifests.read_manifest(out)["sets"]["polyps"]["fingerprint"]["images"] == 20
    report = tmp_path / "report.json"
    data_tools.main(["check", str(modified), "--manifest", str(out), "--json", str(report)])
    printed = capsys.readouterr().out
    assert "extra (1): planted" in printed and "within copy: copy/" in printed
    assert json.loads(report.read_text())["sets"][0]["manifest"]["extra"] == ["planted"]
    image = find_pairs(polyps)[0].image
    before = open(image, "rb").read()
    for argv in (
        ["manifest", str(polyps), "-o", image],
        ["check", str(polyps), "--json", str(out), "--manifest", str(out)],
    ):
        with pytest.raises(SystemExit, match="^error: .*would overwrite the input"):
            data_tools.main(argv)
    assert open(image, "rb").read() == before
    with pytest.raises(SystemExit, match="^error: Dataset folder not found"):
        data_tools.main(["check", str(tmp_path / "nowhere")])
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(SystemExit, match="^error: .*not a tfseg manifest"):
        data_tools.main(["check", str(polyps), "--manifest", str(tmp_path / "bad.json")])


@needs_shared
def test_real_releases_match_their_known_manifests():
    assert manifests.match_known(KVASIR) == "Kvasir-SEG"
    train, val = split_by_file(find_dataset(KVASIR), os.path.join(KVASIR, "pranet_kvasir_test_names.txt"))
    assert (manifests.match_known(train), manifests.match_known(val)) == (
        "Kvasir-SEG PraNet train",
        "Kvasir-SEG PraNet test",
    )
    assert manifests.match_known(os.path.join(SHARED_DATA, "STARE")) == "STARE"
    assert manifests.match_known(os.path.join(SHARED_DATA, "CHASEDB1")) == "CHASE_DB1"


@needs_shared
def test_kvasir_copy_with_a_changed_file_and_a_planted_test_image(tmp_path, caplog):
    """The issue's check: one file changed, one test image planted re-encoded in the training part; `check`
    names both and the training-start check names the planted image."""
    copy = tmp_path / "Kvasir-SEG"
    for sub in ("images", "masks"):
        (copy / sub).mkdir(parents=True)
        for name in os.listdir(os.path.join(KVASIR, sub)):
            os.symlink(os.path.join(KVASIR, sub, name), copy / sub / name)
    split = os.path.join(KVASIR, "pranet_kvasir_test_names.txt")
    train, val = split_by_file(find_dataset(copy), split)
    changed = copy / "images" / os.path.basename(train[0].image)
    os.remove(changed)
    plant_copy(train[0].image.replace(str(copy), KVASIR), changed, crop=(0, 0, 0, 0), scale=1.0, quality=90)
    plant_pair(copy, "planted", val[10])
    report = manifests.check(copy, split_file=split)
    parts = {item["name"]: item["known"] for item in report["sets"]}
    assert parts["Kvasir-SEG val"]["match"] == "Kvasir-SEG PraNet test"
    train_part = parts["Kvasir-SEG train"]
    assert train_part["closest"] == "Kvasir-SEG PraNet train" and train_part["differences"]["extra"] == ["planted"]
    assert train_part["differences"]["changed"][0].startswith(f"{train[0].stem}: image")
    across = [g["members"] for g in report["near_duplicates"]["groups"] if len(g["sets"]) == 2]
    assert ["Kvasir-SEG train/planted.jpg", f"Kvasir-SEG val/{os.path.basename(val[10].image)}"] in across
    train, val = split_by_file(find_dataset(copy), split)
    with caplog.at_level(logging.WARNING, logger="tfseg"):
        record = duplicates.check_near_duplicates(train, val)
    assert [os.path.basename(val[10].image), "planted.jpg"] in [row[:2] for row in record["near_duplicates"]]
    assert "planted.jpg" in caplog.text
