#!/usr/bin/python3
"""Train the small CNN on Fashion-MNIST in PyTorch (PGD adversarial training), export it with
torch.onnx.export, and record PyTorch's own benign and PGD-20 accuracy on the 10k test set beside it.

Run:  /usr/bin/python3 models/train_fashion_cnn.py
Writes models/fashion_cnn.onnx and models/fashion_cnn.reference.json. `onnx-hydra verify` is tested
against these numbers: a model trained and evaluated by a framework that is not onnx-hydra.
"""
import gzip
import json
import os
import time

import torch
import torch.nn.functional as F

from export_models import SmallCNN

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, '..', 'data', 'fashion-mnist')
EPS, PGD_STEPS = 0.1, 20
PGD_ALPHA = 2.5 * EPS / PGD_STEPS  # onnx-hydra's default step for PGD-20 at eps 0.1


def idx(name):
    with gzip.open(os.path.join(DATA, name), 'rb') as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load(split):
    x = idx(f'{split}-images-idx3-ubyte.gz').float() / 255.0
    y = idx(f'{split}-labels-idx1-ubyte.gz').long()
    return x.unsqueeze(1), y


def pgd(model, x, y, eps, alpha, steps, gen):
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    xa = (x + delta).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction='sum')
        (g,) = torch.autograd.grad(loss, xa)
        xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    xtr, ytr = load('train')
    xte, yte = load('t10k')
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    epochs, bs, n = 3, 128, 30000
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * ((n + bs - 1) // bs))
    t0 = time.time()
    for ep in range(epochs):
        perm = torch.randperm(len(ytr), generator=gen)[:n]
        model.train()
        for i in range(0, n, bs):
            b = perm[i:i + bs]
            x, y = xtr[b], ytr[b]
            model.eval()
            xa = pgd(model, x, y, EPS, 0.025, 7, gen)  # Madry PGD-7 adversarial training
            model.train()
            loss = F.cross_entropy(model(xa), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f'epoch {ep + 1}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)', flush=True)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xte[i:i + 1000]).argmax(1) for i in range(0, len(yte), 1000)])
    correct = int((pred == yte).sum())
    robust = 0
    t1 = time.time()
    for i in range(0, len(yte), 500):
        xa = pgd(model, xte[i:i + 500], yte[i:i + 500], EPS, PGD_ALPHA, PGD_STEPS, gen)
        with torch.no_grad():
            robust += int((model(xa).argmax(1) == yte[i:i + 500]).sum())
    pgd_s = time.time() - t1
    path = os.path.join(HERE, 'fashion_cnn.onnx')
    torch.onnx.export(model, xte[:2], path, opset_version=13, input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}})
    ref = {
        'torch_version': torch.__version__,
        'training': f'PGD-7 adversarial training (Madry), eps {EPS}, step 0.025, {epochs} epochs on {n} training images, SGD lr 0.05 cosine',
        'test_images': len(yte),
        'benign_correct': correct,
        'benign_acc': correct / len(yte),
        'predictions': ''.join(str(int(p)) for p in pred),
        'pgd': {'eps': EPS, 'alpha': PGD_ALPHA, 'steps': PGD_STEPS, 'restarts': 1, 'random_start': True, 'norm': 'linf'},
        'pgd_correct': robust,
        'pgd_acc': robust / len(yte),
        'pgd_seconds_1_thread': pgd_s,
    }
    with open(os.path.join(HERE, 'fashion_cnn.reference.json'), 'w') as f:
        json.dump(ref, f, indent=1)
    print(f'benign {correct}/{len(yte)}, PGD-{PGD_STEPS} {robust}/{len(yte)}; wrote {path}')


if __name__ == '__main__':
    main()
