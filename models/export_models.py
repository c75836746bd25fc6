#!/usr/bin/python3
"""Export the sample models in this folder with torch.onnx.export (Debian's python3-torch 1.13).

Run:  /usr/bin/python3 models/export_models.py
Writes models/*.onnx and models/reference.json (a fixed input batch and PyTorch's own logits for each
model, so tests can compare the converted graph with PyTorch directly, not only with onnxruntime).
Weights are random (seeded); BatchNorm running statistics are randomised too so inference-mode BN is
exercised. Training happens in onnx-hydra itself.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


class SmallCNN(nn.Module):
    """HYDRA's / Wong & Kolter's small MNIST CNN: conv16 4x4 s2, conv32 4x4 s2, fc100, fc10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = x.view(x.size(0), -1)  # the Shape→Gather→Unsqueeze→Concat→Reshape chain
        return self.fc2(F.relu(self.fc1(x)))


class VGGBN(nn.Module):
    """VGG-style: conv-BN-ReLU pairs, MaxPool, for 3x32x32 inputs."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(3, 16), *block(16, 16), nn.MaxPool2d(2),
            *block(16, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.short is None else self.short(x)))


class ResNetSmall(nn.Module):
    """ResNet-style: residual Add, strided shortcut convs, GlobalAveragePool; 1x28x28 input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 64, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x)


class OpsZoo(nn.Module):
    """Many op forms whose ONNX encoding changes across opsets 11/13/17 (Clip, Softmax, Unsqueeze, Squeeze,
    ReduceMean, Pad, Split...) and attribute corners (groups, dilation, ceil_mode, count_include_pad)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.dw = nn.Conv2d(12, 12, 3, padding=2, dilation=2, groups=12)
        self.gconv = nn.Conv2d(12, 12, 3, stride=2, padding=(1, 0), groups=3)
        self.bn = nn.BatchNorm2d(12)
        self.prelu = nn.PReLU(12)
        self.up = nn.ConvTranspose2d(12, 6, 3, stride=2, padding=1, output_padding=1)
        self.fc = nn.Linear(6 * 3 * 3 + 12, 10)

    def forward(self, x):
        x = F.pad(x, (1, 2, 0, 1))                                 # asymmetric constant Pad
        x = F.relu6(self.conv(x))                                  # Clip
        x = self.bn(self.dw(x))
        x = F.leaky_relu(x, 0.1) + F.elu(x) * 0.5
        a, b = torch.split(x, [5, 7], dim=1)                       # Split
        x = torch.cat([torch.sigmoid(a), torch.tanh(b)], 1)        # Concat
        x = self.prelu(self.gconv(x))                              # grouped conv, PReLU
        x = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        x = F.gelu(x)                                              # Erf
        g = x.mean(dim=(2, 3))                                     # ReduceMean
        y = F.max_pool2d(self.up(x), 2, stride=2, ceil_mode=True)  # ConvTranspose, MaxPool ceil_mode
        y = F.avg_pool2d(y, 2)                                     # 6x6 -> 3x3
        n = y.size(0)
        y = y.permute(0, 2, 3, 1).reshape(n, -1)                   # Transpose, Reshape via Shape chain
        z = torch.sqrt(g.pow(2) + 1.0).unsqueeze(2).squeeze(2)     # Pow, Sqrt, Unsqueeze, Squeeze
        logits = self.fc(torch.cat([y, z], 1))
        return F.log_softmax(logits, dim=1)


def randomize_bn(m: nn.Module, gen: torch.Generator) -> None:
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) * 0.5 + 0.75)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)


MODELS = [
    # file, class, input shape (C,H,W), opset, constant folding
    # (BatchNorm is kept as its own node: exported with TrainingMode.PRESERVE, see main())
    ('small_cnn.onnx', SmallCNN, (1, 28, 28), 13, True),
    ('small_cnn_nofold.onnx', SmallCNN, (1, 28, 28), 13, False),
    ('vgg_bn.onnx', VGGBN, (3, 32, 32), 13, True),
    ('resnet_small.onnx', ResNetSmall, (1, 28, 28), 13, True),
    ('mlp.onnx', MLP, (1, 28, 28), 13, True),
    ('ops_zoo_opset11.onnx', OpsZoo, (3, 20, 18), 11, True),
    ('ops_zoo_opset13.onnx', OpsZoo, (3, 20, 18), 13, True),
    ('ops_zoo_opset17.onnx', OpsZoo, (3, 20, 18), 17, True),
]


def main() -> None:
    reference = {}
    for fname, cls, chw, opset, fold in MODELS:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        model = cls()
        randomize_bn(model, gen)
        model.eval()
        x = torch.rand((2,) + chw, generator=gen)
        with torch.no_grad():
            y = model(x)
        path = os.path.join(HERE, fname)
        # PRESERVE on an eval-mode model exports inference-form BatchNormalization nodes instead of
        # folding BN into the preceding Conv (what the default EVAL mode does), so BN stays trainable.
        torch.onnx.export(
            model, x, path, opset_version=opset, do_constant_folding=fold,
            training=torch.onnx.TrainingMode.PRESERVE,
            input_names=['input'], output_names=['logits'],
            dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}},
        )
        reference[fname] = {
            'opset': opset,
            'input_shape': list(x.shape),
            'input': [round(v, 7) for v in x.flatten().tolist()],
            'torch_output': [round(v, 7) for v in y.flatten().tolist()],
        }
        print(f'{fname}: opset {opset}, folding {fold}, {os.path.getsize(path)} bytes')
    with open(os.path.join(HERE, 'reference.json'), 'w') as f:
        json.dump({'torch_version': torch.__version__, 'models': reference}, f)


if __name__ == '__main__':
    main()
