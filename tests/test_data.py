"""Tests of tfseg.data: pairing, checks, splits, decoding, tf.data pipelines, augmentation, synthetic data."""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import SHARED_DATA
from tfseg.data import (
    DatasetError,
    Pair,
    check_disjoint,
    check_pairs,
    decode_pair,
    find_pairs,
    joint_augment,
    make_dataset,
    multiscale_sizes,
    polyp_sample,
    rescale_batch,
    split_by_file,
    split_pairs,
    write_polyp_dataset,
)

NO_COLOUR = dict(brightness=None, contrast=None, saturation=None, hue=None)


def save(path, pixels):
    """Writes RGB(A) or grey `pixels` (uint8 or uint16) with OpenCV, converting to its BGR(A) order."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(path, pixels), path
    return path


def touch_pair(root, image_name, mask_name, size=(8, 8)):
    save(root / "images" / image_name, np.zeros((*size, 3), np.uint8))
    save(root / "masks" / mask_name, np.zeros(size, np.uint8))


def constant_pairs(root, values, size=(16, 16)):
    """Pairs whose image is the grey level values[i] everywhere and whose mask is its left half."""
    mask = np.zeros(size, np.uint8)
    mask[:, : size[1] // 2] = 255
    for i, value in enumerate(values):
        save(root / "images" / f"s{i:02d}.png", np.full((*size, 3), value, np.uint8))
        save(root / "masks" / f"s{i:02d}.png", mask)
    return find_pairs(root)


def first_values(dataset):
    """The top-left pixel's first channel of every image, in dataset order."""
    return [float(v) for images, _ in dataset for v in images[:, 0, 0, 0].numpy()]


# ---------------------------------------------------------------- sources: find_pairs


def test_find_pairs_matches_mask_suffix_and_mixed_extensions(tmp_path):
    touch_pair(tmp_path, "a.jpg", "a_mask.png")
    touch_pair(tmp_path, "b.PNG", "b.bmp")
    touch_pair(tmp_path, "c.tif", "c_mask.tif")
    (tmp_path / "images" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "masks" / "Thumbs.db").write_bytes(b"x")
    pairs = find_pairs(tmp_path)
    assert [p.stem for p in pairs] == ["a", "b", "c"]
    assert pairs[0] == Pair("a", str(tmp_path / "images" / "a.jpg"), str(tmp_path / "masks" / "a_mask.png"))
    assert pairs[1].mask.endswith("b.bmp") and pairs[2].image.endswith("c.tif")


def test_find_pairs_lists_unmatched_files_on_both_sides(tmp_path):
    touch_pair(tmp_path, "a.jpg", "a.png")
    save(tmp_path / "images" / "lonely_image.jpg", np.zeros((4, 4, 3), np.uint8))
    save(tmp_path / "masks" / "lonely_mask.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="lonely_image") as error:
        find_pairs(tmp_path)
    assert "lonely_mask" in str(error.value) and str(tmp_path / "masks") in str(error.value)


def test_find_pairs_truncates_long_lists(tmp_path):
    touch_pair(tmp_path, "a.jpg", "a.png")
    for i in range(23):
        save(tmp_path / "images" / f"extra{i:02d}.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"extra19.png \.\.\. and 3 more") as error:
        find_pairs(tmp_path)
    assert "extra20" not in str(error.value)


def test_find_pairs_missing_folders(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        find_pairs(tmp_path / "nowhere")
    save(tmp_path / "images" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="masks"):
        find_pairs(tmp_path)
    with pytest.raises(DatasetError, match="labels"):
        find_pairs(tmp_path, masks="labels")


def test_find_pairs_without_image_files(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="No image files"):
        find_pairs(tmp_path)


@pytest.mark.parametrize(
    "images, masks, listed",
    [(["a.jpg", "a.png"], ["a.png"], ["a.jpg", "a.png"]), (["a.jpg"], ["a.png", "a_mask.png"], ["a_mask.png"])],
)
def test_find_pairs_refuses_ambiguous_stems(tmp_path, images, masks, listed):
    for name in images:
        save(tmp_path / "images" / name, np.zeros((4, 4, 3), np.uint8))
    for name in masks:
        save(tmp_path / "masks" / name, np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="share a stem") as error:
        find_pairs(tmp_path)
    assert all(name in str(error.value) for name in listed)


# ---------------------------------------------------------------- sources: check_pairs


def test_check_pairs_accepts_a_good_dataset(tmp_path):
    check_pairs(find_pairs(write_polyp_dataset(tmp_path, 3, size=(32, 40))))


def test_check_pairs_lists_unreadable_and_truncated_files(tmp_path):
    touch_pair(tmp_path, "good.png", "good.png")
    touch_pair(tmp_path, "garbage.png", "garbage.png")
    touch_pair(tmp_path, "cut.png", "cut.png", size=(64, 64))
    (tmp_path / "images" / "garbage.png").write_bytes(b"this is not a png")
    truncated = tmp_path / "masks" / "cut.png"
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(DatasetError, match="2 unreadable or damaged") as error:
        check_pairs(find_pairs(tmp_path))
    assert "garbage.png" in str(error.value) and "cut.png" in str(error.value) and "good" not in str(error.value)


def test_check_pairs_decodes_jpeg_data(tmp_path):
    """A JPEG cut in half keeps a valid header and passes PIL's verify(); only decoding finds it."""
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    touch_pair(tmp_path, "half.jpg", "half.png", size=(120, 160))
    path = save(tmp_path / "images" / "half.jpg", rgb)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"1 unreadable or damaged file\(s\): .*half\.jpg \(image file is truncated"):
        check_pairs(find_pairs(tmp_path))


def test_check_pairs_can_return_size_mismatches(tmp_path):
    save(tmp_path / "images" / "a.jpg", np.zeros((30, 40, 3), np.uint8))
    save(tmp_path / "masks" / "a.png", np.zeros((40, 30), np.uint8))
    assert check_pairs(find_pairs(tmp_path), allow_size_mismatch=True) == ["a: image 40x30, mask 30x40"]


def test_check_pairs_refuses_mask_of_another_size(tmp_path):
    save(tmp_path / "images" / "a.jpg", np.zeros((30, 40, 3), np.uint8))
    save(tmp_path / "masks" / "a.png", np.zeros((40, 30), np.uint8))
    touch_pair(tmp_path, "b.jpg", "b.png")
    with pytest.raises(DatasetError, match="a: image 40x30, mask 30x40") as error:
        check_pairs(find_pairs(tmp_path))
    assert "b:" not in str(error.value)


# ---------------------------------------------------------------- sources: splits


def fake_pairs(n):
    return [Pair(f"id{i:02d}", f"/data/images/id{i:02d}.jpg", f"/data/masks/id{i:02d}.png") for i in range(n)]


def test_split_pairs_is_deterministic_disjoint_and_complete():
    pairs = fake_pairs(20)
    train, val = split_pairs(pairs, 0.25, seed=7)
    assert len(val) == 5 and len(train) == 15
    assert sorted(train + val) == pairs
    assert {p.stem for p in train}.isdisjoint(p.stem for p in val)
    assert split_pairs(list(reversed(pairs)), 0.25, seed=7) == (train, val)
    assert split_pairs(pairs, 0.25, seed=8)[1] != val


def test_split_pairs_edge_cases():
    assert split_pairs(fake_pairs(3), 0.01, seed=0)[1] != []
    assert len(split_pairs(fake_pairs(2), 0.9, seed=0)[0]) == 1
    assert split_pairs(fake_pairs(4), 0.0, seed=0) == (fake_pairs(4), [])
    with pytest.raises(DatasetError, match="val_fraction"):
        split_pairs(fake_pairs(4), 1.0, seed=0)


def test_split_by_file(tmp_path):
    split_file = tmp_path / "test.txt"
    split_file.write_text("id03.jpg\n\n  id01  \nid07\n")
    train, val = split_by_file(fake_pairs(10), split_file)
    assert [p.stem for p in val] == ["id01", "id03", "id07"]
    assert [p.stem for p in train] == ["id00", "id02", "id04", "id05", "id06", "id08", "id09"]


def test_split_by_file_lists_unknown_ids(tmp_path):
    split_file = tmp_path / "test.txt"
    split_file.write_text("id01\nghost_a\nghost_b.png\n")
    with pytest.raises(DatasetError, match="2 unknown id") as error:
        split_by_file(fake_pairs(5), split_file)
    assert "ghost_a" in str(error.value) and "ghost_b" in str(error.value) and "id01" not in str(error.value)
    with pytest.raises(DatasetError, match="not found"):
        split_by_file(fake_pairs(5), tmp_path / "missing.txt")


def test_check_disjoint(tmp_path):
    first, second, copy = tmp_path / "first", tmp_path / "second", tmp_path / "copy"
    save(first / "images" / "1.png", np.full((8, 8, 3), 10, np.uint8))
    save(second / "images" / "1.png", np.full((8, 8, 3), 20, np.uint8))  # same name, other image: fine
    save(copy / "images" / "7.png", np.full((8, 8, 3), 10, np.uint8))  # renamed copy of first/1.png
    pair = lambda root, name: Pair(name, str(root / "images" / f"{name}.png"), f"/masks/{root.name}/{name}.png")
    check_disjoint([pair(first, "1")], [pair(second, "1")])
    with pytest.raises(DatasetError, match="1 identical image"):
        check_disjoint([pair(first, "1")], [pair(copy, "7")])
    touch_pair(tmp_path, "a.png", "a.png")
    os.symlink(tmp_path / "images" / "a.png", tmp_path / "alias.png")
    image_a, mask_a = str(tmp_path / "images" / "a.png"), str(tmp_path / "masks" / "a.png")
    with pytest.raises(DatasetError, match="1 shared file"):
        check_disjoint([Pair("a", image_a, mask_a)], [Pair("b", str(tmp_path / "alias.png"), "/other/b.png")])


# ---------------------------------------------------------------- decoding


def test_grey_and_rgba_images_decode_to_rgb(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    rgba = np.dstack([grey, 255 - grey, np.full_like(grey, 7), np.full_like(grey, 50)])
    mask = save(tmp_path / "m.png", np.zeros((6, 8), np.uint8))
    image, _ = decode_pair(save(tmp_path / "grey.png", grey), mask)
    assert image.shape == (6, 8, 3) and image.dtype == tf.float32
    np.testing.assert_array_equal(image.numpy(), np.repeat(grey[..., None], 3, -1).astype(np.float32))
    image, _ = decode_pair(save(tmp_path / "rgba.png", rgba), mask)
    np.testing.assert_array_equal(image.numpy(), rgba[..., :3].astype(np.float32))


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        ("gray8.png", np.array([[0, 128, 129, 255]], np.uint8), [0, 0, 1, 1]),
        ("gray16.png", np.array([[0, 32000, 33000, 65535]], np.uint16), [0, 0, 1, 1]),
        ("labels01.png", np.array([[0, 1, 0, 1]], np.uint8), [0, 1, 0, 1]),
        ("labels01_16bit.png", np.array([[1, 0, 0, 1]], np.uint16), [1, 0, 0, 1]),
        ("colour.png", np.array([[[0, 0, 0], [200, 0, 0], [0, 0, 100], [0, 250, 0]]], np.uint8), [0, 1, 0, 1]),
        ("gray16.tif", np.array([[0, 65535, 30000, 40000]], np.uint16), [0, 1, 0, 1]),
    ],
)
def test_masks_are_thresholded_on_the_8_bit_scale(tmp_path, name, raw, expected):
    image = save(tmp_path / "image.png", np.zeros((*raw.shape[:2], 3), np.uint8))
    _, mask = decode_pair(image, save(tmp_path / name, raw))
    assert mask.shape == (1, 4, 1) and mask.dtype == tf.float32
    assert mask.numpy().ravel().tolist() == expected


@pytest.mark.parametrize("ext", [".tif", ".tiff", ".ppm", ".png", ".bmp", ".gif", ".jpg"])
def test_pure_red_stays_red(tmp_path, ext):
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    mask = save(tmp_path / "m.png", np.zeros((16, 16), np.uint8))
    image, _ = decode_pair(save(tmp_path / f"red{ext}", red), mask)
    lossy_tolerance = {".jpg": 2, ".gif": 3}  # JPEG compression, OpenCV's GIF palette
    np.testing.assert_allclose(image.numpy(), red.astype(np.float32), atol=lossy_tolerance.get(ext, 0))


def test_pgm_data_in_a_ppm_file_is_a_mask(tmp_path):
    """STARE's labels: greyscale PGM content behind a .ppm suffix."""
    label = np.zeros((5, 7), np.uint8)
    label[1:3, 2:6] = 255
    save(tmp_path / "label.pgm", label)
    os.rename(tmp_path / "label.pgm", tmp_path / "im0001.ah.ppm")
    image = save(tmp_path / "im0001.ppm", np.zeros((5, 7, 3), np.uint8))
    decoded_image, mask = decode_pair(image, str(tmp_path / "im0001.ah.ppm"))
    assert decoded_image.shape == (5, 7, 3)
    np.testing.assert_array_equal(mask.numpy()[..., 0], label / 255)


# ---------------------------------------------------------------- make_dataset


@pytest.mark.parametrize(
    "normalization, expected",
    [
        ("tf", [10 / 127.5 - 1, 100 / 127.5 - 1, 200 / 127.5 - 1]),
        ("caffe", [200 - 103.939, 100 - 116.779, 10 - 123.68]),  # BGR minus the ImageNet mean
    ],
)
def test_make_dataset_shapes_types_and_normalisation(tmp_path, normalization, expected):
    save(tmp_path / "images" / "a.jpg", np.zeros((30, 50, 3), np.uint8))
    save(tmp_path / "images" / "b.png", np.broadcast_to(np.uint8([10, 100, 200]), (40, 20, 3)).copy())
    save(tmp_path / "images" / "c.tif", np.zeros((24, 24, 3), np.uint8))
    for stem, size in [("a", (30, 50)), ("b", (40, 20)), ("c", (24, 24))]:
        mask = np.zeros(size, np.uint8)
        mask[: size[0] // 2] = 255
        save(tmp_path / "masks" / f"{stem}.png", mask)
    batches = list(make_dataset(find_pairs(tmp_path), normalization, (24, 32), batch_size=2, training=False))
    assert [images.shape[0] for images, _ in batches] == [2, 1]
    images, masks = batches[0]
    assert images.shape == (2, 24, 32, 3) and masks.shape == (2, 24, 32, 1)
    assert images.dtype == tf.float32 and masks.dtype == tf.float32
    np.testing.assert_allclose(images[1].numpy().reshape(-1, 3), np.tile(expected, (24 * 32, 1)), atol=1e-4)
    assert set(np.unique(masks.numpy())) == {0.0, 1.0}
    assert np.all(masks.numpy()[:, :12] == 1) and np.all(masks.numpy()[:, 12:] == 0)


def test_eval_order_is_the_file_order(tmp_path):
    values = [10 * i for i in range(7)]
    pairs = constant_pairs(tmp_path, values)
    dataset = make_dataset(pairs, "tf", 8, batch_size=3, training=False)
    expected = [v / 127.5 - 1 for v in values]
    np.testing.assert_allclose(first_values(dataset), expected, atol=1e-5)
    np.testing.assert_allclose(first_values(dataset), expected, atol=1e-5)


def test_training_order_is_a_seeded_shuffle(tmp_path):
    pairs = constant_pairs(tmp_path, [10 * i for i in range(12)])

    def training_order(seed):
        return first_values(make_dataset(pairs, "tf", 8, 4, training=True, seed=seed))

    first = training_order(seed=3)
    assert len(first) == 12 and sorted(first) == sorted(first_values(make_dataset(pairs, "tf", 8, 4, False)))
    assert first != sorted(first)
    assert training_order(seed=3) == first
    assert training_order(seed=4) != first


def test_training_drops_the_remainder_and_refuses_too_few_samples(tmp_path):
    pairs = constant_pairs(tmp_path, range(0, 100, 10))
    assert [len(m) for _, m in make_dataset(pairs, "tf", 8, 4, training=True)] == [4, 4]
    assert [len(m) for _, m in make_dataset(pairs, "tf", 8, 4, training=False)] == [4, 4, 2]
    with pytest.raises(DatasetError, match="batch of 16"):
        make_dataset(pairs, "tf", 8, 16, training=True)


def test_input_context_shards_files_and_splits_the_batch(tmp_path):
    values = [10 * i for i in range(8)]
    pairs = constant_pairs(tmp_path, values)
    seen = []
    for pipeline_id in (0, 1):
        context = tf.distribute.InputContext(2, pipeline_id, num_replicas_in_sync=2)
        dataset = make_dataset(pairs, "tf", 8, batch_size=4, training=False, input_context=context)
        assert [len(m) for _, m in dataset] == [2, 2]
        seen.append(first_values(dataset))
    expected = [[v / 127.5 - 1 for v in values[start::2]] for start in (0, 1)]
    np.testing.assert_allclose(seen, expected, atol=1e-5)


def test_augmented_training_is_deterministic_for_a_seed(tmp_path):
    pairs = find_pairs(write_polyp_dataset(tmp_path, 4, size=(48, 64)))

    def batches(seed):
        return list(make_dataset(pairs, "tf", 40, 2, training=True, augment=True, seed=seed))

    spec = make_dataset(pairs, "tf", 40, 2, training=True, augment=True).element_spec
    assert [tuple(s.shape) for s in spec] == [(2, 40, 40, 3), (2, 40, 40, 1)]
    first, again, other = batches(0), batches(0), batches(1)
    for (images, masks), (images2, masks2) in zip(first, again):
        np.testing.assert_array_equal(images.numpy(), images2.numpy())
        np.testing.assert_array_equal(masks.numpy(), masks2.numpy())
    assert not np.array_equal(first[0][0].numpy(), other[0][0].numpy())
    assert all(set(np.unique(m.numpy())) <= {0.0, 1.0} and np.abs(i.numpy()).max() <= 1.0 for i, m in first)


def test_each_training_sample_gets_its_own_augmentation(tmp_path):
    image, mask = polyp_sample(np.random.default_rng(0), 32, 32)
    for i in range(4):
        save(tmp_path / "images" / f"copy{i}.png", image)
        save(tmp_path / "masks" / f"copy{i}.png", mask)
    ((_, masks),) = make_dataset(find_pairs(tmp_path), "tf", 32, 4, training=True, augment=True)
    assert len({masks[i].numpy().tobytes() for i in range(4)}) == 4


def test_repeated_training_data_is_augmented_afresh_each_pass(tmp_path):
    pairs = find_pairs(write_polyp_dataset(tmp_path, 2, size=(32, 32)))
    make = lambda: make_dataset(pairs, "tf", 32, 2, training=True, augment=True, seed=3, repeat=True).take(3)
    passes = [images.numpy() for images, _ in make()]
    once = next(iter(make_dataset(pairs, "tf", 32, 2, training=True, augment=True, seed=3)))[0].numpy()
    np.testing.assert_array_equal(passes[0], once)  # the first pass is the plain epoch
    assert not np.array_equal(passes[0], passes[1]) and not np.array_equal(passes[1], passes[2])
    np.testing.assert_array_equal(np.stack(passes), np.stack([images.numpy() for images, _ in make()]))


# ---------------------------------------------------------------- augmentation


def red_blob(size=64):
    mask = np.zeros((size, size, 1), np.float32)
    cv2.ellipse(mask, (size // 3, size // 2), (size // 5, size // 8), 30, 0, 360, 1.0, -1)
    image = np.concatenate([255 * mask, np.full_like(mask, 60), np.full_like(mask, 120)], axis=-1)
    return tf.constant(image), tf.constant(mask)


@pytest.mark.parametrize("seed", [(0, 0), (1, 5), (7, 3), (42, 42)])
def test_joint_augment_keeps_image_and_mask_aligned(seed):
    image, mask = red_blob()
    out_image, out_mask = joint_augment(image, mask, tf.constant(seed), max_rotation=40.0, rotate90=True)
    assert out_image.shape == (64, 64, 3) and out_mask.shape == (64, 64, 1)
    assert 0.0 <= float(tf.reduce_min(out_image)) and float(tf.reduce_max(out_image)) <= 255.0
    assert set(np.unique(out_mask.numpy())) == {0.0, 1.0}
    assert not np.array_equal(out_mask.numpy(), mask.numpy())
    agreement = np.mean((out_image.numpy()[..., 0] > 128) == (out_mask.numpy()[..., 0] > 0.5))
    assert agreement > 0.98


def test_joint_augment_is_a_function_of_the_seed():
    image, mask = red_blob()
    first = joint_augment(image, mask, tf.constant([3, 4]))
    again = joint_augment(image, mask, tf.constant([3, 4]))
    other = joint_augment(image, mask, tf.constant([3, 5]))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(first[0].numpy(), other[0].numpy())


def test_flips_alone_are_exact_pixel_permutations():
    image, mask = red_blob(size=20)
    candidates = {
        "none": image.numpy(),
        "horizontal": image.numpy()[:, ::-1],
        "vertical": image.numpy()[::-1],
        "both": image.numpy()[::-1, ::-1],
    }
    seen = set()
    for seed in range(12):
        out, _ = joint_augment(image, mask, tf.constant([seed, 0]), max_rotation=0.0, zoom=(1.0, 1.0), **NO_COLOUR)
        matches = [name for name, expected in candidates.items() if np.array_equal(out.numpy(), expected)]
        assert len(matches) == 1
        seen.update(matches)
    assert seen == set(candidates)


def test_zooming_in_crops_at_random_places_inside_the_image():
    ramp = 50.0 + np.add.outer(np.arange(24.0), 2 * np.arange(40.0))  # every pixel value tells where it was
    image, mask = tf.constant(np.repeat(ramp[..., None], 3, -1), tf.float32), tf.ones([24, 40, 1])
    corners = set()
    for seed in range(8):
        out_image, out_mask = joint_augment(
            image,
            mask,
            tf.constant([seed, 1]),
            flip_horizontal=False,
            flip_vertical=False,
            max_rotation=0.0,
            zoom=(1.5, 1.5),
            **NO_COLOUR,
        )
        assert out_image.numpy().min() >= 50.0 - 1e-3 and np.all(out_mask.numpy() == 1.0)  # no zero fill
        corners.add(round(float(out_image[0, 0, 0]), 3))
    assert len(corners) == 8


# ---------------------------------------------------------------- multi-scale


def test_multiscale_sizes_as_pranet():
    assert multiscale_sizes(352) == [256, 352, 448]
    assert multiscale_sizes(320, rates=(0.5, 1.0)) == [160, 320]


def test_rescale_batch_aligns_corners_and_keeps_masks_soft():
    images = tf.random.uniform([2, 9, 9, 3], 0, 255, seed=1)
    masks = tf.constant(np.kron(np.eye(3), np.ones((3, 3)))[None, ..., None].repeat(2, 0), tf.float32)
    out_images, out_masks = rescale_batch(images, masks, 16)
    assert out_images.shape == (2, 16, 16, 3) and out_masks.shape == (2, 16, 16, 1)
    for row, column in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        np.testing.assert_allclose(out_images.numpy()[:, row, column], images.numpy()[:, row, column], rtol=1e-6)
    soft = out_masks.numpy()
    assert np.any((soft > 0.05) & (soft < 0.95)) and soft.min() >= 0.0 and soft.max() <= 1.0


# ---------------------------------------------------------------- synthetic data


def test_polyp_sample_shapes_and_mask():
    image, mask = polyp_sample(np.random.default_rng(0), 48, 64)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (48, 64) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert 0.01 < np.mean(mask > 0) < 0.6


def test_write_polyp_dataset_is_deterministic(tmp_path):
    first = write_polyp_dataset(tmp_path / "a", 5, size=None, seed=3)
    again = write_polyp_dataset(tmp_path / "b", 5, size=None, seed=3)
    other = write_polyp_dataset(tmp_path / "c", 5, size=None, seed=4)
    pairs = find_pairs(first)
    check_pairs(pairs)
    assert [p.stem for p in pairs] == [f"synth_{i:04d}" for i in range(5)]
    for name in ["images/synth_0002.jpg", "masks/synth_0004.png"]:
        assert (first / name).read_bytes() == (again / name).read_bytes() != (other / name).read_bytes()
    sizes = {cv2.imread(p.image).shape for p in pairs}
    assert len(sizes) > 1
    assert all(0 < np.mean(cv2.imread(p.mask, cv2.IMREAD_GRAYSCALE) > 128) < 0.6 for p in pairs)


# ---------------------------------------------------------------- real data (skipped when absent)

KVASIR = os.path.join(SHARED_DATA, "Kvasir-SEG")


@pytest.mark.skipif(not os.path.isdir(KVASIR), reason="../shared/data/Kvasir-SEG not present")
def test_kvasir_standard_split_and_decoding():
    pairs = find_pairs(KVASIR)
    check_pairs(pairs)
    train, val = split_by_file(pairs, os.path.join(KVASIR, "pranet_kvasir_test_names.txt"))
    assert (len(train), len(val)) == (900, 100)
    image, mask = next(iter(make_dataset(val[:2], "caffe", 352, 2, training=False)))
    assert image.shape == (2, 352, 352, 3) and mask.shape == (2, 352, 352, 1)
    assert set(np.unique(mask.numpy())) == {0.0, 1.0}
