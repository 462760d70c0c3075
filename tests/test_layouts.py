"""Dataset layouts (generic, DRIVE, STARE, CHASE_DB1, roots of several) on small synthetic folders, and the
numpy image readers used by evaluation; the real STARE/CHASE_DB1 folders when ../shared/data is present."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import SHARED_DATA
from tfseg.data import DatasetError
from tfseg.data.imageio import read_gray, read_mask, read_rgb
from tfseg.data.layouts import detect_layout, find_dataset, find_datasets


def touch(path, value=255, size=(6, 5), mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, value).save(path)


def make_drive(root, split="test", numbers=(1, 2)):
    for n in numbers:
        touch(f"{root}/images/{n:02d}_{split}.tif", mode="RGB", value=(9, 9, 9))
        touch(f"{root}/1st_manual/{n:02d}_manual1.gif")
        touch(f"{root}/mask/{n:02d}_{split}_mask.gif")


def test_drive_layout_pairs_by_number_with_fov(tmp_path):
    make_drive(tmp_path)
    pairs = find_dataset(tmp_path)
    assert detect_layout(tmp_path) == "drive"
    assert [p.stem for p in pairs] == ["01_test", "02_test"]
    assert [os.path.basename(p.mask) for p in pairs] == ["01_manual1.gif", "02_manual1.gif"]
    assert [os.path.basename(p.fov) for p in pairs] == ["01_test_mask.gif", "02_test_mask.gif"]
    assert read_mask(pairs[0].fov).all()  # GIFs are readable


def test_stare_layout(tmp_path):
    for n in (1, 44):
        touch(f"{tmp_path}/images/im{n:04d}.ppm", mode="RGB", value=(1, 2, 3))
        touch(f"{tmp_path}/labels-ah/im{n:04d}.ah.ppm")  # greyscale despite the .ppm name, as in STARE
    pairs = find_dataset(tmp_path)
    assert [p.stem for p in pairs] == ["im0001", "im0044"] and all(p.fov is None for p in pairs)


def test_chase_layout_and_observer(tmp_path):
    for name in ("Image_01L", "Image_01R"):
        touch(f"{tmp_path}/{name}.jpg", mode="RGB", value=(5, 5, 5))
        touch(f"{tmp_path}/{name}_1stHO.png")
        touch(f"{tmp_path}/{name}_2ndHO.png")
    first, second = find_dataset(tmp_path), find_dataset(tmp_path, observer=2)
    assert [p.stem for p in first] == ["Image_01L", "Image_01R"]
    assert first[0].mask.endswith("Image_01L_1stHO.png") and second[0].mask.endswith("Image_01L_2ndHO.png")
    os.remove(f"{tmp_path}/Image_01R_1stHO.png")
    with pytest.raises(DatasetError, match="Image_01R.jpg"):
        find_dataset(tmp_path)


def test_generic_layout_with_fov_folder(tmp_path):
    for stem in ("a", "b"):
        touch(f"{tmp_path}/images/{stem}.png")
        touch(f"{tmp_path}/masks/{stem}.png")
    touch(f"{tmp_path}/fov/a_mask.png")
    with pytest.raises(DatasetError, match="without one: b"):
        find_dataset(tmp_path)
    touch(f"{tmp_path}/fov/b.png")
    assert [os.path.basename(p.fov) for p in find_dataset(tmp_path)] == ["a_mask.png", "b.png"]


def test_root_of_several_datasets(tmp_path):
    for name in ("Kvasir", "CVC-300"):
        touch(f"{tmp_path}/{name}/images/1.png")
        touch(f"{tmp_path}/{name}/masks/1.png")
    (tmp_path / "notes").mkdir()
    assert [name for name, _ in find_datasets(tmp_path)] == ["CVC-300", "Kvasir"]
    assert [name for name, _ in find_datasets(tmp_path / "Kvasir")] == ["Kvasir"]
    with pytest.raises(DatasetError, match="No dataset"):
        find_datasets(tmp_path / "notes")


def test_readers(tmp_path):
    labels = np.array([[0, 1], [1, 0]], np.uint8)
    cv2.imwrite(str(tmp_path / "labels.png"), labels)  # a 0/1 label map
    cv2.imwrite(str(tmp_path / "deep.png"), labels.astype(np.uint16) * 40000)  # 16-bit
    cv2.imwrite(str(tmp_path / "grey.png"), np.array([[128, 129]], np.uint8))
    assert read_mask(tmp_path / "labels.png").tolist() == [[False, True], [True, False]]
    assert read_mask(tmp_path / "deep.png").tolist() == [[False, True], [True, False]]
    assert read_mask(tmp_path / "grey.png").tolist() == [[False, True]]  # > 128, the protocol's threshold
    assert read_gray(tmp_path / "deep.png").max() == round(40000 / 257)
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    assert read_rgb(tmp_path / "red.png")[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(DatasetError, match="Cannot read"):
        read_rgb(tmp_path / "missing.png")


@pytest.mark.parametrize("name, count, size", [("STARE", 20, (605, 700)), ("CHASEDB1", 28, (960, 999))])
def test_real_vessel_folders(name, count, size):
    root = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(root):
        pytest.skip(f"{root} not present")
    pairs = find_dataset(root)
    assert len(pairs) == count
    mask = read_mask(pairs[0].mask)
    assert mask.shape == size and 0.03 < mask.mean() < 0.2  # vessels cover a few percent of the image
    assert read_rgb(pairs[0].image).shape == (*size, 3)


def test_fov_estimate_matches_the_synthetic_fov():
    from tfseg.data.fov import estimate_fov
    from tfseg.data.synthetic import vessel_sample

    image, _, fov = vessel_sample(np.random.default_rng(0), 120, 130)
    estimate = estimate_fov(image, erosion=1)
    truth = fov > 0
    assert (estimate & truth).sum() / (estimate | truth).sum() > 0.95
