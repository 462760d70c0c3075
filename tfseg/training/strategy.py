"""tf.distribute strategy selection. Create the strategy before any other TensorFlow work (MWMS requires it)."""

import json
import logging
import os

import tensorflow as tf

log = logging.getLogger(__name__)
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def _tf_config_workers():
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(name="auto"):
    """`default` (one device), `mirrored` (all local GPUs, or the logical CPUs when there are none),
    `multiworker` (MultiWorkerMirroredStrategy from TF_CONFIG), or `auto`: multiworker when TF_CONFIG names more
    than one worker, mirrored when there is more than one GPU, else default."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")
    if name == "auto":
        if _tf_config_workers() > 1:
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("strategy 'multiworker' needs TF_CONFIG describing the cluster and this task.")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored":
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        devices = None if tf.config.list_physical_devices("GPU") else cpus
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.get_strategy()
    log.info("Strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def is_multiworker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is not None and bool(resolver.task_type)


def is_chief(strategy):
    """True on the one task that writes logs, best weights and exports (every task of a non-multiworker run)."""
    if not is_multiworker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return 0 if resolver is None or resolver.task_id is None else int(resolver.task_id)
