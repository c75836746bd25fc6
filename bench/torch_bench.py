#!/usr/bin/python3
"""The PyTorch side of `npm run bench`: the same workloads on the same ONNX models' architectures.

Prints one JSON object: images/s for forward, input-gradient, natural step, TRADES-10 step per model.
Models are rebuilt from models/export_models.py (same classes); weights do not affect speed.
"""
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'models'))
from export_models import ResNetSmall, SmallCNN  # noqa: E402


SECONDS = float(os.environ.get('BENCH_SECONDS', '4'))


def timeit(fn, min_time=None, min_iters=5):
    """Median seconds per call after warm-up (the same method as onnx-hydra's side)."""
    min_time = SECONDS if min_time is None else min_time
    for _ in range(3):
        fn()
    times, t0 = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - t0 < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def trades_loss(model, x, y, opt, eps=0.1, alpha=0.01, steps=10, beta=6.0):
    model.eval()
    kl = nn.KLDivLoss(reduction='sum')
    x_adv = x.detach() + 0.001 * torch.randn_like(x)
    with torch.no_grad():
        p_nat = F.softmax(model(x), dim=1)
    for _ in range(steps):
        x_adv.requires_grad_()
        loss_kl = kl(F.log_softmax(model(x_adv), dim=1), p_nat)
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + alpha * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    model.train()
    x_adv = x_adv.detach()
    opt.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y) + beta * (1.0 / x.size(0)) * kl(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1))
    loss.backward()
    opt.step()


def bench(name, model, shape, batch):
    x = torch.rand((batch,) + shape)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def fwd():
        with torch.no_grad():
            model(x)

    def igrad():
        xi = x.clone().requires_grad_()
        loss = F.cross_entropy(model(xi), y)
        torch.autograd.grad(loss, [xi])

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    model.eval()
    r = {'forward': batch / timeit(fwd), 'input_grad': batch / timeit(igrad)}
    model.train()
    r['natural_step'] = batch / timeit(step)
    r['trades10_step'] = batch / timeit(lambda: trades_loss(model, x, y, opt))
    return r


def matmul_gflops():
    """PyTorch's dense matrix product speed (GFLOP/s): its Linear layers run on the system BLAS, and Debian's
    default (netlib reference BLAS) runs them at a few GFLOP/s; libopenblas0-pthread makes them ~10x faster."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    return 2 * 512 ** 3 / timeit(lambda: a @ b, min_time=0.3) / 1e9


def kernel_isa():
    """The vector ISA of PyTorch's own (ATen) kernels, of oneDNN's convolutions and OpenBLAS's kernels: the
    latter two from one convolution run in a child process with ONEDNN_VERBOSE=1 and OPENBLAS_VERBOSE=2
    (verbose modes would slow the timed runs)."""
    aten = next((line.split(':', 1)[1].strip() for line in torch.__config__.show().splitlines() if 'CPU capability usage' in line), 'unknown')
    probe = 'import torch; torch.nn.functional.conv2d(torch.rand(8, 16, 32, 32), torch.rand(32, 16, 3, 3), padding=1)'
    run = subprocess.run([sys.executable, '-c', probe], env={**os.environ, 'ONEDNN_VERBOSE': '1', 'OPENBLAS_VERBOSE': '2'}, capture_output=True, text=True, check=False)
    onednn = next((line.split('isa:', 1)[1].strip() for line in run.stdout.splitlines() if ',isa:' in line), 'unknown')
    blas = next((line.split(':', 1)[1].strip() for line in run.stderr.splitlines() if line.startswith('Core:')), 'not OpenBLAS')
    return {'aten': aten, 'onednn': onednn, 'openblas': blas}


def main():
    batch = int(os.environ.get('BENCH_BATCH', '128'))
    # all cores, as onnx-hydra uses (Debian's build defaults to one thread)
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', os.cpu_count() or 1)))
    wanted = os.environ.get('BENCH_MODELS', 'small_cnn,resnet_small').split(',')
    out = {'torch_version': torch.__version__, 'threads': torch.get_num_threads(), 'matmul_gflops': matmul_gflops(), 'isa': kernel_isa(), 'batch': batch, 'models': {}}
    from export_torchvision import MODELS as TORCHVISION  # noqa: E402  (torchvision classifiers at 3x32x32)
    for name in wanted:
        torch.manual_seed(0)
        if name == 'small_cnn':
            out['models'][name] = bench(name, SmallCNN(), (1, 28, 28), batch)
        elif name == 'resnet_small':
            out['models'][name] = bench(name, ResNetSmall(), (1, 28, 28), batch)
        elif name in TORCHVISION:
            out['models'][name] = bench(name, TORCHVISION[name][0](), (3, 32, 32), batch)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
