#!/usr/bin/env python3
"""PyTorch definitions of the CIFAR-10 models in kiln's zoo (data/models/), with the module
names kiln's specs use, so that a state_dict saved as safetensors loads into kiln by name.

ResNet-18, VGG-16 and MobileNetV2 follow kuangliu/pytorch-cifar (models/resnet.py, vgg.py,
mobilenetv2.py); ResNet-56 and ResNet-110 follow akamaster/pytorch_resnet_cifar10 with the
paper's option B shortcuts (a 1x1 conv + batchnorm where the shape changes). Parameter
counts (sum of numel over parameters(), printed by running this file):

    resnet18     11,173,962
    vgg16        14,728,266
    mobilenetv2   2,296,922
    resnet56        855,770
    resnet110     1,730,714

Usage: cifar_models.py            prints each model's parameter count
       build(name)                one of NAMES, randomly initialized by PyTorch's defaults
"""
import torch.nn as nn
import torch.nn.functional as F

NAMES = ("resnet18", "vgg16", "mobilenetv2", "resnet56", "resnet110")
PARAMS = {"resnet18": 11173962, "vgg16": 14728266, "mobilenetv2": 2296922, "resnet56": 855770, "resnet110": 1730714}


def conv_bn_shortcut(in_planes, planes, stride):
    """The projection where a block changes shape (shortcut.0, shortcut.1); an identity
    (an empty Sequential, no parameters) otherwise."""
    if stride == 1 and in_planes == planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    """Two 3x3 convs with batchnorm, the first with the block's stride, plus the shortcut."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = conv_bn_shortcut(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def stage(in_planes, planes, blocks, stride):
    """`blocks` basic blocks, the first with `stride`."""
    return nn.Sequential(*[BasicBlock(in_planes if k == 0 else planes, planes, stride if k == 0 else 1)
                           for k in range(blocks)])


class ResNet18(nn.Module):
    """kuangliu's ResNet18: a 3x3 stem at full resolution, four stages of two blocks (64, 128,
    256, 512 channels), a 4x4 average pool over the last 4x4 map, a linear classifier."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = stage(64, 64, 2, 1)
        self.layer2 = stage(64, 128, 2, 2)
        self.layer3 = stage(128, 256, 2, 2)
        self.layer4 = stage(256, 512, 2, 2)
        self.linear = nn.Linear(512, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet-(6n+2) as akamaster writes it, option B shortcuts: a 16-channel
    3x3 stem, three stages of n blocks (16, 32, 64 channels), an average over the whole 8x8
    map, a linear classifier."""

    def __init__(self, blocks_per_stage, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = stage(16, 16, blocks_per_stage, 1)
        self.layer2 = stage(16, 32, blocks_per_stage, 2)
        self.layer3 = stage(32, 64, blocks_per_stage, 2)
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size(3))
        return self.linear(out.flatten(1))


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """kuangliu's VGG('VGG16'): features.N counts every module of the Sequential (conv, bn,
    relu per number; one maxpool per 'M'; a final 1x1 average pool), then classifier."""

    def __init__(self, cfg=VGG16_CFG, classes=10):
        super().__init__()
        layers = []
        channels = 3
        for entry in cfg:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, entry, 3, padding=1), nn.BatchNorm2d(entry), nn.ReLU(inplace=True)]
                channels = entry
        layers.append(nn.AvgPool2d(1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class InvertedResidual(nn.Module):
    """kuangliu's MobileNetV2 Block: 1x1 expand, 3x3 depthwise with the stride, 1x1 project;
    the residual only at stride 1, through a conv + bn where the channels change."""

    def __init__(self, in_planes, out_planes, expansion, stride):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


# (expansion, out channels, blocks, first block's stride); CIFAR's strides: stride 1 in the
# stem and in the second group, so that 32x32 ends at 4x4.
MOBILENETV2_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                   (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks = []
        channels = 32
        for expansion, out_planes, count, first_stride in MOBILENETV2_CFG:
            for k in range(count):
                blocks.append(InvertedResidual(channels, out_planes, expansion, first_stride if k == 0 else 1))
                channels = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


def build(name, classes=10):
    """One of NAMES, with PyTorch's default initialization."""
    makers = {
        "resnet18": lambda: ResNet18(classes),
        "vgg16": lambda: VGG(VGG16_CFG, classes),
        "mobilenetv2": lambda: MobileNetV2(classes),
        "resnet56": lambda: CifarResNet(9, classes),
        "resnet110": lambda: CifarResNet(18, classes),
    }
    if name not in makers:
        raise ValueError(f"unknown model '{name}'; one of {', '.join(NAMES)}")
    return makers[name]()


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    for name in NAMES:
        count = parameter_count(build(name))
        print(f"{name:12s} {count:>12,}{'' if count == PARAMS[name] else f'  (published: {PARAMS[name]:,})'}")
