"""Compact PyTorch reference of the original PraNet-Res2Net (lib/PraNet_Res2Net.py on lib/Res2Net_v1b.py), written
independently from ../shared/reference/pranet_res2net_state_dict.tsv, with the original's state-dict keys; and of
PraNet on the original's ResNet50 (lib/ResNet.py: torchvision's layout, stride on the 3x3 conv).

The parity tests (tests/test_convert.py) and the side-by-side benchmark (benchmarks/versus_torch.py) use it; it
needs torch.
"""

import torch
import torch.nn.functional as F
from torch import nn

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (planes, blocks, stride) of layer1-4


def interp(x, scale):
    """F.interpolate as PraNet.forward calls it: bilinear, align_corners not passed (False)."""
    return F.interpolate(x, scale_factor=scale, mode="bilinear")


def up2(x):
    """agg1.upsample: x2 bilinear, align_corners=True."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Bottle2neck(nn.Module):
    def __init__(self, inplanes, planes, stride, stage):
        super().__init__()
        self.width, self.stride, self.stage = planes * 26 // 64, stride, stage
        w = self.width
        self.conv1, self.bn1 = nn.Conv2d(inplanes, 4 * w, 1, bias=False), nn.BatchNorm2d(4 * w)
        self.convs = nn.ModuleList(nn.Conv2d(w, w, 3, stride, 1, bias=False) for _ in range(3))
        self.bns = nn.ModuleList(nn.BatchNorm2d(w) for _ in range(3))
        self.conv3, self.bn3 = nn.Conv2d(4 * w, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        if stage:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(inplanes, 4 * planes, 1, bias=False),
                nn.BatchNorm2d(4 * planes),
            )

    def forward(self, x):
        s = torch.split(F.relu(self.bn1(self.conv1(x))), self.width, dim=1)
        y = []
        for i in range(3):
            inp = s[i] if i == 0 or self.stage else y[-1] + s[i]
            y.append(F.relu(self.bns[i](self.convs[i](inp))))
        y.append(F.avg_pool2d(s[3], 3, self.stride, 1) if self.stage else s[3])
        out = self.bn3(self.conv3(torch.cat(y, dim=1)))
        return F.relu(out + (self.downsample(x) if self.stage else x))


class Res2Net50(nn.Module):
    """Returns the layer2, layer3, layer4 outputs (strides 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(STAGES, 1):
            setattr(
                self,
                f"layer{index}",
                nn.Sequential(
                    *(
                        Bottle2neck(inplanes if b == 0 else 4 * planes, planes, stride if b == 0 else 1, b == 0)
                        for b in range(blocks)
                    )
                ),
            )
            inplanes = 4 * planes
        self.fc = nn.Linear(2048, 1000)  # in the checkpoints, never called by PraNet

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x2 = self.layer2(self.layer1(x))
        x3 = self.layer3(x2)
        return x2, x3, self.layer4(x3)


class Bottleneck(nn.Module):
    """lib/ResNet.py's Bottleneck: 1x1, 3x3 (strided), 1x1 x4, projection shortcut on a block's first unit."""

    def __init__(self, inplanes, planes, stride, first):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        if first:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, 4 * planes, 1, stride, bias=False), nn.BatchNorm2d(4 * planes)
            )
        self.first = first

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.first else x))


class ResNet50(nn.Module):
    """Returns the layer2, layer3, layer4 outputs (strides 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(STAGES, 1):
            units = (
                Bottleneck(inplanes if b == 0 else 4 * planes, planes, stride if b == 0 else 1, b == 0)
                for b in range(blocks)
            )
            setattr(self, f"layer{index}", nn.Sequential(*units))
            inplanes = 4 * planes

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x2 = self.layer2(self.layer1(x))
        x3 = self.layer3(x2)
        return x2, x3, self.layer4(x3)


class BasicConv2d(nn.Module):
    """Conv (no bias) + BN; no activation."""

    def __init__(self, cin, cout, kernel, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class RFB(nn.Module):
    def __init__(self, cin, c=32):
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(cin, c, 1))
        for i, k in ((1, 3), (2, 5), (3, 7)):
            setattr(
                self,
                f"branch{i}",
                nn.Sequential(
                    BasicConv2d(cin, c, 1),
                    BasicConv2d(c, c, (1, k), (0, k // 2)),
                    BasicConv2d(c, c, (k, 1), (k // 2, 0)),
                    BasicConv2d(c, c, 3, k, k),
                ),
            )
        self.conv_cat = BasicConv2d(4 * c, c, 3, 1)
        self.conv_res = BasicConv2d(cin, c, 1)

    def forward(self, x):
        branches = [getattr(self, f"branch{i}")(x) for i in range(4)]
        return F.relu(self.conv_cat(torch.cat(branches, 1)) + self.conv_res(x))


class Aggregation(nn.Module):
    def __init__(self, c=32):
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv_upsample{i}", BasicConv2d(c, c, 3, 1))
        self.conv_upsample5 = BasicConv2d(2 * c, 2 * c, 3, 1)
        self.conv_concat2 = BasicConv2d(2 * c, 2 * c, 3, 1)
        self.conv_concat3 = BasicConv2d(3 * c, 3 * c, 3, 1)
        self.conv4 = BasicConv2d(3 * c, 3 * c, 3, 1)
        self.conv5 = nn.Conv2d(3 * c, 1, 1)

    def forward(self, x1, x2, x3):  # strides 32, 16, 8
        x2_1 = self.conv_upsample1(up2(x1)) * x2
        x3_1 = self.conv_upsample2(up2(up2(x1))) * self.conv_upsample3(up2(x2)) * x3
        x2_2 = self.conv_concat2(torch.cat([x2_1, self.conv_upsample4(up2(x1))], 1))
        x3_2 = self.conv_concat3(torch.cat([x3_1, self.conv_upsample5(up2(x2_2))], 1))
        return self.conv5(self.conv4(x3_2))


class PraNet(nn.Module):
    """forward(x) -> (lateral_map_5, lateral_map_4, lateral_map_3, lateral_map_2) logits, NCHW."""

    def __init__(self, c=32, backbone="res2net50"):
        super().__init__()
        self.resnet = {"res2net50": Res2Net50, "resnet50": ResNet50}[backbone]()
        self.rfb2_1, self.rfb3_1, self.rfb4_1 = RFB(512, c), RFB(1024, c), RFB(2048, c)
        self.agg1 = Aggregation(c)
        self.ra4_conv1 = BasicConv2d(2048, 256, 1)
        for i in (2, 3, 4):
            setattr(self, f"ra4_conv{i}", BasicConv2d(256, 256, 5, 2))
        self.ra4_conv5 = BasicConv2d(256, 1, 1)
        for name, cin in (("ra3", 1024), ("ra2", 512)):
            setattr(self, f"{name}_conv1", BasicConv2d(cin, 64, 1))
            setattr(self, f"{name}_conv2", BasicConv2d(64, 64, 3, 1))
            setattr(self, f"{name}_conv3", BasicConv2d(64, 64, 3, 1))
            setattr(self, f"{name}_conv4", BasicConv2d(64, 1, 3, 1))

    def reverse_attention(self, name, convs, feature, crop):
        x = (1 - torch.sigmoid(crop)) * feature
        x = getattr(self, f"{name}_conv1")(x)
        for i in range(2, convs):
            x = F.relu(getattr(self, f"{name}_conv{i}")(x))
        return getattr(self, f"{name}_conv{convs}")(x) + crop

    def forward(self, image):
        x2, x3, x4 = self.resnet(image)
        ra5 = self.agg1(self.rfb4_1(x4), self.rfb3_1(x3), self.rfb2_1(x2))
        x = self.reverse_attention("ra4", 5, x4, interp(ra5, 0.25))
        map4 = interp(x, 32)
        x = self.reverse_attention("ra3", 4, x3, interp(x, 2))
        map3 = interp(x, 16)
        x = self.reverse_attention("ra2", 4, x2, interp(x, 2))
        return interp(ra5, 8), map4, map3, interp(x, 8)


@torch.no_grad()
def randomize(model, seed=0):
    """Non-trivial random weights and BatchNorm statistics (gammas around 1, running_var in [0.5, 1.5])."""
    g = torch.Generator().manual_seed(seed)
    uniform = lambda t, low, high: t.copy_(low + (high - low) * torch.rand(t.shape, generator=g))
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
            if module.bias is not None:
                uniform(module.bias, -0.1, 0.1)
        elif isinstance(module, nn.BatchNorm2d):
            uniform(module.weight, 0.8, 1.2)
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=g))
            uniform(module.running_var, 0.5, 1.5)
            module.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (), generator=g)))
    return model
