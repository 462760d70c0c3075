"""tfseg.files: atomic writes, folder swaps, overwrite refusal, leftovers of killed writers."""

import json
import os

import pytest

from tfseg import files


def test_atomic_path_leaves_the_previous_file_on_failure(tmp_path):
    path = tmp_path / "a" / "results.json"
    files.write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), files.atomic_path(path) as temporary:
        open(temporary, "w").write("{")
        raise RuntimeError
    assert json.loads(path.read_text()) == {"v": 1} and os.listdir(tmp_path / "a") == ["results.json"]


def test_replace_folder_swaps_whole_folders(tmp_path):
    old, new = tmp_path / "export", tmp_path / "staging"
    old.mkdir()
    (old / "model.tflite").write_text("old")
    new.mkdir()
    (new / "model.keras").write_text("new")
    files.replace_folder(new, old)
    assert os.listdir(old) == ["model.keras"] and not new.exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    files.replace_folder(fresh, tmp_path / "created")
    assert (tmp_path / "created").is_dir()


def test_refuse_overwrite_sees_through_links(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"frames")
    os.symlink(video, tmp_path / "link.mp4")
    for output in (video, tmp_path / "link.mp4", tmp_path / "sub" / ".." / "clip.mp4"):
        with pytest.raises(files.OverwriteError, match="would overwrite the input"):
            files.refuse_overwrite([output], [str(video)])
    files.refuse_overwrite([tmp_path / "out.mp4"], [video])


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    (tmp_path / ".tmp999999999.best.weights.h5").write_bytes(b"half")  # no such process
    mine = tmp_path / f".tmp{os.getpid()}.log.csv"
    mine.write_text("")
    assert files.remove_stale_temporaries(tmp_path) == [".tmp999999999.best.weights.h5"]
    assert mine.exists()


def test_fingerprint_of_a_folder_covers_names_and_bytes(tmp_path):
    folder = tmp_path / "savedmodel"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "v.data").write_bytes(b"weights")
    (folder / "tfseg.json").write_text("{}")
    first = files.fingerprint(folder, {"tfseg.json"})
    (folder / "tfseg.json").write_text('{"files": {}}')  # excluded: the metadata that holds the fingerprint
    assert files.fingerprint(folder, {"tfseg.json"}) == first
    (folder / "variables" / "v.data").write_bytes(b"weightz")
    assert files.fingerprint(folder, {"tfseg.json"}) != first
    changed = files.fingerprint(folder, {"tfseg.json"})
    os.rename(folder / "variables" / "v.data", folder / "variables" / "w.data")  # the same bytes, another name
    assert files.fingerprint(folder, {"tfseg.json"}) != changed
