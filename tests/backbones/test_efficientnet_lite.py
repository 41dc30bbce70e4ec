"""tasks/backbones/efficientnet_lite.py: the blocks read from Lite0's and Lite2's state dicts, torch's kernel layouts
turned into Keras's (held to a convolution computed here from the torch layout), a state dict of the wrong shape."""

import numpy as np
import pytest

from tasks.backbones import efficientnet_lite, pretrained, torch_weights


def state_of(name: str) -> dict[str, np.ndarray]:
    return torch_weights.read_state_dict(pretrained.source_file(pretrained.BACKBONES[name]))


@pytest.fixture(scope="module")
def lite0():
    return state_of("efficientnet_lite0")


def test_lite0_has_16_blocks_in_7_stages_with_the_architecture_strides(lite0):
    blocks = efficientnet_lite.blocks_of(lite0)

    assert len(blocks) == 16 and [block.index for block in blocks] == list(range(16))
    stage_starts = [block for position, block in enumerate(blocks)
                    if position == 0 or blocks[position - 1].output_filters != block.output_filters]
    assert [block.strides for block in stage_starts] == [1, 2, 2, 2, 1, 2, 1]
    assert [block.output_filters for block in stage_starts] == [16, 24, 40, 80, 112, 192, 320]
    assert [block.kernel_size for block in stage_starts] == [3, 3, 5, 3, 5, 5, 3]
    assert all(block.strides == 1 for block in blocks if block not in stage_starts)
    assert not blocks[0].expands and all(block.expanded_filters == 6 * block.input_filters for block in blocks[1:])
    assert [block.index for block in blocks if block.residual] == [2, 4, 6, 7, 9, 10, 12, 13, 14]


def test_lite2_has_21_blocks_with_the_same_stage_strides():
    blocks = efficientnet_lite.blocks_of(state_of("efficientnet_lite2"))
    assert len(blocks) == 21
    assert [block.strides for block in blocks if block.strides != 1] == [2, 2, 2, 2]
    assert blocks[0].input_filters == 32 and blocks[-1].output_filters == 352


def correlate(image: np.ndarray, torch_kernel: np.ndarray) -> np.ndarray:
    """torch's conv2d ("valid", stride 1) straight from its (out, in, kh, kw) layout: an independent reference."""
    out, _, height, width = torch_kernel.shape
    rows, columns = image.shape[0] - height + 1, image.shape[1] - width + 1
    result = np.zeros((rows, columns, out), np.float64)
    for dy in range(height):
        for dx in range(width):
            result += np.einsum("yxi,oi->yxo", image[dy:dy + rows, dx:dx + columns], torch_kernel[:, :, dy, dx])
    return result


def test_conv_and_depthwise_kernels_are_turned_into_keras_layout(lite0):
    from keras import layers

    weights = efficientnet_lite.keras_weights(lite0, efficientnet_lite.blocks_of(lite0))
    stem, depthwise = lite0["_conv_stem.weight"], lite0["_blocks.3._depthwise_conv.weight"]
    assert weights["stem_conv"][0].shape == (3, 3, 3, 32)
    assert weights["stem_conv"][0][0, 2, 1, 5] == stem[5, 1, 0, 2]  # (out, in, kh, kw) -> (kh, kw, in, out)
    assert weights["block3_depthwise_conv"][0].shape == (5, 5, 144, 1)
    assert weights["block3_depthwise_conv"][0][1, 4, 7, 0] == depthwise[7, 0, 1, 4]  # (c, 1, kh, kw) -> (kh, kw, c, 1)

    image = np.random.default_rng(0).normal(size=(9, 9, 144)).astype(np.float32)
    convolution = layers.Conv2D(32, 3, use_bias=False)
    convolution.build((None, 9, 9, 3))
    convolution.set_weights(weights["stem_conv"])
    np.testing.assert_allclose(np.asarray(convolution(image[None, :, :, :3]))[0], correlate(image[..., :3], stem),
                               rtol=1e-4, atol=1e-4)
    per_channel = layers.DepthwiseConv2D(5, use_bias=False)
    per_channel.build((None, 9, 9, 144))
    per_channel.set_weights(weights["block3_depthwise_conv"])
    expected = np.stack([correlate(image[..., [channel]], depthwise[[channel]])[..., 0] for channel in range(144)], -1)
    np.testing.assert_allclose(np.asarray(per_channel(image[None]))[0], expected, rtol=1e-4, atol=1e-4)


def test_batch_norm_weights_are_in_keras_order(lite0):
    weights = efficientnet_lite.keras_weights(lite0, efficientnet_lite.blocks_of(lite0))
    for got, name in zip(weights["block5_expand_bn"], ("weight", "bias", "running_mean", "running_var")):
        np.testing.assert_array_equal(got, lite0[f"_blocks.5._bn0.{name}"])  # gamma, beta, moving mean, variance


def without_blocks(state: dict[str, np.ndarray], first: int) -> dict[str, np.ndarray]:
    return {name: value for name, value in state.items()
            if not (name.startswith("_blocks.") and int(name.split(".")[1]) >= first)}


@pytest.mark.parametrize("change, message", [
    (lambda state: without_blocks(state, 15), "has 6 stages, EfficientNet-Lite has 7"),  # no 320-filter stage
    (lambda state: without_blocks(state, 0), "has 0 stages"),
    (lambda state: {**state, "_blocks.13._project_conv.weight": np.zeros((200, 1152, 1, 1), np.float32)},
     "more than 7 stages"),
])
def test_a_state_dict_with_the_wrong_number_of_stages_is_refused(lite0, change, message):
    with pytest.raises(ValueError, match=message):
        efficientnet_lite.blocks_of(change(lite0))


def test_weights_of_the_wrong_shape_are_named_by_layer(lite0):
    state = {**lite0, "_bn1.weight": np.zeros(1000, np.float32)}
    with pytest.raises(ValueError, match="layer top_bn"):
        efficientnet_lite.from_state_dict("efficientnet_lite0", state, 32)
