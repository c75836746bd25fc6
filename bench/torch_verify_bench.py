#!/usr/bin/python3
"""The PyTorch side of `npm run bench:verify`: benign accuracy, PGD-20 and randomized-smoothing CERTIFY
(Cohen et al.'s algorithm, its sampling loop as in their code) on models/fashion_cnn.onnx's network and
weights, over the same Fashion-MNIST test images. Prints one JSON object with images/s per workload.
"""
import gzip
import json
import os
import sys
import time

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'models'))
from export_models import SmallCNN  # noqa: E402
from train_fashion_cnn import load, pgd  # noqa: E402

N_BENIGN = int(os.environ.get('BENCH_BENIGN', '10000'))
N_PGD = int(os.environ.get('BENCH_PGD', '2000'))
N_SMOOTH = int(os.environ.get('BENCH_SMOOTH', '10'))
SMOOTH_N = int(os.environ.get('BENCH_SMOOTH_N', '10000'))
BATCH = int(os.environ.get('BENCH_BATCH', '256'))


def main():
    # all cores, as onnx-hydra uses (Debian's build defaults to one thread)
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', os.cpu_count() or 1)))
    model = SmallCNN()
    m = onnx.load(os.path.join(HERE, '..', 'models', 'fashion_cnn.onnx'))
    state = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in m.graph.initializer}
    model.load_state_dict({k: state[k] for k in model.state_dict()})
    model.eval()
    x, y = load('t10k')
    out = {'torch_version': torch.__version__, 'threads': torch.get_num_threads()}
    t = time.perf_counter()
    correct = 0
    with torch.no_grad():
        for i in range(0, N_BENIGN, BATCH):
            correct += int((model(x[i:i + BATCH]).argmax(1) == y[i:i + BATCH]).sum())
    out['benign'] = {'img_s': N_BENIGN / (time.perf_counter() - t), 'acc': correct / N_BENIGN}
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    robust = 0
    for i in range(0, N_PGD, BATCH):
        xa = pgd(model, x[i:i + BATCH], y[i:i + BATCH], 0.1, 0.0125, 20, gen)
        with torch.no_grad():
            robust += int((model(xa).argmax(1) == y[i:i + BATCH]).sum())
    out['pgd20'] = {'img_s': N_PGD / (time.perf_counter() - t), 'acc': robust / N_PGD}
    # the same early stopping as onnx-hydra's verify: only correctly classified examples are attacked, and
    # an example leaves the batch when an iterate is misclassified (the logits come with each gradient)
    t = time.perf_counter()
    robust = 0
    for i in range(0, N_PGD, BATCH):
        xb, yb = x[i:i + BATCH], y[i:i + BATCH]
        with torch.no_grad():
            keep = model(xb).argmax(1) == yb
        xc, yc = xb[keep], yb[keep]
        xa = (xc + (torch.rand(xc.shape, generator=gen) * 2 - 1) * 0.1).clamp(0, 1)
        for step in range(21):
            xa.requires_grad_()
            logits = model(xa)
            ok = logits.argmax(1) == yc
            if step == 20 or not bool(ok.any()):
                robust += int(ok.sum())
                break
            g = torch.autograd.grad(F.cross_entropy(logits, yc, reduction='sum'), [xa])[0]
            xa, xc, yc, g = xa.detach()[ok], xc[ok], yc[ok], g[ok]
            xa = torch.min(torch.max(xa + 0.0125 * g.sign(), xc - 0.1), xc + 0.1).clamp(0, 1)
    out['pgd20_early_stop'] = {'img_s': N_PGD / (time.perf_counter() - t), 'acc': robust / N_PGD}
    t = time.perf_counter()
    sigma, bs = 0.25, 1000
    with torch.no_grad():
        for i in range(N_SMOOTH):
            for num in (100, SMOOTH_N):
                counts = torch.zeros(10, dtype=torch.long)
                remaining = num
                while remaining > 0:
                    b = min(bs, remaining)
                    batch = x[i:i + 1].repeat(b, 1, 1, 1)
                    noise = torch.randn_like(batch) * sigma
                    counts += torch.bincount(model(batch + noise).argmax(1), minlength=10)
                    remaining -= b
    out['smoothing'] = {'img_s': N_SMOOTH / (time.perf_counter() - t), 'n': SMOOTH_N}
    print(json.dumps(out))


if __name__ == '__main__':
    main()
