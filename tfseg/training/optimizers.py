"""Gradient clipping of the global batch, for `fit` and the training loop alike.

The original PraNet clips the gradient of its whole batch element-wise (`clip_gradient` in MyTrain.py). Keras'
`clipvalue` clips each replica's gradient before the replicas' sum (keras/src/optimizers/base_optimizer.py `apply`,
then the TF backend's all-reduce in `_backend_update_step`), which under tf.distribute is another clip.
`global_batch_clipping(Adam)(lr, clipvalue=c)` clips the sum: it all-reduces the gradients first, clips, and gives
each replica 1/N of the clipped sum back for the optimizer's own sum. With one replica it is Keras' `clipvalue`.
"""

import functools

import keras
import tensorflow as tf


class GlobalBatchClipping:
    """Mixin for a Keras optimizer: `clipvalue` clips the gradient summed over the replicas (see the module)."""

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if not self.clipvalue or replicas == 1:
            return super()._clip_gradients(grads)
        present = [g for g in grads if g is not None]
        summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
        value = self.clipvalue
        return [None if g is None else tf.clip_by_value(next(summed), -value, value) / replicas for g in grads]


@functools.cache
def global_batch_clipping(optimizer_class):
    """`optimizer_class` (e.g. keras.optimizers.Adam) with GlobalBatchClipping, registered for saving as
    `tfseg>GlobalBatchClipped<Name>`."""
    name = f"GlobalBatchClipped{optimizer_class.__name__}"
    subclass = type(name, (GlobalBatchClipping, optimizer_class), {"__doc__": GlobalBatchClipping.__doc__})
    return keras.saving.register_keras_serializable(package="tfseg", name=name)(subclass)


# registered at import, so that a model compiled with them and saved loads in a fresh process after
# `import tfseg.training` (as tfseg's losses and metrics after `import tfseg.losses` / `tfseg.metrics`)
GlobalBatchClippedAdam = global_batch_clipping(keras.optimizers.Adam)
GlobalBatchClippedAdamW = global_batch_clipping(keras.optimizers.AdamW)
GlobalBatchClippedSGD = global_batch_clipping(keras.optimizers.SGD)
