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


class FusedAdamUpdate:
    """Mixin for keras.optimizers.Adam: each variable's update as one op, `tf.raw_ops.ResourceApplyAdam`, instead
    of the ~20 of Keras' `Adam.update_step`, and the step's scalars (b1^t, b2^t, the cast learning rate) built once
    for all variables, not once per variable; the same formula (Kingma & Ba, Algorithm 1, with the bias
    corrections folded into the step size, as Keras writes it):
      m += (1 - b1) (g - m);  v += (1 - b2) (g^2 - v);  var -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps).
    The first step's graph is smaller and built faster (PraNet-Res2Net-50: 461 variables); variables and
    checkpoints are Keras'. AMSGrad and sparse gradients take Keras' `update_step`."""

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        scalars = {dtype: self._step_scalars(dtype, learning_rate) for dtype in {v.dtype for _, v in grads_and_vars}}

        def apply_adam(variable, gradient):
            if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
                return self.update_step(gradient, variable, learning_rate)
            index = self._get_variable_index(variable)
            return tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=self._momentums[index].value.handle,
                v=self._velocities[index].value.handle,
                grad=tf.cast(gradient, variable.dtype),
                **scalars[variable.dtype],
            )

        for gradient, variable in grads_and_vars:
            distribution.extended.update(variable, apply_adam, args=(gradient,), group=False)

    def _step_scalars(self, dtype, learning_rate):
        """ResourceApplyAdam's scalar arguments for variables of `dtype` at this step (t = iterations + 1)."""
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return {
            "beta1_power": tf.pow(beta_1, step),
            "beta2_power": tf.pow(beta_2, step),
            "lr": tf.cast(learning_rate, dtype),
            "beta1": beta_1,
            "beta2": beta_2,
            "epsilon": tf.cast(self.epsilon, dtype),
        }


@functools.cache
def global_batch_clipping(optimizer_class):
    """`optimizer_class` (e.g. keras.optimizers.Adam) with GlobalBatchClipping (and, for Adam, FusedAdamUpdate),
    registered for saving as `tfseg>GlobalBatchClipped<Name>`."""
    name = f"GlobalBatchClipped{optimizer_class.__name__}"
    fused = (FusedAdamUpdate,) if optimizer_class is keras.optimizers.Adam else ()
    subclass = type(name, (GlobalBatchClipping, *fused, optimizer_class), {"__doc__": GlobalBatchClipping.__doc__})
    return keras.saving.register_keras_serializable(package="tfseg", name=name)(subclass)


# registered at import, so that a model compiled with them and saved loads in a fresh process after
# `import tfseg.training` (as tfseg's losses and metrics after `import tfseg.losses` / `tfseg.metrics`)
GlobalBatchClippedAdam = global_batch_clipping(keras.optimizers.Adam)
GlobalBatchClippedAdamW = global_batch_clipping(keras.optimizers.AdamW)
GlobalBatchClippedSGD = global_batch_clipping(keras.optimizers.SGD)
