"""Run folder: args.json, a CSV log, TensorBoard events, checkpoints (last, for resume) and best weights.

runs/<name>/
  args.json           the training configuration (a resumed run reads it back)
  log.csv             one row per epoch
  tensorboard/        train/ and val/ event files
  checkpoints/        tf.train checkpoints of model + optimizer + epoch (last 2 kept)
  best.weights.h5     the weights with the best validation Dice
  export/             SavedModel, model.keras and tfseg.json, written at the end
  preset/             the best model as a preset (tfseg.models.preset) with its model card, written at the end
"""

import csv
import dataclasses
import glob
import io
import json
import logging
import os
import shutil

import tensorflow as tf

from tfseg import files

log = logging.getLogger(__name__)


class RunDirectory:
    """The files of one run. Every file a user keeps is replaced atomically (`tfseg.files`): a kill leaves the
    previous version, never a truncated one."""

    def __init__(self, path, chief=True, worker_id=0):
        self.path, self.chief, self.worker_id = path, chief, worker_id
        self.args = os.path.join(path, "args.json")
        self.csv = os.path.join(path, "log.csv")
        self.tensorboard = os.path.join(path, "tensorboard")
        self.best_weights = os.path.join(path, "best.weights.h5")
        self.export = os.path.join(path, "export")
        self.preset = os.path.join(path, "preset")
        # Every MWMS task takes part in saving a checkpoint; only the chief's copy is kept.
        self.checkpoints = os.path.join(path, "checkpoints" if chief else f".checkpoints_worker{worker_id}")

    def write_args(self, config):
        """Writes args.json unless it already holds these settings; returns whether it wrote."""
        settings = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists, as read back
        if not self.chief or (os.path.isfile(self.args) and self.read_args() == settings):
            return False
        files.write_json(self.args, settings)
        return True

    def read_args(self):
        if not os.path.isfile(self.args):
            raise FileNotFoundError(f"Cannot resume: {self.args} not found (is {self.path} a tfseg run folder?)")
        try:
            with open(self.args) as f:
                return json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot resume: {self.args} is unreadable ({error})") from None

    def save_best_weights(self, model):
        if self.chief:
            with files.atomic_path(self.best_weights) as temporary:
                model.save_weights(temporary)

    def append_log(self, row):
        """Adds an epoch's row to log.csv (the whole file is rewritten and replaced: it is small)."""
        if self.chief:
            self._write_log(self.read_log(raw=True) + [row])

    def _write_log(self, rows):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
        files.write_text(self.csv, text.getvalue())

    def read_log(self, raw=False):
        """The logged epochs as dicts of floats (epoch as int; `raw`: as strings); [] before the first epoch."""
        if not os.path.isfile(self.csv):
            return []
        with open(self.csv, newline="") as f:
            rows = list(csv.DictReader(f))
        return rows if raw else [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in rows]

    def truncate_log(self, epochs_done):
        """Drops log rows of epochs after the restored checkpoint (they will be trained again)."""
        if not (self.chief and os.path.isfile(self.csv)):
            return
        rows = self.read_log(raw=True)
        kept = [row for row in rows if int(row["epoch"]) <= epochs_done]
        if len(kept) < len(rows):
            self._write_log(kept)

    def remove_leftovers(self):
        """What a killed run leaves behind: temporary files of atomic writes and half-written checkpoints
        (`ckpt-N_temp*`, which tf.train never removes). The chief's job: another task's process ids mean nothing
        on this machine."""
        if not self.chief:
            return
        removed = files.remove_stale_temporaries(self.path)
        for partial in glob.glob(os.path.join(glob.escape(self.checkpoints), "*_temp*")):
            files.remove(partial)
            removed.append(os.path.relpath(partial, self.path))
        if removed:
            log.info("Removed what an interrupted run left in %s: %s", self.path, ", ".join(sorted(removed)))

    def checkpoint_manager(self, checkpoint):
        return tf.train.CheckpointManager(checkpoint, self.checkpoints, max_to_keep=2)

    def cleanup(self):
        if not self.chief:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
