#!/usr/bin/python3
"""PyTorch side of the issue-4 comparison: HYDRA and robust magnitude pruning (LWM) on Fashion-MNIST with
the small CNN, written after the HYDRA paper and its public code's conventions (not part of onnx-hydra;
runtime code never needs Python). It exists so that our numbers are compared with PyTorch run on this
machine, on the same data, in the same session, and so that each phase can be swapped between the two.

Conventions of the reference code that matter here:
  * SGD momentum 0.9, weight decay 1e-4 for every phase (the scores too);
  * a cosine learning rate set once per epoch, lr·½(1+cos((epoch−1)/epochs·π)) for epoch = 0, 1, …
    (so the first epoch runs below the peak and the last never reaches 0);
  * TRADES with the attack in eval mode, start x + 0.001·N(0,1), KL(sum)/batch, β 6;
  * score phase: weights and biases frozen, scores = sqrt(6/fan_in)·w/max|w|, mask = top-k of |s| per layer
    (straight-through), fine-tune: scores frozen, weights and biases trained through the mask;
  * LWM = the same fine-tune with scores = the scaled |w| (so the mask is the top-k by magnitude);
  * PGD evaluation: uniform random start, final iterate only.

  /usr/bin/python3 pipelines/torch_hydra_reference.py --out runs/torch-ref [--init pretrained.onnx]
Writes <out>/{pretrained,hydra-0.99,lwm-0.99}.onnx and <out>/torch-ref.json.
  /usr/bin/python3 pipelines/torch_hydra_reference.py --evaluate a.onnx b.onnx …
Evaluates small-CNN ONNX files (ours or these) with the reference's evaluator (benign, PGD-10 final iterate)
on the 10k test images: one JSON line per file.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'models'))
from export_models import SmallCNN  # noqa: E402

PRUNABLE = ['conv1', 'conv2', 'fc1', 'fc2']


def idx(path):
    with gzip.open(path, 'rb') as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_data(fraction, seed):
    d = os.path.join(HERE, '..', 'data', 'fashion-mnist')
    xtr = torch.tensor(idx(os.path.join(d, 'train-images-idx3-ubyte.gz')), dtype=torch.float32).unsqueeze(1) / 255
    ytr = torch.tensor(idx(os.path.join(d, 'train-labels-idx1-ubyte.gz')), dtype=torch.int64)
    xte = torch.tensor(idx(os.path.join(d, 't10k-images-idx3-ubyte.gz')), dtype=torch.float32).unsqueeze(1) / 255
    yte = torch.tensor(idx(os.path.join(d, 't10k-labels-idx1-ubyte.gz')), dtype=torch.int64)
    sub = np.random.RandomState(seed).permutation(len(xtr))[: int(fraction * len(xtr))]
    return xtr[sub], ytr[sub], xte, yte


class Masked:
    """Scores and straight-through masks on a SmallCNN's prunable layers (forward w ⊙ topk(|s|))."""

    def __init__(self, model, keep):
        self.model, self.keep = model, keep
        self.scores = {}
        for n in PRUNABLE:
            w = getattr(model, n).weight.data
            fan_in = w[0].numel()
            self.scores[n] = nn.Parameter(math.sqrt(6 / fan_in) * w / w.abs().max())
        self.fixed = None

    def mask(self, s):
        out = torch.zeros_like(s)
        flat = out.view(-1)
        j = int((1 - self.keep) * s.numel())
        flat[s.abs().flatten().sort()[1][j:]] = 1
        return out

    def weights(self):
        if self.fixed is not None:
            return {n: getattr(self.model, n).weight * self.fixed[n] for n in PRUNABLE}
        # straight-through: the gradient of (w ⊙ m) w.r.t. m is passed to |s|
        out = {}
        for n in PRUNABLE:
            s = self.scores[n]
            m = self.mask(s.detach())
            a = s.abs()
            out[n] = getattr(self.model, n).weight * (m + a - a.detach())
        return out

    def freeze(self):
        self.fixed = {n: self.mask(self.scores[n].detach()) for n in PRUNABLE}


def forward(model, x, masked=None):
    if masked is None:
        return model(x)
    w = masked.weights()
    m = model
    x = F.relu(F.conv2d(x, w['conv1'], m.conv1.bias, 2, 1))
    x = F.relu(F.conv2d(x, w['conv2'], m.conv2.bias, 2, 1))
    x = x.view(x.size(0), -1)
    return F.linear(F.relu(F.linear(x, w['fc1'], m.fc1.bias)), w['fc2'], m.fc2.bias)


def trades_step(f, params, opt, x, y, eps, alpha, steps, beta):
    kl = nn.KLDivLoss(reduction='sum')
    with torch.no_grad():
        p_nat = F.softmax(f(x), dim=1)
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(steps):
        x_adv.requires_grad_()
        g = torch.autograd.grad(kl(F.log_softmax(f(x_adv), dim=1), p_nat), [x_adv])[0]
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    opt.zero_grad()
    logits = f(x)
    loss = F.cross_entropy(logits, y) + beta / x.size(0) * kl(F.log_softmax(f(x_adv.detach()), dim=1), F.softmax(logits, dim=1))
    loss.backward()
    opt.step()
    return loss.item(), (logits.argmax(1) == y).float().sum().item()


def train(model, params, data, epochs, lr, a, masked=None, after_step=None, tag=''):
    xtr, ytr = data
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    f = lambda x: forward(model, x, masked)  # noqa: E731
    hist = []
    for epoch in range(epochs):
        for g in opt.param_groups:
            g['lr'] = lr * 0.5 * (1 + math.cos((epoch - 1) / epochs * math.pi)) if a.schedule == 'hydra' else lr * 0.5 * (1 + math.cos(epoch / epochs * math.pi))
        t0, tot, correct = time.time(), 0.0, 0.0
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), a.batch_size):
            b = perm[i:i + a.batch_size]
            loss, c = trades_step(f, params, opt, xtr[b], ytr[b], a.eps, a.alpha, a.steps, a.beta)
            if after_step:
                after_step()
            tot += loss * len(b)
            correct += c
        ev = evaluate(f, a.xte[:a.curve_limit], a.yte[:a.curve_limit], a.eps, 0.01, 10)
        hist.append({'epoch': epoch, 'loss': tot / len(xtr), 'train_acc': correct / len(xtr), 'seconds': time.time() - t0, **ev})
        print(f'{tag} epoch {epoch}: loss {tot / len(xtr):.4f} test {ev["benign"]:.4f} pgd10 {ev["pgd"]:.4f} ({time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
    return hist


def evaluate(f, x, y, eps, alpha, steps, batch=500):
    benign = robust = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        with torch.no_grad():
            benign += (f(xb).argmax(1) == yb).sum().item()
        xa = (xb + torch.empty_like(xb).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(steps):
            xa.requires_grad_()
            g = torch.autograd.grad(F.cross_entropy(f(xa), yb), [xa])[0]
            xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), xb - eps), xb + eps).clamp(0, 1)
        with torch.no_grad():
            robust += (f(xa).argmax(1) == yb).sum().item()
    return {'benign': benign / len(x), 'pgd': robust / len(x)}


def load_onnx(model, path):
    import onnx
    from onnx import numpy_helper
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    sd = model.state_dict()
    for k in sd:
        sd[k] = torch.tensor(np.array(inits[k]))
    model.load_state_dict(sd)


def export(model, path):
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), path, opset_version=13, input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}})


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--out')
    p.add_argument('--evaluate', nargs='+', metavar='ONNX')
    p.add_argument('--init', help='start pruning from this ONNX file (our pretrained model) instead of pretraining')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--fraction', type=float, default=0.2)
    p.add_argument('--keep', type=float, default=0.01)
    p.add_argument('--pretrain-epochs', type=int, default=10)
    p.add_argument('--prune-epochs', type=int, default=3)
    p.add_argument('--finetune-epochs', type=int, default=3)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--eps', type=float, default=0.1)
    p.add_argument('--alpha', type=float, default=0.01)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--beta', type=float, default=6.0)
    p.add_argument('--schedule', choices=['hydra', 'cosine'], default='hydra')
    p.add_argument('--eval-limit', type=int, default=10000)
    p.add_argument('--curve-limit', type=int, default=2000, help='test images for the per-epoch curves')
    p.add_argument('--methods', default='hydra,lwm')
    p.add_argument('--threads', type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.evaluate:
        _, _, xte, yte = load_data(0.01, a.seed)
        for f in a.evaluate:
            model = SmallCNN()
            load_onnx(model, f)
            model.eval()
            print(json.dumps({'file': f, **evaluate(model, xte[:a.eval_limit], yte[:a.eval_limit], a.eps, 0.01, 10)}), flush=True)
        return
    if not a.out:
        p.error('--out is required (or --evaluate)')
    os.makedirs(a.out, exist_ok=True)
    xtr, ytr, a.xte, a.yte = load_data(a.fraction, a.seed)
    report = {'settings': {k: v for k, v in vars(a).items() if k not in ('xte', 'yte')}, 'torch': torch.__version__, 'threads': a.threads}
    t_all = time.time()

    model = SmallCNN()
    if a.init:
        load_onnx(model, a.init)
        report['pretrain'] = {'from': a.init}
    else:
        t0 = time.time()
        report['pretrain'] = {'history': train(model, list(model.parameters()), (xtr, ytr), a.pretrain_epochs, 0.1, a, tag='pretrain'), 'seconds': time.time() - t0}
        export(model, os.path.join(a.out, 'pretrained.onnx'))
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    report['pretrain']['final'] = evaluate(model, a.xte[:a.eval_limit], a.yte[:a.eval_limit], a.eps, 0.01, 10)

    for method in a.methods.split(','):
        model.load_state_dict(dense)
        masked = Masked(model, a.keep)
        r, t0 = {}, time.time()
        if method == 'hydra':
            r['scores'] = train(model, list(masked.scores.values()), (xtr, ytr), a.prune_epochs, 0.1, a, masked=masked, tag='hydra scores')
        masked.freeze()
        with torch.no_grad():
            for n in PRUNABLE:
                getattr(model, n).weight.mul_(masked.fixed[n])
        r['pruned'] = evaluate(model, a.xte[:a.eval_limit], a.yte[:a.eval_limit], a.eps, 0.01, 10)
        r['finetune'] = train(model, list(model.parameters()), (xtr, ytr), a.finetune_epochs, 0.01, a, masked=masked, tag=f'{method} finetune')
        with torch.no_grad():
            for n in PRUNABLE:
                getattr(model, n).weight.mul_(masked.fixed[n])
        r['seconds'] = time.time() - t0
        r['final'] = evaluate(model, a.xte[:a.eval_limit], a.yte[:a.eval_limit], a.eps, 0.01, 10)
        export(model, os.path.join(a.out, f'{method}-{1 - a.keep:g}.onnx'))
        report[method] = r
        print(f'{method}: {r["final"]}', file=sys.stderr, flush=True)
    report['seconds'] = time.time() - t_all
    with open(os.path.join(a.out, 'torch-ref.json'), 'w') as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: (v.get('final') if isinstance(v, dict) else v) for k, v in report.items() if k != 'settings'}))


if __name__ == '__main__':
    main()
