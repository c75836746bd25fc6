#!/usr/bin/python3
"""The PyTorch side of `npm run bench:verify`: benign accuracy, PGD-20, randomized-smoothing CERTIFY
(Cohen et al.'s algorithm, its sampling loop as in their code) and the AutoAttack suite (Croce & Hein,
ICML 2020: APGD-CE, APGD-T, FAB-T, Square; hand-written below, the `autoattack` package is not installed)
on models/fashion_cnn.onnx's network and weights, over the same Fashion-MNIST test images. Prints one JSON
object with images/s per workload.

Environment: BENCH_BENIGN, BENCH_PGD, BENCH_SMOOTH, BENCH_SMOOTH_N, BENCH_AA_FAST, BENCH_AA_STANDARD (images
per workload; 0 skips it), BENCH_AA_EPS (L-inf epsilon, 0.1), BENCH_BATCH (256), BENCH_THREADS (all cores).
"""
import json
import math
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
N_AA_FAST = int(os.environ.get('BENCH_AA_FAST', '0'))
N_AA_STANDARD = int(os.environ.get('BENCH_AA_STANDARD', '0'))
AA_EPS = float(os.environ.get('BENCH_AA_EPS', '0.1'))


# ---------------------------------------------------------------------------------------------------------
# AutoAttack, L-inf, as the reference code (github.com/fra31/auto-attack, version='standard') runs it:
# run_standard_evaluation attacks the points still robust in batches, each attack's perturb() reseeds the
# global generator (seed 0) per batch; APGD-CE (1 restart, 100 iterations), APGD-T (targeted DLR, the 9 most
# likely other classes at the clean image, 1 restart each, 100 iterations), FAB-T (9 targets, 100 iterations,
# alpha_max 0.1, eta 1.05, beta 0.9) and Square (5000 queries, p_init 0.8, margin loss, the unrescaled
# 10,000-query schedule). Every run does all its iterations on its whole batch (no early exit), as the
# reference does. Hand-written to behave as the reference code does, step for step; not copied from it.
# ---------------------------------------------------------------------------------------------------------

def _ball(x, eps):
    """lower and upper bounds of the L-inf ball around x intersected with [0,1]"""
    return (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)


def _ce(z, y, _target):
    return F.cross_entropy(z, y, reduction='none')


def _dlr_targeted(z, y, target):
    zs = z.sort(dim=1)[0]
    u = torch.arange(z.shape[0])
    return -(z[u, y] - z[u, target]) / (zs[:, -1] - 0.5 * (zs[:, -3] + zs[:, -4]) + 1e-12)


def apgd_run(model, x, y, loss_fn, eps, n_iter=100, rho=0.75, target=None):
    """One APGD run (random start on the ball's surface, n_iter steps, step 2eps, momentum 0.75, the step
    halved and the iterate reset to the best point at the checkpoints 22, 41, 57, 70, 80, 87, 93, 99).
    Returns acc (False where some iterate was misclassified) and that adversarial iterate."""
    n = x.shape[0]
    lo, hi = _ball(x, eps)
    t = 2 * torch.rand(x.shape) - 1
    x_adv = (x + eps * t / (t.reshape(n, -1).abs().amax(1).view(-1, 1, 1, 1) + 1e-12)).clamp(0.0, 1.0)

    def evaluate(xa):
        xa = xa.clone().requires_grad_()
        with torch.enable_grad():
            z = model(xa)
            loss = loss_fn(z, y, target)
            (g,) = torch.autograd.grad(loss.sum(), [xa])
        return z.detach(), loss.detach(), g.detach()

    z, loss, grad = evaluate(x_adv)
    acc = z.argmax(1) == y
    x_adv_found = x_adv.clone()
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
    step = torch.full((n, 1, 1, 1), 2.0 * eps)
    x_old = x_adv.clone()
    k = max(int(0.22 * n_iter), 1)
    k_min = max(int(0.06 * n_iter), 1)
    k_decr = max(int(0.03 * n_iter), 1)
    since_check = 0
    loss_steps = torch.zeros(n_iter, n)
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones(n, dtype=torch.bool)
    for i in range(n_iter):
        with torch.no_grad():
            momentum_term = x_adv - x_old
            x_old = x_adv
            a = 0.75 if i > 0 else 1.0
            z1 = torch.min(torch.max(x_adv + step * grad.sign(), lo), hi)
            x_adv = torch.min(torch.max(x_adv + (z1 - x_adv) * a + momentum_term * (1 - a), lo), hi)
        z, loss, grad = evaluate(x_adv)
        pred_ok = z.argmax(1) == y
        acc &= pred_ok
        x_adv_found[~pred_ok] = x_adv[~pred_ok]
        loss_steps[i] = loss
        better = loss > loss_best
        x_best[better] = x_adv[better]
        grad_best[better] = grad[better]
        loss_best[better] = loss[better]
        since_check += 1
        if since_check == k:
            # losses that increased over the last k steps (as the reference counts them: at the first
            # checkpoint its look-back wraps around to the not yet written last row, zeros)
            increases = torch.zeros(n)
            for c in range(k):
                increases += (loss_steps[i - c] > loss_steps[i - c - 1]).float()
            reduce = (increases <= k * rho) | (~reduced_last_check & (loss_best_last_check >= loss_best))
            reduced_last_check = reduce.clone()
            loss_best_last_check = loss_best.clone()
            if bool(reduce.any()):
                step[reduce] /= 2.0
                x_adv = x_adv.clone()
                x_adv[reduce] = x_best[reduce]
                grad[reduce] = grad_best[reduce]
            k = max(k - k_decr, k_min)
            since_check = 0
    return acc, x_adv_found


def apgd_ce(model, x, y, eps):
    torch.manual_seed(0)
    acc, found = apgd_run(model, x, y, _ce, eps)
    adv = x.clone()
    adv[~acc] = found[~acc]
    return acc, adv


def apgd_t(model, x, y, eps, n_targets=9):
    torch.manual_seed(0)
    with torch.no_grad():
        acc = model(x).argmax(1) == y
    adv = x.clone()
    for rank in range(2, n_targets + 2):
        idx = acc.nonzero().flatten()
        if idx.numel() == 0:
            break
        with torch.no_grad():
            target = model(x[idx]).sort(dim=1)[1][:, -rank]
        acc_c, adv_c = apgd_run(model, x[idx], y[idx], _dlr_targeted, eps, target=target)
        fooled = idx[~acc_c]
        acc[fooled] = False
        adv[fooled] = adv_c[~acc_c]
    return acc, adv


def project_linf(t, w, b):
    """Per row: the smallest-L-inf d with w.(t + d) = b and t + d in [0,1] (the box corner nearest the
    hyperplane when the box does not reach it): the problem the reference's projection_linf solves, solved
    here by sorting the coordinates' rooms (the breakpoints of the piecewise-linear reachable change)."""
    c = (w * t).sum(1) - b
    u = w * torch.where(c >= 0, 1.0, -1.0).unsqueeze(1)  # w.(t+d) must decrease by |c| along u
    need = c.abs()
    moving = u != 0
    room = torch.where(u > 0, t, 1.0 - t) * moving
    speed = u.abs()
    r, order = room.sort(dim=1)
    sp = speed.gather(1, order)
    total = sp.sum(1, keepdim=True)
    sat = torch.cumsum(sp * r, dim=1)  # reach at lambda = r_j from the coordinates saturated by then
    free = total - torch.cumsum(sp, dim=1)  # speed of those still free
    reach = sat + r * free
    j = (reach < need.unsqueeze(1)).sum(1, keepdim=True)  # first breakpoint reaching |c|
    dim = t.shape[1]
    jm = (j - 1).clamp(min=0)
    sat_prev = torch.where(j > 0, sat.gather(1, jm), torch.zeros_like(total))
    free_prev = torch.where(j > 0, free.gather(1, jm), total)
    lam = torch.where(free_prev > 0, (need.unsqueeze(1) - sat_prev) / free_prev.clamp(min=1e-30), torch.zeros_like(total)).clamp(min=0)
    lam = torch.where(j >= dim, torch.full_like(lam, float('inf')), lam)
    mag = torch.min(lam, room)
    return torch.where(u > 0, -mag, mag) * moving


def fab_t_run(model, x, y, target, eps, n_iter=100, alpha_max=0.1, eta=1.05, beta=0.9):
    """One FAB-T run from the clean image toward `target`: returns, per row, the smallest adversarial
    iterate found (L-inf) and its distance (1e10: none)."""
    n = x.shape[0]
    u = torch.arange(n)
    x0 = x.reshape(n, -1)
    x1 = x.clone()
    adv = x.clone()
    res = torch.full((n,), 1e10)
    for _ in range(n_iter):
        xi = x1.clone().requires_grad_()
        with torch.enable_grad():
            z = model(xi)
            diff = -(z[u, y] - z[u, target])
            (g,) = torch.autograd.grad(diff.sum(), [xi])
        with torch.no_grad():
            w = g.reshape(n, -1)
            b = -diff.detach() + (w * x1.reshape(n, -1)).sum(1)
            d3 = project_linf(torch.cat((x1.reshape(n, -1), x0), 0), torch.cat((w, w), 0), torch.cat((b, b), 0))
            d1, d2 = d3[:n].view_as(x1), d3[n:].view_as(x1)
            a0 = d3.abs().amax(1).clamp(min=1e-8).view(-1, 1, 1, 1)
            a1, a2 = a0[:n], a0[n:]
            alpha = (a1 / (a1 + a2)).clamp(min=0.0, max=alpha_max)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x + eta * d2) * alpha).clamp(0.0, 1.0)
            is_adv = model(x1).argmax(1) != y
            if bool(is_adv.any()):
                ia = is_adv.nonzero().flatten()
                dist = (x1[ia] - x[ia]).reshape(ia.numel(), -1).abs().amax(1)
                closer = dist < res[ia]
                adv[ia[closer]] = x1[ia[closer]]
                res[ia[closer]] = dist[closer]
                x1[ia] = x[ia] + (x1[ia] - x[ia]) * beta
    return adv, res


def fab_t(model, x, y, eps, n_targets=9):
    with torch.no_grad():
        acc = model(x).argmax(1) == y
    torch.manual_seed(0)
    adv = x.clone()
    for rank in range(2, n_targets + 2):
        idx = acc.nonzero().flatten()
        if idx.numel() == 0:
            break
        with torch.no_grad():
            target = model(x[idx]).sort(dim=1)[1][:, -rank]
        adv_c, _ = fab_t_run(model, x[idx], y[idx], target, eps)
        with torch.no_grad():
            ok = (model(adv_c).argmax(1) == y[idx]) | ((adv_c - x[idx]).reshape(idx.numel(), -1).abs().amax(1) > eps)
        acc[idx[~ok]] = False
        adv[idx[~ok]] = adv_c[~ok]
    return acc, adv


def _square_p(p_init, it):
    """the paper's schedule over 10,000 queries, not rescaled to the budget (AutoAttack: resc_schedule=False)"""
    for cut, div in ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8), (50, 4), (10, 2)):
        if it > cut:
            return p_init / div
    return p_init


def _margin(model, x, y):
    z = model(x)
    u = torch.arange(x.shape[0])
    zy = z[u, y].clone()
    z[u, y] = -float('inf')
    return zy - z.amax(1)


def square(model, x, y, eps, n_queries=5000, p_init=0.8):
    """Square attack, L-inf, margin loss, as AutoAttack's square.py: vertical-stripe start, then one random
    window per iteration shared by the batch (a new +-eps per channel), kept where the margin decreases."""
    torch.manual_seed(0)
    with torch.no_grad():
        acc = model(x).argmax(1) == y
        adv = x.clone()
        idx0 = acc.nonzero().flatten()
        if idx0.numel() == 0:
            return acc, adv
        xs, ys = x[idx0], y[idx0]
        n, c, h, w = xs.shape
        x_best = (xs + eps * torch.sign(2 * torch.rand(n, c, 1, w) - 1)).clamp(0.0, 1.0)
        margin_min = _margin(model, x_best, ys)
        lo, hi = _ball(xs, eps)
        for it in range(n_queries):
            live = (margin_min > 0).nonzero().flatten()
            if live.numel() == 0:
                break
            x_cur, xb, yc, mc = xs[live], x_best[live], ys[live], margin_min[live]
            p = _square_p(p_init, it)
            s = max(int(round(math.sqrt(p * c * h * w / c))), 1)
            vh = int((h - s) * torch.rand(1))
            vw = int((w - s) * torch.rand(1))
            delta = torch.zeros(c, h, w)
            delta[:, vh:vh + s, vw:vw + s] = 2.0 * eps * torch.sign(2 * torch.rand(c, 1, 1) - 1)
            x_new = torch.min(torch.max(xb + delta, lo[live]), hi[live])
            m = _margin(model, x_new, yc)
            improved = (m < mc) | (m <= 0)
            margin_min[live] = torch.where(improved, m, mc)
            x_best[live] = torch.where(improved.view(-1, 1, 1, 1), x_new, xb)
        fooled_rows = (model(x_best).argmax(1) != ys)
        fooled = idx0[fooled_rows]
        acc[fooled] = False
        adv[fooled] = x_best[fooled_rows]
    return acc, adv


AA_ATTACKS = {'fast': [('APGD-CE', apgd_ce), ('APGD-T', apgd_t)],
              'standard': [('APGD-CE', apgd_ce), ('APGD-T', apgd_t), ('FAB-T', fab_t), ('Square', square)]}


def autoattack(model, x, y, eps, version, batch):
    """run_standard_evaluation: clean accuracy, then each attack on the points still robust, in batches; a
    point is broken when the attack's returned input is misclassified (and within eps). Timed from after the
    clean pass (as onnx-hydra's verify times its AutoAttack stage)."""
    n = x.shape[0]
    with torch.no_grad():
        robust = torch.cat([model(x[i:i + batch]).argmax(1) == y[i:i + batch] for i in range(0, n, batch)])
    clean = int(robust.sum())
    t0 = time.perf_counter()
    rows = []
    for name, attack in AA_ATTACKS[version]:
        ta = time.perf_counter()
        before = int(robust.sum())
        idx = robust.nonzero().flatten()
        for s in range(0, idx.numel(), batch):
            bi = idx[s:s + batch]
            _, adv = attack(model, x[bi], y[bi], eps)
            with torch.no_grad():
                broken = (model(adv).argmax(1) != y[bi]) & ((adv - x[bi]).reshape(bi.numel(), -1).abs().amax(1) <= eps + 1e-6)
            robust[bi[broken]] = False
        rows.append({'attack': name, 'broken': before - int(robust.sum()), 'acc_after': int(robust.sum()) / n, 'seconds': time.perf_counter() - ta})
    sec = time.perf_counter() - t0
    return {'img_s': n / sec, 'seconds': sec, 'n': n, 'clean_acc': clean / n, 'acc': int(robust.sum()) / n, 'per_attack': rows}


def benign(model, x, y, out):
    x, y = x[:N_BENIGN], y[:N_BENIGN]  # (the batches' slices must not run past N)
    t = time.perf_counter()
    correct = 0
    with torch.no_grad():
        for i in range(0, N_BENIGN, BATCH):
            correct += int((model(x[i:i + BATCH]).argmax(1) == y[i:i + BATCH]).sum())
    out['benign'] = {'img_s': N_BENIGN / (time.perf_counter() - t), 'acc': correct / N_BENIGN}


def pgd20(model, x, y, out):
    x, y = x[:N_PGD], y[:N_PGD]
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


def smoothing(model, x, out):
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


def main():
    # all cores, as onnx-hydra uses (Debian's build defaults to one thread)
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', os.cpu_count() or 1)))
    model = SmallCNN()
    m = onnx.load(os.path.join(HERE, '..', 'models', 'fashion_cnn.onnx'))
    state = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in m.graph.initializer}
    model.load_state_dict({k: state[k] for k in model.state_dict()})
    model.eval()
    x, y = load('t10k')
    # OMP_WAIT_POLICY matters on a busy machine: GNU OpenMP's spinning threads lose several-fold there
    out = {'torch_version': torch.__version__, 'threads': torch.get_num_threads(), 'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY', 'default')}
    if N_BENIGN:
        benign(model, x, y, out)
    if N_PGD:
        pgd20(model, x, y, out)
    if N_SMOOTH:
        smoothing(model, x, out)
    if N_AA_FAST:
        out['autoattack_fast'] = autoattack(model, x[:N_AA_FAST], y[:N_AA_FAST], AA_EPS, 'fast', BATCH)
    if N_AA_STANDARD:
        out['autoattack_standard'] = autoattack(model, x[:N_AA_STANDARD], y[:N_AA_STANDARD], AA_EPS, 'standard', BATCH)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
