#!/usr/bin/python3
"""Tiny PyTorch classifiers exported with torch.onnx.export, for the channel-group tests (test/channels.test.ts).

Run:  /usr/bin/python3 test/helpers/channel-fixtures.py OUT_DIR
Writes OUT_DIR/<name>.onnx for every model below (opset 13, BatchNorm kept as nodes, free batch axis).
Weights and BatchNorm statistics are random (seeded), so every channel carries a distinct signal.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout, k=3, stride=1, padding=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False), nn.BatchNorm2d(cout))


class Residual(nn.Module):
    """stem; an identity block (stem and block1.conv2 share channels); a strided block with a 1x1 shortcut."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.b1c1 = conv_bn(8, 8)
        self.b1c2 = conv_bn(8, 8)
        self.b2c1 = conv_bn(8, 12, stride=2)
        self.b2c2 = conv_bn(12, 12)
        self.b2short = conv_bn(8, 12, k=1, stride=2, padding=0)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.b1c2(F.relu(self.b1c1(x))))
        x = F.relu(self.b2c2(F.relu(self.b2c1(x))) + self.b2short(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Depthwise(nn.Module):
    """MobileNetV2-style: inverted residual with ReLU6 (Clip), depthwise 3x3, linear projection; a second
    block whose depthwise conv has channel multiplier 2 (groups = in channels, out = 2 x in)."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.ir1_expand = conv_bn(8, 16, k=1, padding=0)
        self.ir1_dw = conv_bn(16, 16, groups=16)
        self.ir1_project = conv_bn(16, 8, k=1, padding=0)
        self.ir2_expand = conv_bn(8, 6, k=1, padding=0)
        self.ir2_dw = conv_bn(6, 12, stride=2, groups=6)
        self.ir2_project = conv_bn(12, 10, k=1, padding=0)
        self.fc = nn.Linear(10, 10)

    def forward(self, x):
        x = F.relu6(self.stem(x))
        x = x + self.ir1_project(F.relu6(self.ir1_dw(F.relu6(self.ir1_expand(x)))))
        x = self.ir2_project(F.relu6(self.ir2_dw(F.relu6(self.ir2_expand(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Concat(nn.Module):
    """Two branches and the input concatenated along channels (offsets 0, 4 and 7), a conv on the result,
    and that conv's output concatenated with itself (the same channels at two offsets) before the classifier."""

    def __init__(self):
        super().__init__()
        self.a = conv_bn(3, 4)
        self.b = conv_bn(3, 6, k=1, padding=0)
        self.d = nn.Conv2d(13, 8, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        c = torch.cat([F.relu(self.a(x)), x, F.relu(self.b(x))], 1)
        d = F.relu(self.d(c))
        e = torch.cat([d, d], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(e, 1), 1))


class FlattenGemm(nn.Module):
    """conv, MaxPool; conv without padding, BatchNorm, Sigmoid (a removed channel is 0.5, not 0); a literal
    view(-1, 8*4*4) (its shape constant carries the channel count) into fc1; fc2 is the output layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=0)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 4 * 4, 20)
        self.fc2 = nn.Linear(20, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.sigmoid(self.bn2(self.conv2(x)))
        return self.fc2(F.relu(self.fc1(x.view(-1, 8 * 4 * 4))))


class BnShift(nn.Module):
    """Conv (with bias), BatchNorm, ReLU, then a 1x1 conv without padding (a constant left by a removed
    channel folds into its bias exactly), then a padded 3x3 conv (it does not)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.conv3 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.conv3(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Unprunable(nn.Module):
    """Channels onnx-hydra must leave alone: a Softmax over channels, a grouped conv (groups=2), a reshape
    that splits the channel axis, and the output layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.conv3 = nn.Conv2d(8, 4, 3, padding=1)
        self.conv4 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8 + 8, 10)

    def forward(self, x):
        x = F.relu(self.conv2(torch.softmax(self.conv1(x), dim=1)))
        x = F.relu(self.gconv(x))
        y = F.relu(self.conv4(F.relu(self.conv3(x))))
        z = y.reshape(y.shape[0], 2, 2 * 8 * 8).mean(dim=1)      # the two halves of the channels are summed
        return self.fc(torch.cat([y.flatten(1)[:, : 4 * 8 * 8 // 2], z, x.mean(dim=(2, 3))], 1))


class Tokens(nn.Module):
    """conv; its channels as token features ([N, H*W, C]: flatten(2) and a Transpose); Linear layers on 3-D
    input (MatMul + Add; l2 without bias: a bare MatMul) with Sigmoids between (a removed channel carries
    Sigmoid(0) = 0.5 into the next MatMul); the mean over tokens into the output layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.l1 = nn.Linear(8, 12)
        self.l2 = nn.Linear(12, 9, bias=False)
        self.l3 = nn.Linear(9, 6)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)
        t = self.l3(torch.sigmoid(self.l2(torch.sigmoid(self.l1(t)))))
        return self.fc(t.mean(dim=1))


MODELS = {
    'residual': (Residual, (3, 16, 16)),
    'depthwise': (Depthwise, (3, 16, 16)),
    'concat': (Concat, (3, 8, 8)),
    'flatten_gemm': (FlattenGemm, (1, 12, 12)),
    'bn_shift': (BnShift, (3, 8, 8)),
    'unprunable': (Unprunable, (3, 8, 8)),
    'tokens': (Tokens, (3, 6, 6)),
}


def export(name, out_dir):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = os.path.join(out_dir, f'{name}.onnx')
    torch.onnx.export(model, torch.rand(1, *shape), path, opset_version=13,
                      input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
    print(path)


if __name__ == '__main__':
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for n in sys.argv[2:] or list(MODELS):
        export(n, out)
