"""The fastai port of Schedule-Free (nbs/06b_fastai) in real fastai 2.8, against our own Learner (nbs/06a_schedule_free).

    python bench/fastai_port.py           # Imagenette-160 (through MINIFASTAI_MIRROR / MINIFASTAI_HOME), about a minute
    python bench/fastai_port.py --smoke   # the same code on a few generated images: checks the script

It needs a venv with fastai (minifastai does not depend on it); without fastai it prints that it skipped and exits 0.
The venv this was measured in (torchvision must match torch: the CPU-only torch wheel has none here):

    python -m venv /tmp/fastai && . /tmp/fastai/bin/activate
    pip --isolated install torch==2.13.0 torchvision==0.28.0 fastai==2.8.12 && pip install --no-deps -e .

The data: `--n-train` and `--n-valid` images per class of Imagenette-160 (10 classes), decoded once by our `Dataset`
at `--size` pixels into one tensor, so both libraries see the very same numbers. The model: a small CNN of
torch.nn layers (3 stride-2 conv/BatchNorm/ReLU blocks, average pool, linear), the same initial weights for both.
Part 1, the same batches (no shuffling, bs 64, one epoch): our `Learner` with `ScheduleFreeCB` and the optimizer
against fastai's `Learner` with `ScheduleFreeCallback` and `sf_adamw`/`sf_sgd`; the training loss of every step
and the validation loss and accuracy at x must agree (to float rounding). Part 2, each library's own shuffling
(seeds 0-2, `--epochs` epochs, AdamW-SF): accuracies must agree within the spread of seeds. Part 3 checks fastai's
`validate`, `get_preds`, save/load then one more epoch (against two epochs straight), `bn_batches`, `freeze` and discriminative
learning rates on two parameter groups, `lr_find`, the refusal of `fit_one_cycle`, and pickling the callback. Exit status 1 if a check fails.
"""
import argparse, atexit, copy, pickle, random, shutil, statistics, sys, tempfile, time
from functools import partial
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F
from minifastai.data import URLs, untar_data, get_image_files, parent_label, Dataset
from minifastai.learner import Learner, Callback
from minifastai.schedule_free import AdamWScheduleFree, SGDScheduleFree, ScheduleFreeCB, recompute_bn_stats
from minifastai.testing import DLs, make_images

WORK = Path(tempfile.mkdtemp(prefix='fastai_port-'))   # fastai's Learner.path: where save and lr_find write
atexit.register(shutil.rmtree, WORK, ignore_errors=True)

def load(args):
    "x (N,3,size,size) in [-0.5, 0.5] and y of the training and of the validation images, in an order that mixes the classes"
    if args.smoke:
        root = make_images(Path(tempfile.mkdtemp())/'tiny', classes=tuple('abc'), n_train=20, n_valid=6, odd=False)
    else: root = untar_data(URLs.IMAGENETTE_160)
    fns, out = get_image_files(root), []
    v2i = {c: i for i, c in enumerate(sorted(set(map(parent_label, fns))))}
    for split, n in (('train', args.n_train), ('val', args.n_valid)):
        per = {}
        for f in sorted(fns):
            if f.parent.parent.name == split and len(per.setdefault(parent_label(f), [])) < n: per[parent_label(f)].append(f)
        ds = Dataset([f for c in sorted(per) for f in per[c]], v2i, size=args.size)
        items = [ds[i] for i in range(len(ds))]
        x, y = torch.stack([x for x, _ in items]).permute(0, 3, 1, 2).contiguous() - 0.5, torch.stack([y for _, y in items])
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))   # classes mixed: the unshuffled order
        out.append((x[perm], y[perm]))   # NCHW-contiguous, as fastai's collation makes it: the same convolution kernels
    return out, len(v2i)

def cnn(n_out, seed=0):
    torch.manual_seed(seed)
    def block(ni, nf): return [nn.Conv2d(ni, nf, 3, 2, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU()]
    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_out))

def batches(x, y, bs, g=None):
    idx = torch.randperm(len(x), generator=g) if g is not None else torch.arange(len(x))
    return [(x[idx[i:i + bs]], y[idx[i:i + bs]]) for i in range(0, len(x), bs)]

class Shuffled:
    "Our training batches, reshuffled every epoch from `seed`"
    def __init__(self, x, y, bs, seed): self.x, self.y, self.bs, self.g = x, y, bs, torch.Generator().manual_seed(seed)
    def __iter__(self): return iter(batches(self.x, self.y, self.bs, self.g))
    def __len__(self): return -(-len(self.x) // self.bs)

class OurLosses(Callback):
    def before_fit(self): self.losses = []
    def after_batch(self):
        if self.training: self.losses.append(self.loss.item())

def evaluate(model, x, y):
    "Loss and accuracy of `model` (as it is now: at x after `fit`) on all of `x`, in eval mode"
    model.eval()
    with torch.no_grad(): p = model(x)
    return F.cross_entropy(p, y).item(), (p.argmax(1) == y).float().mean().item()

def ours(data, n_out, opt, settings, lr, epochs, seed=0, shuffle=None):
    (xt, yt), (xv, yv) = data
    train = Shuffled(xt, yt, 64, shuffle) if shuffle is not None else batches(xt, yt, 64)
    rec, model = OurLosses(), cnn(n_out, seed)
    learn = Learner(model, DLs(train, batches(xv, yv, 256)), F.cross_entropy, lr, cbs=[ScheduleFreeCB(), rec],
                    opt_func=partial(opt, **settings))
    learn.fit(epochs)
    return rec.losses, evaluate(model, xv, yv), learn

def fastai_learner(fa, data, n_out, opt, settings, lr, seed=0, shuffle=None, cb=None, **kw):
    (xt, yt), (xv, yv) = data
    if shuffle is not None: random.seed(shuffle); torch.manual_seed(shuffle)
    train = fa.DataLoader(list(zip(xt, yt)), bs=64, shuffle=shuffle is not None)
    dls = fa.DataLoaders(train, fa.DataLoader(list(zip(xv, yv)), bs=256), device='cpu')
    learn = fa.Learner(dls, cnn(n_out, seed), loss_func=F.cross_entropy, lr=lr, opt_func=partial(opt, **settings),
                       cbs=cb or fa.ScheduleFreeCallback(), metrics=fa.accuracy, path=WORK, **kw)
    return learn

def fastai_fit(fa, learn, epochs):
    rec = fa.FastaiLosses()
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, cbs=rec)
    return rec.losses

def import_fastai():
    "fastai's names the bench uses, or None when fastai is not installed"
    try:
        from fastai.data.core import DataLoaders
        from fastai.data.load import DataLoader
        from fastai.learner import Learner as FLearner
        from fastai.callback.core import Callback as FCallback
        from fastai.metrics import accuracy
        from minifastai.fastai_sf import sf_adamw, sf_sgd, ScheduleFreeCallback
    except ImportError as e: return print(f"skipped: fastai is not installed here ({e}); see this script's header")
    class FastaiLosses(FCallback):
        def before_fit(self): self.losses = []
        def after_batch(self):
            if self.training: self.losses.append(self.learn.loss.item())
    return argparse.Namespace(DataLoaders=DataLoaders, DataLoader=DataLoader, Learner=FLearner, accuracy=accuracy,
                              sf_adamw=sf_adamw, sf_sgd=sf_sgd, ScheduleFreeCallback=ScheduleFreeCallback,
                              FastaiLosses=FastaiLosses)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n-train', type=int, default=80); p.add_argument('--n-valid', type=int, default=40)
    p.add_argument('--size', type=int, default=32); p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--smoke', action='store_true')
    args = p.parse_args(argv)
    fa = import_fastai()
    if fa is None: return 0
    import fastai
    torch.set_num_threads(1)
    t0 = time.time()
    data, n_out = load(args)
    print(f'fastai {fastai.__version__}, torch {torch.__version__}; {len(data[0][0])} training and {len(data[1][0])} '
          f'validation images of {n_out} classes at {args.size}px (decoded in {time.time() - t0:.1f} s)')
    failed = []
    def check(ok, what):
        if not ok: failed.append(what)
        return 'ok' if ok else 'FAIL'

    recipes = {'AdamW-SF': (AdamWScheduleFree, 'sf_adamw', dict(wd=0.01, warmup_steps=5), 3e-3),
               'SGD-SF': (SGDScheduleFree, 'sf_sgd', dict(wd=5e-4, warmup_steps=5), 1.0)}
    print('\nPart 1: the same batches in the same order, one epoch')
    print(f"{'optimizer':10} {'first 3 losses (ours)':28} {'max |loss diff|':>15} {'valid loss ours / fastai':>26} {'acc ours / fastai':>18}")
    for name, (opt, fopt, settings, lr) in recipes.items():
        l1, (vl1, a1), _ = ours(data, n_out, opt, settings, lr, 1)
        learn = fastai_learner(fa, data, n_out, getattr(fa, fopt), settings, lr)
        l2 = fastai_fit(fa, learn, 1)
        vl2, a2 = evaluate(learn.model, *data[1])
        diff = max(abs(a - b) for a, b in zip(l1, l2)) if len(l1) == len(l2) else float('inf')
        ok = check(diff < 1e-5 and abs(vl1 - vl2) < 1e-5 and a1 == a2, f'{name}: same batches')
        print(f"{name:10} {' '.join(f'{v:.4f}' for v in l1[:3]):28} {diff:15.1e} {vl1:12.4f} / {vl2:.4f} {a1:8.3f} / {a2:.3f}  {ok}")

    print(f'\nPart 2: each library shuffles its own batches, AdamW-SF, {args.epochs} epochs, seeds 0-2 (model and order)')
    opt, fopt, settings, lr = recipes['AdamW-SF']
    accs = {'minifastai': [], 'fastai': []}
    for seed in range(3):
        accs['minifastai'].append(ours(data, n_out, opt, settings, lr, args.epochs, seed=seed, shuffle=seed)[1][1])
        learn = fastai_learner(fa, data, n_out, fa.sf_adamw, settings, lr, seed=seed, shuffle=seed)
        fastai_fit(fa, learn, args.epochs); accs['fastai'].append(evaluate(learn.model, *data[1])[1])
    spread = max(max(a) - min(a) for a in accs.values())
    gap = abs(statistics.mean(accs['minifastai']) - statistics.mean(accs['fastai']))
    for k, a in accs.items(): print(f"{k:12} accuracy {statistics.mean(a):.3f} (seeds: {', '.join(f'{v:.3f}' for v in a)})")
    print(f'gap of the means {gap:.3f}, largest spread of seeds {spread:.3f}: '
          f"{check(gap <= max(spread, 0.02), 'Part 2: accuracies within noise')}")

    print("\nPart 3: fastai's own uses")
    learn = fastai_learner(fa, data, n_out, fa.sf_adamw, settings, lr)
    fastai_fit(fa, learn, 1)
    vl, acc = evaluate(learn.model, *data[1])
    with learn.no_bar(): res = learn.validate()
    print(f"validate() at x: loss {res[0]:.4f}, accuracy {res[1]:.3f}  {check(abs(res[0] - vl) < 1e-5 and abs(res[1] - acc) < 1e-6, 'validate')}")
    with learn.no_bar(): preds, _ = learn.get_preds(act=lambda o: o)
    learn.model.eval()
    with torch.no_grad(): ref = learn.model(data[1][0])
    print(f"get_preds() at x: max |diff| {(preds - ref).abs().max().item():.1e}  {check(torch.allclose(preds, ref, atol=1e-5), 'get_preds')}")
    first = fastai_learner(fa, data, n_out, fa.sf_adamw, settings, lr)
    fastai_fit(fa, first, 1); first.save('sf')
    again = fastai_learner(fa, data, n_out, fa.sf_adamw, settings, lr)
    again.load('sf'); fastai_fit(fa, again, 1)
    straight = fastai_learner(fa, data, n_out, fa.sf_adamw, settings, lr); fastai_fit(fa, straight, 2)
    same = all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), straight.model.state_dict().values()))
    print(f"save, load, 1 more epoch == 2 epochs straight (weights and BatchNorm statistics): {check(same, 'save/load')}")
    bn = fastai_learner(fa, data, n_out, fa.sf_adamw, settings, lr, cb=fa.ScheduleFreeCallback(bn_batches=2))
    fastai_fit(fa, bn, 1)
    ref = copy.deepcopy(bn.model)   # at x, with the statistics the callback recomputed: recompute them here from the last 2 batches
    recompute_bn_stats(ref, [xb for xb, _ in batches(*data[0], 64)[-2:]])
    stats = lambda m: [v for k, v in m.state_dict().items() if k.endswith(('running_mean', 'running_var'))]
    same = all(torch.equal(a, b) for a, b in zip(stats(bn.model), stats(ref)))
    print(f"bn_batches=2: BatchNorm statistics at x from the last 2 training batches: {check(same, 'bn_batches')}")
    two = fastai_learner(fa, data, n_out, fa.sf_adamw, settings, lr, splitter=lambda m: [list(m[:6].parameters()), list(m[6:].parameters())])
    two.freeze()   # the first group's convolutions frozen, its BatchNorm layers still trained (fastai's train_bn)
    w0 = two.model[0].weight.detach().clone()
    with two.no_bar(), two.no_logging(): two.fit(1, lr=slice(1e-3, 3e-3))
    ok = torch.equal(w0, two.model[0].weight) and [h['lr'] for h in two.opt.hypers] == [1e-3, 3e-3]
    print(f"freeze() and lr=slice(1e-3, 3e-3) on two parameter groups: {check(ok, 'freeze and discriminative lrs')}")
    w = [p.detach().clone() for p in learn.model.parameters()]
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=20, show_plot=False)
    print(f"lr_find leaves the weights as they were: {check(all(torch.equal(a, b) for a, b in zip(w, learn.model.parameters())), 'lr_find')}")
    try:
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1)
        msg = ''
    except ValueError as e: msg = str(e)
    print(f"fit_one_cycle refused: {check('without a schedule' in msg, 'fit_one_cycle refused')}")
    cb = pickle.loads(pickle.dumps(fa.ScheduleFreeCallback(bn_batches=2)))
    print(f"the callback pickles: {check(type(cb) is fa.ScheduleFreeCallback and cb.bn_batches == 2, 'pickle')}")
    print(f'\n{len(failed)} check(s) failed{": " + ", ".join(failed) if failed else ""}; {time.time() - t0:.0f} s in all')
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
