"""Training under MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy (2 local processes)."""

import json
import os
import socket
import subprocess
import sys

from tests.helpers import ROOT, run_python

MIRRORED_SCRIPT = r'''
import sys
import keras
import numpy as np
import tensorflow as tf

# float64: at 64 px the stride-32 BatchNorms see 8 values per replica, which turns float32 summation-order noise
# into sign flips; this test checks the all-reduce / clip / apply logic, not float32 noise.
keras.config.set_floatx("float64")

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tfseg.training import PraNetConfig
from tfseg.training.pranet import PraNetTrainer, load_pairs
from tfseg.training.strategy import make_strategy

config = PraNetConfig(data_path=sys.argv[1], backbone="mobilenetv2", backbone_weights=None, input_size=64,
                     batch_size=4, lr=1e-3, gclip=2e-3)
train, _ = load_pairs(config)
strategy = make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
mirrored, single = PraNetTrainer(config, strategy), PraNetTrainer(config, make_strategy("default"))
fitted = PraNetTrainer(config, strategy)  # model.fit under the strategy: the same step, gclip included
for trainer in (single, fitted):
    trainer.model.set_weights(mirrored.model.get_weights())
start = [v.numpy() for v in single.model.trainable_variables]
for trainer in (mirrored, single, fitted):  # Adam's linear regime: float-order noise in tiny gradients stays tiny
    trainer.optimizer.epsilon = 1.0
    trainer.optimizer.learning_rate.assign(1.0)
images, masks = (tf.cast(t, tf.float64) for t in next(iter(single.train_dataset(train, epoch=0))))
batches = iter(strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensors((images, masks)).repeat().unbatch().batch(4)))

def data_parallel_step(model, optimizer):
    """What 2 replicas compute: per-half BN statistics, loss / global batch, summed, THEN clipped."""
    total = None
    for half in (slice(0, 2), slice(2, 4)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(single.loss_fn.call(masks[half], model(images[half], training=True))) / 4
        grads = tape.gradient(loss, model.trainable_variables)
        total = grads if total is None else [a + b for a, b in zip(total, grads)]
    optimizer.apply([tf.clip_by_value(g, -config.gclip, config.gclip) for g in total], model.trainable_variables)

for _ in range(2):  # eagerly: the same step code without its 2-3 min trace (the next test runs it traced)
    mirrored._distributed_step(*next(batches), 64)
    data_parallel_step(single.model, single.optimizer)
with strategy.scope():  # Keras splits each global batch of 4 into 2 + 2, as above
    fitted.model.compile(**fitted.compile_arguments(), run_eagerly=True)
fitted.model.fit(tf.data.Dataset.from_tensors((images, masks)).repeat(2), epochs=1, verbose=0)
diff = lambda trainer: max(float(np.max(np.abs(a.numpy() - b.numpy())))
                           for a, b in zip(trainer.model.trainable_variables, single.model.trainable_variables))
moved = max(float(np.max(np.abs(a - b.numpy()))) for a, b in zip(start, single.model.trainable_variables))
print("MAXDIFF", diff(mirrored), "FITDIFF", diff(fitted), "MOVED", moved)
'''


def test_mirrored_step_equals_data_parallel_reference(polyp_dir, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    result = run_python([str(script), polyp_dir], env={"PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    measured = result.stdout.split("MAXDIFF")[1]
    diff, fit_diff, moved = (float(v) for v in measured.replace("FITDIFF", "MOVED").split("MOVED"))
    assert moved > 1e-4 and diff < 1e-6 * moved and fit_diff < 1e-6 * moved, (diff, fit_diff, moved)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multiworker_training_with_two_local_workers(polyp_dir, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = [
        sys.executable,
        "train_pranet.py",
        "--data_path",
        polyp_dir,
        "--backbone",
        "mobilenetv2",
        "--backbone_weights",
        "none",
        "--batchsize",
        "4",
        "--inputsize",
        "64",
        "--epoch",
        "1",
        "--steps_per_epoch",
        "2",
        "--strategy",
        "multiworker",
        "--logdir",
        str(tmp_path),
        "--name",
        "mwms",
        "--no_export",
        "--quiet",
    ]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        processes.append(
            subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
        assert "CollectiveAllReduceStrategy with 2 replica(s)" in err  # = MultiWorkerMirroredStrategy
    run_dir = tmp_path / "mwms"
    assert (run_dir / "log.csv").read_text().count("\n") == 2  # header + 1 epoch, written by the chief only
    assert any(name.startswith("ckpt-1") for name in os.listdir(run_dir / "checkpoints"))
    assert not any(name.startswith(".checkpoints_worker") for name in os.listdir(run_dir))
