#!/usr/bin/python3
"""Export torchvision classifiers at CIFAR size (3x32x32, 10 classes, random weights) with torch.onnx.export.

Run:  /usr/bin/python3 models/export_torchvision.py OUT_DIR [NAME ...]
Debian's python3-torch 1.13 and python3-torchvision 0.14. The files are large (vit_b_16: 86 M parameters,
344 MB), so they are not committed: the real-architecture tests export them into a temporary folder when
PyTorch is installed. BatchNorm stays a separate node (TrainingMode.PRESERVE), the batch axis is free.
"""
import os
import sys

import torch
import torchvision.models as tvm

# name -> constructor at 32x32 with 10 classes (opset: the lowest one torch 1.13 exports the model with)
MODELS = {
    'resnet18': (lambda: tvm.resnet18(num_classes=10), 13),
    'mobilenet_v2': (lambda: tvm.mobilenet_v2(num_classes=10), 13),
    'mobilenet_v3_small': (lambda: tvm.mobilenet_v3_small(num_classes=10), 13),
    'efficientnet_b0': (lambda: tvm.efficientnet_b0(num_classes=10), 13),
    'shufflenet_v2_x0_5': (lambda: tvm.shufflenet_v2_x0_5(num_classes=10), 13),
    'densenet121': (lambda: tvm.densenet121(num_classes=10), 13),
    'vit_b_16': (lambda: tvm.vit_b_16(image_size=32, num_classes=10), 14),
    'swin_t': (lambda: tvm.swin_t(num_classes=10), 14),
    # a CIFAR-size ViT (the usual "small ViT" of robustness papers: patch 4, 6 layers, width 256), from torchvision's class
    'vit_small': (lambda: tvm.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=8, hidden_dim=256, mlp_dim=512, num_classes=10), 14),
}


def export(name, out_dir):
    make, opset = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    # random BatchNorm statistics, so that inference-mode BN is exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = os.path.join(out_dir, f'{name}.onnx')
    torch.onnx.export(model, torch.rand(1, 3, 32, 32), path, opset_version=opset,
                      input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
    print(path)


if __name__ == '__main__':
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'torchvision')
    os.makedirs(out, exist_ok=True)
    for n in sys.argv[2:] or list(MODELS):
        export(n, out)
