"""Presets: a model as a folder in KerasHub's layout (keras_hub/src/utils/preset_utils.py; no dependency on
keras-hub), which `from_preset` loads from a local folder, a hub handle or a name of the class's registry.

  config.json       keras.saving.serialize_keras_object(model): "module", "class_name", "config", "registered_name"
  model.weights.h5  the weights
  metadata.json     keras_version, tfseg_version, parameter_count, date_saved
  tfseg.json        what export writes (tfseg.models.spec.model_metadata: the inference spec and the model), the
                    sha256 of config.json and model.weights.h5 (checked at load) and, for a trained model, how it
                    was trained and its checkpoint chosen ("training")
  README.md         the model card, written from tfseg.json

Handles: a local folder; `hf://owner/name` (huggingface_hub: `pip install tfseg[hf]`);
`kaggle://owner/model/keras/variant[/version]` (kagglehub: `pip install tfseg[kaggle]`); a name of the registry
(`PraNet.presets`): what tfseg builds without a hosted preset, or, for an entry with a "handle", the hosted one.

A preset folder holds one model's files: `save_preset` writes it whole in a temporary sibling and swaps it in
(`tfseg.files.replace_folder`), refuses a folder that holds something else, and replaces a preset of another model
only when asked (`overwrite`).
"""

import datetime
import importlib
import importlib.metadata
import json
import os
import shlex
import shutil

import keras
import numpy as np

from tfseg import files
from tfseg.models.spec import SPEC_KEY, export_spec, model_metadata

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
SPEC_FILE = files.METADATA_FILE  # tfseg.json
CARD_FILE = "README.md"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE, SPEC_FILE, CARD_FILE)
HUBS = {  # scheme: (package, extra, handle form)
    "hf": ("huggingface_hub", "hf", "hf://owner/name"),
    "kaggle": ("kagglehub", "kaggle", "kaggle://owner/model/keras/variant[/version]"),
}
NOT_FOUND_ERRORS = ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError", "KaggleApiHTTPError")


class PresetError(ValueError):
    """A preset that cannot be loaded or saved: unknown handle, missing optional package, no network, a folder
    that is not a preset, an existing preset of another model."""


class Preset:
    """Mixin of the tfseg models: `Model.from_preset(handle)`, `model.save_to_preset(folder)` and the registry
    `presets` ({name: {"description", and "config" (built here), "handle" (hosted) or "instructions"}})."""

    presets = {}

    @classmethod
    def from_preset(cls, handle):
        """The model of a preset folder, an `hf://` or `kaggle://` handle, or a name of `cls.presets`."""
        return load(handle, cls)[0]

    def save_to_preset(self, folder, training=None, overwrite=False):
        """Writes this model as the preset `folder` (see `save_preset`); returns its path."""
        return save_preset(self, folder, training, overwrite)


# === Saving ===


def save_preset(model, folder, training=None, overwrite=False):
    """Writes `model` as a preset folder: config.json, model.weights.h5, metadata.json, tfseg.json (with
    `training`, tfseg.training.loop's record, when given) and README.md (the model card). Refuses (PresetError) a
    folder that holds other things than a preset, and one that holds a preset of other weights or settings unless
    `overwrite`; other files of the user's there are kept. Returns the folder's path."""
    folder = os.path.abspath(os.fspath(folder))
    _check_target(folder)
    files.remove_stale_temporaries(os.path.dirname(folder), os.path.basename(folder))
    staging = files.temporary_name(folder)
    try:
        os.makedirs(staging)
        _write(model, staging, training)
        if os.path.isdir(folder):
            if not overwrite and not _same_model(staging, folder):
                raise PresetError(
                    f"{folder} holds the preset of another model (other weights or settings): choose another "
                    "folder, or overwrite it (save_to_preset(..., overwrite=True))"
                )
            for name in sorted(set(os.listdir(folder)) - set(PRESET_FILES)):
                if not files.TEMPORARY.match(name):
                    _copy(os.path.join(folder, name), os.path.join(staging, name))  # the user's own files
        files.replace_folder(staging, folder)
    except BaseException:
        files.remove(staging)
        raise
    return folder


def _check_target(folder):
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise PresetError(f"The preset folder {folder} is a file: choose a folder")
    entries = [name for name in os.listdir(folder) if not files.TEMPORARY.match(name)] if os.path.isdir(folder) else []
    if entries and CONFIG_FILE not in entries:
        raise PresetError(
            f"{folder} is not empty and holds no preset ({CONFIG_FILE}): a preset replaces its folder, so choose a "
            "new or empty one"
        )


def _same_model(new, old):
    """Whether two preset folders hold the same config and weights (byte for byte)."""
    return all(
        os.path.isfile(os.path.join(old, name))
        and files.fingerprint(os.path.join(new, name)) == files.fingerprint(os.path.join(old, name))
        for name in (CONFIG_FILE, WEIGHTS_FILE)
    )


def _copy(source, target):
    if os.path.isdir(source) and not os.path.islink(source):
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target, follow_symlinks=False)


def _write(model, folder, training):
    config = keras.saving.serialize_keras_object(model)
    for key in ("build_config", "compile_config"):  # as KerasHub: the model is built from its config
        config.pop(key, None)
    files.write_json(os.path.join(folder, CONFIG_FILE), config)
    model.save_weights(os.path.join(folder, WEIGHTS_FILE))
    files.write_json(
        os.path.join(folder, METADATA_FILE),
        {
            "keras_version": keras.version(),
            "tfseg_version": _version(),
            "parameter_count": model.count_params(),
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        },
    )
    metadata = model_metadata(model, export_spec(model))
    metadata["files"] = {
        name: {"path": file, "fingerprint": files.fingerprint(os.path.join(folder, file))}
        for name, file in (("config", CONFIG_FILE), ("weights", WEIGHTS_FILE))
    }
    if training:
        metadata["training"] = training
    files.write_json(os.path.join(folder, SPEC_FILE), metadata)
    files.write_text(os.path.join(folder, CARD_FILE), model_card(metadata, model.count_params()))


def _version():
    try:
        return importlib.metadata.version("tfseg")
    except importlib.metadata.PackageNotFoundError:
        return None


# === The model card ===


def model_card(metadata, parameters=None):
    """README.md of a preset from its tfseg.json: the model, how to load it, its inference spec and, for a trained
    model, data, split, validation protocol and numbers, how the checkpoint was chosen, the command line."""
    name, config = metadata["architecture"], metadata["config"]
    shown = {key: value for key, value in config.items() if key not in ("name", "trainable", "dtype", SPEC_KEY)}
    settings = ", ".join(f"{key} {value}" for key, value in shown.items())
    lines = [
        "---",
        "library_name: keras",
        "tags:",
        "- tfseg",
        "- image-segmentation",
        f"- {metadata['task']}",
        "---",
        "",
        f"# {name} ({metadata['task']} segmentation)",
        "",
        f"A tfseg `{name}` ({settings}"
        + (f"; {parameters:,} parameters" if parameters else "")
        + ") in KerasHub's preset layout: `config.json`, `model.weights.h5`, `metadata.json`, `tfseg.json` "
        "(the inference spec and how the model was trained), this card.",
        "",
        "```python",
        f"from tfseg.models import {name}",
        "",
        f'model = {name}.from_preset("PRESET")  # this folder, or its hf:// or kaggle:// handle',
        "```",
        "",
        "```bash",
        "python infer_image.py --model PRESET --image IMAGE --output DIR",
        "python test_model.py --model PRESET --data_path DATA",
        "python export_model.py --model PRESET --output EXPORT_DIR",
        "```",
        "",
        "## Inference",
        "",
        "| input | normalisation | input size | prediction | activation |",
        "|---|---|---|---|---|",
        f"| RGB in [0, 255] | {metadata['normalization']} | "
        f"{'the image size' if metadata['input_size'] is None else 'x'.join(map(str, metadata['input_size']))} "
        f"| output {metadata['prediction_output']!r} of {', '.join(map(str, metadata['outputs']))} "
        f"| {metadata['activation']} |",
        "",
    ]
    training = metadata.get("training")
    lines += _training_lines(training) if training else ["Not trained by a tfseg training run (no training record)."]
    return "\n".join(lines) + "\n"


def _training_lines(training):
    checkpoint, validation = training.get("checkpoint", {}), training.get("validation", {})
    threshold = training.get("threshold") or {}
    rows = [
        ("data", f"`{training['data_path']}`" if training.get("data_path") else "not recorded"),
        ("training images", training.get("training_images", {}).get("images")),
        ("validation split", f"{validation.get('split')} ({validation.get('images')} images)"),
        ("validation protocol", training.get("validation_protocol")),
        (
            "checkpoint",
            f"{checkpoint.get('rule')}: epoch {checkpoint.get('epoch')} of {checkpoint.get('epochs')}"
            + (f" (score {checkpoint['score']:.4f})" if checkpoint.get("score") is not None else ""),
        ),
    ]
    if threshold:
        rows.append(
            (
                "threshold",
                f"{threshold['value']:g}, chosen on the {threshold['images']} validation images by tfseg.evaluation."
                f"threshold ({threshold['criterion']}: {threshold['score']:.4f}; at 0.5: "
                f"{threshold['score_at_0.5']:.4f})",
            )
        )
    if training.get("near_duplicates") is not None:
        rows.append(("validation images near-duplicating training ones", training["near_duplicates"]))
    recipe = training.get("recipe")
    if recipe:
        changed = ", ".join(f"{key} {value}" for key, value in recipe.get("changed", {}).items()) or "none"
        rows.append(("recipe", f"{recipe['name']} (changed: {changed}; init_weights {recipe.get('init_weights')})"))
    rows += [("run folder", f"`{training['run_dir']}`" if training.get("run_dir") else None)]
    lines = ["## Training", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows if value is not None]
    metrics = training.get("metrics")
    if metrics:
        lines += [
            "",
            f"Validation at the chosen epoch ({checkpoint.get('epoch')}; the run's log.csv):",
            "",
            "| " + " | ".join(metrics) + " |",
            "|" + "---:|" * len(metrics),
            "| " + " | ".join(_number(value) for value in metrics.values()) + " |",
        ]
    if training.get("command"):
        lines += ["", "Command line:", "", "```bash", training["command"], "```"]
    if training.get("settings"):
        lines += ["", "Settings (args.json):", "", "```json", json.dumps(training["settings"], indent=2), "```"]
    return lines


def _number(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def command_line(argv):
    """The command that started the process, as a shell would take it back."""
    program = os.path.basename(argv[0]) if argv else "python"
    return shlex.join((["python", program] if program.endswith(".py") else [program]) + list(argv[1:]))


# === Loading ===


def load(handle, cls=None):
    """(model, its tfseg.json or None) of a preset folder, a hub handle or a registry name (of `cls`, else of
    every tfseg model); `cls` also checks the preset's class."""
    handle = os.fspath(handle)
    scheme = handle.split("://", 1)[0].lower() if "://" in handle else None
    if scheme is not None:
        if scheme not in HUBS:
            raise PresetError(f"Unknown preset handle {handle}: expected {' or '.join(h[2] for h in HUBS.values())}")
        return load_folder(download(handle, scheme), cls, handle)
    if os.path.isdir(handle):
        return load_folder(handle, cls)
    entry, owner = registry_entry(handle, cls)
    if entry is None:
        names = ", ".join(sorted(registry(cls))) or "none"
        raise PresetError(
            f"Unknown preset {handle!r}: not a folder, not a handle ({', '.join(h[2] for h in HUBS.values())}) and "
            f"not a name of the {cls.__name__ + ' ' if cls else ''}registry ({names})"
        )
    if "handle" in entry:
        return load(entry["handle"], cls)
    if "instructions" in entry:
        raise PresetError(f"The preset {handle} is not built in: {entry['instructions']}")
    try:
        return owner(**entry["config"]), None
    except ConnectionError as error:
        raise PresetError(f"The preset {handle} could not be built offline: {error}") from None


def is_handle(path):
    """Whether `path` names a preset: a hub handle, a registry name or a folder with config.json."""
    path = os.fspath(path)
    if "://" in path:
        return True
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, CONFIG_FILE))
    return not os.path.exists(path) and registry_entry(path)[0] is not None


def registry(cls=None):
    """{name: (entry, class)} of the presets of `cls` (and its subclasses), or of every tfseg model."""
    import tfseg.models  # noqa: F401  registers every model

    classes = _subclasses(Preset) if cls is None else [cls, *_subclasses(cls)]
    return {name: (entry, owner) for owner in classes for name, entry in owner.__dict__.get("presets", {}).items()}


def registry_entry(name, cls=None):
    return registry(cls).get(name, (None, None))


def _subclasses(cls):
    found = []
    for subclass in cls.__subclasses__():
        found += [subclass, *_subclasses(subclass)]
    return found


def download(handle, scheme):
    """The local folder of a hub handle, downloaded (or found in the hub's cache) by its optional package."""
    package, extra, form = HUBS[scheme]
    try:
        hub = importlib.import_module(package)
    except ImportError:
        raise PresetError(
            f"{handle}: {scheme}:// handles need the optional package {package}: pip install 'tfseg[{extra}]' "
            f"(or pip install {package})"
        ) from None
    name = handle.split("://", 1)[1].strip("/")
    parts = name.split("/")
    if (scheme == "hf" and len(parts) != 2) or (scheme == "kaggle" and len(parts) not in (4, 5)) or "" in parts:
        raise PresetError(f"Unexpected handle {handle}: expected {form}")
    try:
        if scheme == "hf":
            return hub.snapshot_download(repo_id=name)
        return hub.model_download(name)
    except Exception as error:  # the hubs' own errors (HTTP, offline mode, no cache) have no common base
        if type(error).__name__ in NOT_FOUND_ERRORS:
            raise PresetError(f"{handle} was not found (or is not public): {error}") from None
        raise PresetError(
            f"Could not download {handle} ({type(error).__name__}: {error}). Is the machine offline? Download the "
            "preset folder on a machine with internet and pass its path instead"
        ) from None


def load_folder(folder, cls=None, handle=None):
    """(model, tfseg.json or None) of a local preset folder: its config.json deserialised (the class checked
    against `cls`), config.json and the weights checked against the fingerprints of tfseg.json, the weights
    loaded."""
    import tfseg.models  # noqa: F401  registers the tfseg layers and models for deserialisation

    source = handle or folder
    config_path, weights_path = os.path.join(folder, CONFIG_FILE), os.path.join(folder, WEIGHTS_FILE)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise PresetError(f"{source} is not a preset: it has no {os.path.basename(path)}")
    try:
        with open(config_path) as f:
            config = json.load(f)
        registered = config["registered_name"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PresetError(f"{config_path} is not a Keras preset config ({error})") from None
    found = keras.saving.get_registered_object(registered)
    if found is None:
        raise PresetError(f"{source} holds a {registered}, which is not a registered tfseg model")
    if cls is not None and not issubclass(found, cls):
        raise PresetError(
            f"{source} holds a model of class {found.__name__}, not {cls.__name__}: load it with "
            f"{found.__name__}.from_preset"
        )
    metadata = files.read_metadata(folder)
    for path in (config_path, weights_path):
        files.check_fingerprint(path, metadata)
    model = keras.saving.deserialize_keras_object(config)
    if not model.built:  # a subclassed model (HRNetOCR) creates its weights on its first call
        model(np.zeros((1, 64, 64, 3), "float32"), training=False)
    model.load_weights(weights_path)
    return model, metadata
