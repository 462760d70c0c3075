"""Compact PyTorch reference of the HRNetV2 trunk (HighResolutionNet up to stage 4), written for the tests from the
structure of the official code: HRNet-Image-Classification lib/models/cls_hrnet.py (the ImageNet checkpoints) and
NVIDIA semantic-segmentation network/hrnetv2.py (the trunk EAR-Net trains). Same modules, so the same state-dict
keys: conv1/bn1, conv2/bn2, layer1.{b}, transition{t}.{i}, stage{s}.{m}.branches / fuse_layers.

Upsampling in the fuse layers: bilinear to the target branch's size with align_corners=False, as NVIDIA's
hrnetv2.py (`F.interpolate(..., mode='bilinear', align_corners=cfg.MODEL.ALIGN_CORNERS)`, False by default) and
tfseg's ResizeLike (half-pixel centres, no antialiasing). The classification repository's cls_hrnet.py has
`nn.Upsample(scale_factor=2**(j-i), mode='nearest')` there instead: its ImageNet weights were trained with nearest
upsampling, and the segmentation trunk (NVIDIA's, EAR-Net's, tfseg's) runs them with bilinear; the weights are
the same tensors either way. The classification head (incre_modules, downsamp_modules, final_layer, classifier) is
left out: `head_state_dict` makes random tensors under its keys for the conversion tests.

Only the tests use it (tests/test_convert_hrnet.py); it needs torch.
"""

import torch
import torch.nn.functional as F
from torch import nn

# experiments/cls_hrnet_{w48,w18,w18_small_v1}_sgd_lr5e-2_wd1e-4_bs32_x100.yaml: stage 1 (bottleneck blocks,
# planes), stages 2-4 (modules, basic blocks per branch, branch widths)
CONFIGS = {
    "w48": ((4, 64), ((1, 4, (48, 96)), (4, 4, (48, 96, 192)), (3, 4, (48, 96, 192, 384)))),
    "w18": ((4, 64), ((1, 4, (18, 36)), (4, 4, (18, 36, 72)), (3, 4, (18, 36, 72, 144)))),
    "small": ((1, 32), ((1, 2, (16, 32)), (1, 2, (16, 32, 64)), (1, 2, (16, 32, 64, 128)))),
}


def conv_bn(cin, cout, kernel, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


class Block(nn.Module):
    """BasicBlock (expansion 1) or Bottleneck (expansion 4); `downsample`: 1x1 conv + BN when the width changes."""

    def __init__(self, cin, planes, bottleneck):
        super().__init__()
        cout = planes * (4 if bottleneck else 1)
        widths = [cin, planes, planes, cout] if bottleneck else [cin, planes, cout]
        kernels = [1, 3, 1] if bottleneck else [3, 3]
        for index, kernel in enumerate(kernels, 1):
            setattr(
                self, f"conv{index}", nn.Conv2d(widths[index - 1], widths[index], kernel, 1, kernel // 2, bias=False)
            )
            setattr(self, f"bn{index}", nn.BatchNorm2d(widths[index]))
        self.count = len(kernels)
        self.downsample = conv_bn(cin, cout, 1, relu=False) if cin != cout else None

    def forward(self, x):
        y = x
        for index in range(1, self.count + 1):
            y = getattr(self, f"bn{index}")(getattr(self, f"conv{index}")(y))
            y = F.relu(y) if index < self.count else y
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Module(nn.Module):
    """HighResolutionModule: a stack of basic blocks per branch, then every branch brought to every other one
    (j > i: 1x1 conv-BN, bilinear up; j < i: stride-2 3x3 conv-BN, ReLU between them) and summed, ReLU."""

    def __init__(self, blocks, widths):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*(Block(w, w, False) for _ in range(blocks))) for w in widths)
        self.fuse_layers = nn.ModuleList()
        for i, target in enumerate(widths):
            row = nn.ModuleList()
            for j, source in enumerate(widths):
                if j > i:
                    row.append(conv_bn(source, target, 1, relu=False))
                elif j == i:
                    row.append(None)
                else:
                    steps = [conv_bn(source, source, 3, 2) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*steps, conv_bn(source, target, 3, 2, relu=False)))
            self.fuse_layers.append(row)

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            total = xs[i]
            for j, layer in enumerate(row):
                if j > i:
                    total = total + F.interpolate(
                        layer(xs[j]), size=xs[i].shape[2:], mode="bilinear", align_corners=False
                    )
                elif j < i:
                    total = total + layer(xs[j])
            out.append(F.relu(total))
        return out


class HRNetTrunk(nn.Module):
    """Stem (two stride-2 3x3 conv-BN-ReLU, 64 channels), layer1 (bottlenecks), then per stage a transition (a
    3x3 conv-BN-ReLU for an existing branch whose width changes, a stride-2 one from the lowest branch for the new
    branch, nested one Sequential deeper as in the original) and its modules. Returns the four stage-4 branches."""

    def __init__(self, config="small"):
        super().__init__()
        (blocks, planes), stages = CONFIGS[config]
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(*(Block(64 if b == 0 else 4 * planes, planes, True) for b in range(blocks)))
        previous = [4 * planes]
        for index, (modules, stage_blocks, widths) in enumerate(stages, 1):
            transition = nn.ModuleList(
                (conv_bn(previous[i], w, 3) if previous[i] != w else None)
                if i < len(previous)
                else nn.Sequential(conv_bn(previous[-1], w, 3, 2))
                for i, w in enumerate(widths)
            )
            setattr(self, f"transition{index}", transition)
            setattr(self, f"stage{index + 1}", nn.Sequential(*(Module(stage_blocks, widths) for _ in range(modules))))
            previous = list(widths)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        xs = [self.layer1(x)]
        for index in (1, 2, 3):
            transition = getattr(self, f"transition{index}")
            xs = [
                (layer(xs[min(i, len(xs) - 1)]) if layer is not None else xs[i]) for i, layer in enumerate(transition)
            ]
            xs = getattr(self, f"stage{index + 1}")(xs)
        return xs


def head_state_dict(seed=0):
    """Random tensors under keys of the ImageNet classification head (a few of each module; the conversion only
    has to report them as unused)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "incre_modules.0.0.conv1.weight": (32, 18, 1, 1),
        "incre_modules.0.0.bn1.running_mean": (32,),
        "incre_modules.3.0.downsample.1.num_batches_tracked": (),
        "downsamp_modules.0.0.weight": (256, 128, 3, 3),
        "downsamp_modules.2.1.bias": (1024,),
        "final_layer.0.weight": (2048, 1024, 1, 1),
        "final_layer.1.running_var": (2048,),
        "classifier.weight": (1000, 2048),
        "classifier.bias": (1000,),
    }
    return {key: torch.randn(shape, generator=g) for key, shape in shapes.items()}
