"""MAC counts against hand computations."""

from torch import nn

from kdedge.bench.macs import count_macs
from kdedge.models import build_model


def test_mlp_macs_are_the_weight_count_without_biases():
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=28, widths=[32])
    assert count_macs(model, (1, 28, 28)) == 784 * 32 + 32 * 10


def test_cnn_macs_hand_computed():
    # stage c: 3x3 conv at the stage's input size (28, 14, 7), pooling halves after it
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=28, channels=[16, 32, 64])
    expected = 9 * 1 * 16 * 28 * 28 + 9 * 16 * 32 * 14 * 14 + 9 * 32 * 64 * 7 * 7 + 64 * 10
    assert count_macs(model, (1, 28, 28)) == expected


def test_grouped_and_strided_conv():
    model = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4), nn.Flatten(), nn.Linear(16 * 4 * 4, 5))
    assert count_macs(model, (8, 8, 8)) == 3 * 3 * 2 * 16 * 4 * 4 + 256 * 5
