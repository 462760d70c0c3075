"""Files a user keeps: written whole or not at all, never over an input, and fingerprinted; model files checked
against the fingerprints of the `tfseg.json` that describes them.

Every file tfseg writes for keeping (weights, args.json, logs, exports, reports, maps) goes through `atomic_path`:
it is written under a temporary name in its own folder (`.tmp<pid>.<name>`, the same suffix, hidden from the
dataset readers) and moved over the destination with `os.replace`, which is atomic on POSIX and Windows. A kill
at any moment leaves either the previous file or the new one, never a truncated one. Folders (an export) are
swapped whole by `replace_folder`. Pure Python: no TensorFlow.
"""

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

TEMPORARY = re.compile(r"^\.tmp(\d+)\.")  # `.tmp<pid>.<name>`: what atomic_path and temporary_folder create
METADATA_FILE = "tfseg.json"  # an export's or a preset's metadata: inference spec, fingerprints, training record
log = logging.getLogger(__name__)


class OverwriteError(ValueError):
    """An output would be written over one of the command's own inputs."""


class ModelFileError(ValueError):
    """A model file that does not belong to the metadata beside it (changed, or left from another export)."""


def temporary_name(path):
    """`folder/.tmp<pid>.<name>` for `folder/<name>`: same folder (so os.replace is a rename), same suffix (Keras,
    OpenCV and h5py pick the format from it), hidden (dataset and image readers skip dot files)."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".tmp{os.getpid()}.{name}")


def _fsync(path):
    """Flushes a written file to disk, so that the rename never publishes a file whose data is still in flight."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write instead of `path`; on success it replaces `path`, on any exception (Ctrl-C
    included) it is removed and `path` is left as it was. Creates the folder."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        if os.path.isfile(temporary):
            _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        remove(temporary)
        raise


def write_bytes(path, data):
    with atomic_path(path) as temporary, open(temporary, "wb") as f:
        f.write(data)


def write_text(path, text):
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as f:
        f.write(text)


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2) + "\n")


def remove(path):
    """Removes a file or a folder tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder, name=None):
    """Removes the `.tmp<pid>.*` files and folders left in `folder` by processes that no longer run (killed while
    writing), only those of `name` (`.tmp<pid>.<name>`) when given; returns their names."""
    removed = []
    if os.path.isdir(folder):
        for entry in os.scandir(folder):
            match = TEMPORARY.match(entry.name)
            if not match or (name is not None and entry.name[match.end() :] not in (name, f"{name}.previous")):
                continue  # not a temporary, or another's (`.previous`: see replace_folder)
            if not _alive(int(match[1])):
                remove(entry.path)
                removed.append(entry.name)
    return removed


def _exchange_function():
    """renameat2(RENAME_EXCHANGE) on Linux: swaps two paths in one atomic step; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no libc found, or a libc older than glibc 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def replace_folder(new, old):
    """Puts the folder `new` at `old`, whose previous content is then deleted. Where `old` exists, Linux swaps the
    two in one atomic step (renameat2 RENAME_EXCHANGE): a kill leaves either the old or the new folder at `old`.
    Elsewhere (or on file systems without the exchange) `old` moves aside for the moment of one rename."""
    new, old = os.path.abspath(new), os.path.abspath(old)
    if not os.path.lexists(old):
        os.rename(new, old)
        return
    exchange = _exchange_function()
    if (
        exchange is not None
        and exchange(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(old), _RENAME_EXCHANGE) == 0
    ):
        remove(new)  # now the previous content
        return
    aside = temporary_name(old) + ".previous"
    os.rename(old, aside)
    os.rename(new, old)
    remove(aside)


def short_digest(path, chars=16):
    """The first `chars` hex digits of a file's sha256 (16: 64 bits, no accidental match in any dataset)."""
    return fingerprint(path).removeprefix("sha256:")[:chars]


def fingerprint(path, exclude=()):
    """ "sha256:<hex>" of a file's bytes, or of a folder's files (relative path and bytes, in sorted order; names in
    `exclude` left out): which model file an export's metadata belongs to."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            for name in sorted(names):
                file = os.path.join(folder, name)
                relative = os.path.relpath(file, path).replace(os.sep, "/")
                if relative in exclude:
                    continue
                digest.update(relative.encode() + b"\0")
                _hash_file(file, digest)
    else:
        _hash_file(path, digest)
    return f"sha256:{digest.hexdigest()}"


def _hash_file(path, digest):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def _identities(path):
    """What names the file at `path`: its resolved name and, when it exists, its (device, inode) (links
    followed)."""
    identities = [os.path.realpath(path)]
    try:
        status = os.stat(path)
        identities.append((status.st_dev, status.st_ino))
    except OSError:
        pass
    return identities


def same_file(a, b):
    """Whether two paths name one file or folder (links and `..` resolved)."""
    return bool(set(_identities(os.fspath(a))) & set(_identities(os.fspath(b))))


def refuse_overwrite(outputs, inputs, what="output"):
    """Raises OverwriteError if any path of `outputs` is one of `inputs` (hard and symbolic links, `..` and
    relative spellings resolved)."""
    known = {identity: os.fspath(path) for path in inputs for identity in _identities(os.fspath(path))}
    for output in outputs:
        clash = next((known[i] for i in _identities(os.fspath(output)) if i in known), None)
        if clash is not None:
            raise OverwriteError(f"The {what} {output} would overwrite the input {clash}: choose another path")


def refuse_inside(folder, inputs, what="output folder"):
    """Raises OverwriteError if any of `inputs` lies inside `folder` (a folder that is replaced whole)."""
    root = os.path.realpath(folder)
    for path in inputs:
        if os.path.commonpath([root, os.path.realpath(path)]) == root:
            raise OverwriteError(
                f"The {what} {folder} holds the input {path}, which writing it would replace: choose another folder"
            )


def metadata_path(path):
    """The `tfseg.json` that describes `path`: inside a SavedModel or export folder, or beside a file."""
    path = Path(path)
    return path / METADATA_FILE if path.is_dir() else path.parent / METADATA_FILE


def read_metadata(path):
    """The `tfseg.json` of an export (inside a SavedModel or export folder, or beside a file), or None."""
    candidate = metadata_path(path)
    if not candidate.is_file():
        return None
    try:
        return json.loads(candidate.read_text())
    except (OSError, ValueError) as error:
        raise ModelFileError(f"Cannot read {candidate}: {error}") from None


def check_fingerprint(path, metadata):
    """Refuses (ModelFileError) a model file that the `tfseg.json` describing it does not list, or whose content
    differs from the fingerprint recorded at export. Metadata without fingerprints (exports of tfseg before they
    existed) can only be trusted: a warning says so."""
    if metadata is None:
        return
    source = metadata_path(path)
    listed = metadata.get("files")
    if listed is None:
        log.warning(
            "%s records no fingerprints (an export of an older tfseg): cannot check that %s belongs to "
            "it; export the model again to be sure",
            source,
            path,
        )
        return
    entry = next((entry for entry in listed.values() if same_file(source.parent / entry["path"], path)), None)
    if entry is None:
        raise ModelFileError(
            f"{path} is not a file of the export described by {source} (it lists "
            f"{', '.join(entry['path'] for entry in listed.values())}): remove it or export the "
            "model again"
        )
    if fingerprint(path, {METADATA_FILE}) != entry["fingerprint"]:
        raise ModelFileError(
            f"{path} is not the file exported with {source} (its fingerprint differs: changed or "
            "copied from another export): export the model again"
        )
