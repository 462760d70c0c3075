"""Run folder: args.json, a CSV log, TensorBoard events, checkpoints (last, for resume) and best weights.

runs/<name>/
  args.json           the training configuration (a resumed run reads it back)
  log.csv             one row per epoch
  tensorboard/        train/ and val/ event files
  checkpoints/        tf.train checkpoints of model + optimizer + epoch (last 2 kept)
  best.weights.h5     the weights with the best validation Dice
  export/             SavedModel, model.keras and tfseg.json, written at the end
"""

import csv
import dataclasses
import json
import os
import shutil

import tensorflow as tf


class RunDirectory:
    def __init__(self, path, chief=True, worker_id=0):
        self.path, self.chief, self.worker_id = path, chief, worker_id
        self.args = os.path.join(path, "args.json")
        self.csv = os.path.join(path, "log.csv")
        self.tensorboard = os.path.join(path, "tensorboard")
        self.best_weights = os.path.join(path, "best.weights.h5")
        self.export = os.path.join(path, "export")
        # Every MWMS task takes part in saving a checkpoint; only the chief's copy is kept.
        self.checkpoints = os.path.join(path, "checkpoints" if chief else f".checkpoints_worker{worker_id}")

    def write_args(self, config):
        if self.chief:
            os.makedirs(self.path, exist_ok=True)
            with open(self.args, "w") as f:
                json.dump(dataclasses.asdict(config), f, indent=2)

    def read_args(self):
        if not os.path.isfile(self.args):
            raise FileNotFoundError(f"Cannot resume: {self.args} not found (is {self.path} a tfseg run folder?)")
        with open(self.args) as f:
            return json.load(f)

    def append_log(self, row):
        if not self.chief:
            return
        new = not os.path.isfile(self.csv)
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def read_log(self):
        """The logged epochs as dicts of floats (epoch as int); [] before the first epoch."""
        if not os.path.isfile(self.csv):
            return []
        with open(self.csv, newline="") as f:
            return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def truncate_log(self, epochs_done):
        """Drops log rows of epochs after the restored checkpoint (they will be trained again)."""
        if not (self.chief and os.path.isfile(self.csv)):
            return
        with open(self.csv, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]
        os.remove(self.csv)
        for row in rows:
            self.append_log(row)

    def checkpoint_manager(self, checkpoint):
        return tf.train.CheckpointManager(checkpoint, self.checkpoints, max_to_keep=2)

    def cleanup(self):
        if not self.chief:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
