"""Where does the action information stop on the way e_{t+1} -> s_{t+1} -> Δs -> IDM -> z -> FDM
-> ŝ_{t+1} -> decoder -> ê_{t+1}? Trains the `small` preset teacher-forced on a feature store and
prints, every `every` steps, on held-out clips (one JSON line each):

  own, shuf, rep   teacher-forced token MSE under the clip's own z, under another clip's z, and of
                   repeating the last frame
  dec_true_s       the decoder's MSE when given the true s_{t+1} instead of ŝ_{t+1}
  rms_ds/s         rms(Δs) / rms(s): does the structure collapse in time?
  Ls/var           mean (Δŝ - Δs)² / mean Δs²: how much of Δs the IDM -> z -> FDM loop explains
  upd/ds           rms of the FDM's update against rms(Δs)
  z_rms, r2        size of z; ridge-probe R² of z to the true (dx, dy) (fit on half the clips)
  grad_z           ‖∂L_e/∂z‖ per transition on 32 held-out clips

Arguments are key=value: store= steps= every= lr= B= T= tag= threads= seed= preset= bn=
  ls= lz= lnorm= lsym=   loss weights (paper 0.03 0.03 0.001 0.001)
  detach=1               L_s's target Δs detached
  aux=W                  the decoder also decodes the true s_{t+1}, that MSE weighted W (a device of ours)
  oracle=1               the IDM replaced by a fixed random linear map of the TRUE actions
  xavier=1               every Linear re-initialised with Xavier, as the reference's training script does

    OMP_NUM_THREADS=1 python benchmarks/z_path.py store=data/features/plain.zarr steps=1000 tag=base
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dila_core.losses import anti_collapse, latent_norm, motion_mask, symmetry_loss
from dila_core.model import DiLA
from dila_core.presets import preset
from pipeline.data.split import split_episodes
from pipeline.data.store import open_store
from pipeline.data.windows import StepBatches, Windows, loader
from pipeline.evaluation.metrics import linear_probe

A = dict(a.split('=', 1) for a in sys.argv[1:])
g = lambda k, d: type(d)(A.get(k, d))
store = Path(g('store', 'data/features/plain.zarr'))
steps, every, lr, B, T = g('steps', 1000), g('every', 250), g('lr', 3e-3), g('B', 8), g('T', 8)
torch.set_num_threads(g('threads', 1))
tag = g('tag', 'run')
n = open_store(store)["episode_ends"].shape[0]
tr_eps, va_eps = split_episodes(n, 0.125, 0)
train, val = Windows(store, tr_eps, T, 1), Windows(store, va_eps, T, 1)
torch.manual_seed(g('seed', 0))
loss_over = {k2: float(A[k1]) for k1, k2 in [('ls', 'lambda_s'), ('lz', 'lambda_z'), ('lnorm', 'lambda_norm'),
                                               ('lsym', 'lambda_sym')] if k1 in A}
over = {'loss': loss_over} if loss_over else {}
model = DiLA(preset(g('preset', 'small'), grid=train.grid, token_dim=train.dim, bottleneck=g('bn', 'continuous'), **over))
if g('xavier', 0):
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None: nn.init.zeros_(m.bias)
dyn = model.dynamics
detach, aux, oracle = g('detach', 0), g('aux', 0.0), g('oracle', 0)
Wor = torch.randn(4, dyn.bottleneck.in_dim, generator=torch.Generator().manual_seed(1))
acts = torch.from_numpy(np.concatenate([train[i]["actions"].numpy() for i in range(0, len(train), 7)]))
ascale = acts.std(0).clamp_min(1e-6)


def idm(ds, a):
    if oracle:
        a = a[:, :-1]
        if ds.shape[0] == 2 * a.shape[0]: a = torch.cat([a, -a])
        return (a / ascale) @ Wor
    return dyn.idm(ds)


def forward(e, a, perm=None, decode_true=False):
    """returns e_hat, loss, logs"""
    x = model.backbone(e); s = model.structure(x)
    memory = [m[:, :-1] for m in model.content(x)]
    ds = s[:, 1:] - s[:, :-1]
    r = idm(ds, a)
    if perm is not None: r = r[perm]
    z, lb, logs = dyn.bottleneck(r)
    update = dyn.fdm(s[:, :-1], z)
    s_next = s[:, :-1] + update
    e_hat = model._decode(s[:, 1:] if decode_true else s_next, e[:, 0], memory)
    if not model.training:
        return e_hat, s, ds, update, z
    cfg = dyn.loss
    L_e = F.mse_loss(e_hat, e[:, 1:])
    L_s = F.mse_loss(update, ds.detach() if detach else ds)
    feats = dyn.bottleneck.features(r)
    loss = cfg.lambda_e * L_e + cfg.lambda_s * L_s + lb
    if not oracle:
        L_z = F.mse_loss(dyn.bottleneck.features(dyn.idm(update)), feats.detach())
        zf, zb = dyn.bottleneck.features(dyn.idm(torch.cat([ds.detach(), -ds.detach()]))).chunk(2)
        L_c = anti_collapse(feats, cfg.collapse_scale, cfg.collapse_sharpness)
        loss = loss + cfg.lambda_z * (L_z + L_c) + cfg.lambda_norm * latent_norm(feats) \
            + cfg.lambda_sym * symmetry_loss(zf, zb, motion_mask(ds.detach(), cfg.motion_threshold), cfg.eps)
    if aux:
        e_aux = model._decode(s[:, 1:], e[:, 0], memory)
        loss = loss + aux * F.mse_loss(e_aux, e[:, 1:])
    return loss, {'L_e': float(L_e.detach()), 'L_s': float(L_s.detach())}


opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
warm = 50
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: (k + 1) / warm if k < warm else
                                          0.5 * (1 + math.cos(math.pi * min(1.0, (k - warm) / max(1, steps - warm)))))
nv = min(len(val), 256)
vi = np.linspace(0, len(val) - 1, nv).astype(int); items = [val[int(i)] for i in vi]
ev = torch.stack([it["e"] for it in items]); ea = torch.stack([it["actions"] for it in items])
perm = torch.randperm(len(ev), generator=torch.Generator().manual_seed(0))


def r2(z, y):
    """Ridge-probe R² per target dimension, fitted on the first half of the clips, scored on the rest."""
    half = len(z) // 2
    flat = lambda a: a.reshape(-1, a.shape[-1]).numpy()
    probe = linear_probe(flat(z[:half]), flat(y[:half]), flat(z[half:]), flat(y[half:]), alpha=1.0)
    return [round(v, 3) for v in probe["r2_per_dim"]]


def evaluate(k, t0):
    model.eval(); out = {'step': k, 't': round(time.time() - t0), 'tag': tag}
    with torch.no_grad():
        tgt = ev[:, 1:]
        eh, s, ds, upd, z = forward(ev, ea)
        out['own'] = round(float((eh - tgt).square().mean()), 5)
        out['shuf'] = round(float((forward(ev, ea, perm)[0] - tgt).square().mean()), 5)
        out['rep'] = round(float((ev[:, :-1] - tgt).square().mean()), 5)
        out['dec_true_s'] = round(float((forward(ev, ea, decode_true=True)[0] - tgt).square().mean()), 5)
        out['rms_ds/s'] = round(float(ds.square().mean().sqrt() / s.square().mean().sqrt()), 3)
        out['Ls/var'] = round(float((upd - ds).square().mean() / ds.square().mean()), 3)
        out['upd/ds'] = round(float(upd.square().mean().sqrt() / ds.square().mean().sqrt()), 3)
        out['z_rms'] = round(float(z.square().mean().sqrt()), 4)
        out['r2'] = r2(z, ea[:, :-1, :2])
    out['grad_z'] = grad_z(ev[:32], ea[:32])
    print(json.dumps(out), flush=True); model.train()


def grad_z(e, a):
    """‖∂L_e/∂z‖ per transition (rms over clips and steps): how much the frame error asks of z."""
    with torch.enable_grad():
        x = model.backbone(e); s = model.structure(x)
        memory = [m[:, :-1] for m in model.content(x)]
        z, _, _ = dyn.bottleneck(idm(s[:, 1:] - s[:, :-1], a))
        z = z.detach().requires_grad_(True)
        e_hat = model._decode(s[:, :-1] + dyn.fdm(s[:, :-1], z), e[:, 0], memory)
        (g,) = torch.autograd.grad(F.mse_loss(e_hat, e[:, 1:]), z)
    return float(g.norm(dim=-1).square().mean().sqrt())


t0 = time.time(); model.train()
for k, batch in enumerate(loader(train, StepBatches(len(train), B, g('seed', 0), 0, steps), 0, torch.device('cpu'))):
    loss, logs = forward(batch['e'], batch['actions'])
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 6.0); opt.step(); sched.step()
    if (k + 1) % every == 0: evaluate(k + 1, t0)
