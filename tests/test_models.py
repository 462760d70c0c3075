import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import max_abs_diff, random_images
from tests.model_test_case import check_model
from tfseg.models import BACKBONES, PraNet, build_backbone, normalize
from tfseg.models.blocks import resize_bilinear, tiled_conv
from tfseg.models.pranet import RFB, PartialDecoder, ReverseAttention

SIZES = [(64, 64), (64, 96)]  # one non-square


@pytest.fixture(scope="module")
def mobilenet_pranet():
    return PraNet("mobilenetv2", backbone_weights=None)


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenetv2", "res2net50"])
def test_four_maps_at_input_size(backbone):
    model = PraNet(backbone, backbone_weights=None)
    for height, width in SIZES:
        outputs = model(random_images(2, height, width), training=False)
        assert [tuple(o.shape) for o in outputs] == [(2, height, width, 1)] * 4


def test_decoder_parameter_count_matches_original():
    model = PraNet("resnet50", backbone_weights=None)
    decoder = [model.get_layer(name) for name in ("rfb2_1", "rfb3_1", "rfb4_1", "agg1", "ra4", "ra3", "ra2")]
    assert sum(int(np.prod(w.shape)) for layer in decoder for w in layer.trainable_weights) == 6_828_967


def test_backbone_batchnorm_momentum_is_torch_default(mobilenet_pranet):
    backbone = mobilenet_pranet.get_layer("mobilenetv2_backbone")
    bns = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and {layer.momentum for layer in bns} == {0.9}
    assert {layer.epsilon for layer in bns} == {1e-3}  # MobileNetV2's own, matching its ImageNet weights


def test_decoder_batchnorm_uses_torch_defaults(mobilenet_pranet):
    decoder = [mobilenet_pranet.get_layer(n) for n in ("rfb2_1", "rfb3_1", "rfb4_1", "agg1", "ra4", "ra3", "ra2")]
    decoder_bns = [
        layer for d in decoder for layer in d._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(decoder_bns) > 40
    assert {(layer.epsilon, layer.momentum) for layer in decoder_bns} == {(1e-5, 0.9)}


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("size", [(10, 14), (2, 3), (40, 56)])
def test_resize_matches_tensorflow_kernels(align_corners, size):
    x = np.random.default_rng(1).random((2, 5, 7, 3)).astype("float32")
    if align_corners:
        expected = tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
    else:
        expected = tf.image.resize(x, size, method="bilinear", antialias=False)
    dynamic = tf.function(
        lambda images, hw: resize_bilinear(images, (hw[0], hw[1]), align_corners),
        input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([2], tf.int32)],
    )
    assert max_abs_diff(resize_bilinear(x, size, align_corners), expected) < 1e-5  # static: native ops
    assert max_abs_diff(dynamic(x, size), expected) < 1e-5  # dynamic: the gathers


def test_partial_decoder_returns_one_channel_at_stride_8():
    decoder = PartialDecoder(8)
    out = decoder(np.ones((1, 2, 3, 8), "float32"), np.ones((1, 4, 6, 8), "float32"), np.ones((1, 8, 12, 8), "float32"))
    assert tuple(out.shape) == (1, 8, 12, 1)


def test_decoder_blocks_are_built_from_shapes_alone():
    """Each block creates its weights in `build` from its input shapes (H and W unknown), as a functional model's
    construction and `load_model` build it, with the weights a call creates. Without `build` Keras traced each
    block's `call` on symbolic inputs to find them: a PraNet took 2-3x as long to construct (docs/BENCHMARKS.md)."""
    ones = lambda size, channels: np.ones((1, size, size, channels), "float32")
    blocks = [  # (block, input channels, inputs of a call)
        (RFB(8), [24], [ones(16, 24)]),
        (PartialDecoder(8), [8, 8, 8], [ones(4, 8), ones(8, 8), ones(16, 8)]),
        (ReverseAttention(16, 3, 2, 3), [24, 1], [ones(8, 24), ones(4, 1)]),
    ]
    for block, channels, inputs in blocks:
        block.build(*[(None, None, None, c) for c in channels])
        called = type(block).from_config(block.get_config())
        called(*inputs)
        assert {w.path: w.shape for w in block.weights} == {w.path: w.shape for w in called.weights}


def test_reverse_attention_residual_can_be_negative():
    """No ReLU after the last conv: the branch can lower the previous map (remove false positives)."""
    layer = ReverseAttention(16, 3, 2, 3)
    feature = random_images(2, 8, 8)
    previous = np.zeros((2, 16, 16, 1), "float32")
    residual = np.asarray(layer(feature, previous, training=True))  # m == 0 after the resize
    assert residual.min() < 0 < residual.max()


def test_keras_round_trip(mobilenet_pranet, tmp_path):
    x = random_images(1, 64, 96)
    path = str(tmp_path / "pranet.keras")
    mobilenet_pranet.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == mobilenet_pranet.get_config()
    assert max_abs_diff(loaded(x, training=False), mobilenet_pranet(x, training=False)) == 0.0


def test_backbone_weights_from_a_local_file(tmp_path):
    source = build_backbone("mobilenetv2", None)
    path = str(tmp_path / "mobilenetv2_notop.weights.h5")
    source.save_weights(path)
    model = PraNet("mobilenetv2", backbone_weights=path)
    backbone = model.get_layer("mobilenetv2_backbone")
    assert max_abs_diff(backbone.get_weights(), source.get_weights()) == 0.0
    with pytest.raises(FileNotFoundError, match="not found"):
        PraNet("mobilenetv2", backbone_weights=str(tmp_path / "missing.h5"))


def test_imagenet_download_failure_is_explained(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ConnectionError, match="pass their path as backbone_weights"):
        build_backbone("resnet50", "imagenet")


def test_normalisation_per_backbone():
    rgb = np.array([[[255.0, 0.0, 127.5]]], "float32")
    np.testing.assert_allclose(normalize(rgb, "tf"), [[[1.0, -1.0, 0.0]]])
    np.testing.assert_allclose(normalize(rgb, "caffe"), [[[127.5 - 103.939, -116.779, 255.0 - 123.68]]], rtol=1e-6)
    np.testing.assert_allclose(
        normalize(rgb, "torch"), [[[(1 - 0.485) / 0.229, -0.456 / 0.224, (0.5 - 0.406) / 0.225]]], rtol=1e-6
    )
    assert {name: spec.normalization for name, spec in BACKBONES.items()} == {
        "resnet50": "caffe",
        "mobilenetv2": "tf",
        "res2net50": "torch",
    }  # res2net50: PraNet's own input
    with pytest.raises(ValueError, match="Unknown normalisation"):
        normalize(rgb, "mobilenetv2")  # a backbone is not a normalisation


@pytest.mark.parametrize("kernel, strides, dilation", [(3, 1, 1), (3, 2, 1), ((1, 5), 1, 1), (3, 1, 2), (4, 2, 1)])
def test_tiled_conv_matches_one_conv(kernel, strides, dilation):
    conv = keras.layers.Conv2D(1024, kernel, strides=strides, dilation_rate=dilation, use_bias=False)  # tiled
    x = np.random.default_rng(0).normal(size=(2, 23, 30, 8)).astype("float32")
    expected = conv(x)
    dynamic = tf.function(
        lambda images: tiled_conv(conv, images, tile=7), input_signature=[tf.TensorSpec([None, None, None, 8])]
    )
    assert max_abs_diff(tiled_conv(conv, x, tile=7), expected) < 1e-5  # static shape: up to 4 x 5 tiles
    assert max_abs_diff(dynamic(x), expected) < 1e-5


def test_pranet_passes_the_model_checks(mobilenet_pranet, tmp_path):
    check_model(mobilenet_pranet, random_images(1, 64, 96), tmp_path)


def test_batchnorm_trains_as_keras_batchnormalization_in_a_smaller_graph():
    """tfseg's BatchNorm (closed-form gradient through the batch statistics) against keras.layers.BatchNormalization
    in one traced training step: the same outputs, gradients of x, gamma and beta, and moving averages, in fewer
    ops; inference mode is Keras' own."""
    from tfseg.models.blocks import BatchNorm

    shape = (4, 9, 7, 16)
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=shape).astype("float32"))
    weights = tf.constant(np.random.default_rng(1).normal(size=shape).astype("float32"))

    def train_step(layer):
        layer.build(shape)
        layer.gamma.assign(np.random.default_rng(2).normal(1.0, 0.3, 16))
        layer.beta.assign(np.random.default_rng(3).normal(0.0, 0.3, 16))

        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * weights) + 0.1 * tf.reduce_sum(y * y)
            return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

        traced = tf.function(step)
        results = [t.numpy() for t in step(x) + traced(x)]  # eager, then traced
        results += [layer.moving_mean.numpy(), layer.moving_variance.numpy(), layer(x, training=False).numpy()]
        return results, len(traced.get_concrete_function(x).graph.get_operations())

    expected, keras_ops = train_step(keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9))
    ours, our_ops = train_step(BatchNorm(epsilon=1e-5, momentum=0.9))
    names = [f"{name} ({mode})" for mode in ("eager", "traced") for name in ("y", "dx", "dgamma", "dbeta")]
    for name, a, b in zip([*names, "moving mean", "moving variance", "inference"], ours, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))), err_msg=name)
    assert our_ops < keras_ops
