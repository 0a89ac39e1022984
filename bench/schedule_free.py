"""Schedule-Free SGD and AdamW (nbs/06a_schedule_free) against one-cycle training on Imagenette-160 (issue 13).

    python bench/schedule_free.py chapter [--seeds 0 1 2]   # simple_cnn 64px, bs 128, 8 epochs: SGD one-cycle vs SGD-SF
    python bench/schedule_free.py train [--seeds 0 1 2]     # the 5-epoch recipe of the 09 peer: Adam one-cycle vs AdamW-SF
    python bench/schedule_free.py anytime [--plot f.png]    # one SF run's accuracy after every epoch vs one-cycle runs
                                                            # told each budget in advance (chapter recipe, seed 0)
    python bench/schedule_free.py sweep --recipe chapter --lrs 0.5 1 2   # the SF learning rate, on a seed not reported
    python bench/schedule_free.py chapter --smoke           # the same code on a few generated images: checks the script

Recipes: `chapter` is the chapter's (simple_cnn, 64px, bs 128, 8 epochs, SGD lr 0.1 mom 0.9 one-cycle, no label
smoothing); `train` is `minifastai-train`'s 5-epoch recipe (resnet_small, 56px, bs 128, 5 epochs, Adam lr 3e-3 wd 0.01
one-cycle, label smoothing 0.1, crops >= half the image). Both read the data through the decode-once fast path
(`minifastai.fastpath.cached_dls`): every image is decoded once per invocation, and that time is not counted; the
chapter recipe uses whole-image crops (min scale 1.0, aspect jitter and flips), as `bench/train.py`'s fast chapter
recipe does. Every method of a recipe sees the same batches for a given seed (seed = model init and data order).
The schedule-free runs use `ScheduleFreeCB` and the optimizer's own warmup (`--warmup` epochs), no `OneCycle`.
`fit s` is the wall time of `fit` (training and validating every epoch). For the schedule-free runs of a model
with BatchNorm, `acc BN@x` is the final accuracy after recomputing the BatchNorm statistics at x from
`--bn-batches` training batches (`recompute_bn_stats`): the run itself is the same, so the two accuracies are
of the same weights. Run it on an otherwise idle machine, one invocation at a time.
"""
import argparse, math, os, statistics, tempfile, time
from functools import partial
from pathlib import Path

import torch
from minifastai.data import URLs
from minifastai.layers import simple_cnn, resnet_small
from minifastai.loss import cross_entropy
from minifastai.learner import Learner, SGD, SetupLearnerCB, Recorder, accuracy
from minifastai.optimizers import Adam
from minifastai.schedulers import OneCycle
from minifastai.fastpath import cached_dls
from minifastai.train import get_data, split_files, EpochSeed
from minifastai.schedule_free import SGDScheduleFree, AdamWScheduleFree, ScheduleFreeCB, recompute_bn_stats

RECIPES = {
    'chapter': dict(arch=simple_cnn, size=64, epochs=8, ls=0., min_scale=1.0),
    'train': dict(arch=resnet_small, size=56, epochs=5, ls=0.1, min_scale=0.5),
}
# name: (optimizer class and its settings, lr, schedule-free?)
METHODS = {
    'chapter': {'SGD one-cycle lr 0.1': (partial(SGD, mom=0.9), 0.1, False),
                'SGD-SF lr {sgd_lr}': (partial(SGDScheduleFree, mom=0.9), 'sgd_lr', True)},
    'train': {'Adam one-cycle lr 3e-3 wd 0.01': (partial(Adam, wd=0.01, mom=0.9), 3e-3, False),
              'AdamW-SF lr {adam_lr} wd 0.01': (partial(AdamWScheduleFree, wd=0.01, mom=0.9), 'adam_lr', True)},
}

def load_data(recipe, smoke=False):
    "The recipe's cached `DataLoaders` (bs 128; `smoke`: 8 generated images per class, bs 16)"
    r = RECIPES[recipe]
    if smoke:
        from minifastai.testing import make_images
        path = make_images(Path(tempfile.mkdtemp()) / 'smoke', classes=tuple('abcd'), n_train=32, n_valid=8, size=(80, 72), odd=False)
    else: path = get_data(URLs.IMAGENETTE_160)
    t0 = time.time()
    dls = cached_dls(*split_files(path), size=r['size'], bs=16 if smoke else 128, n_workers=os.cpu_count(),
                     device='cpu', scale=(r['min_scale'], 1.))
    print(f"{recipe}: decoded {len(dls.train.x)} + {len(dls.valid.x)} images in {time.time() - t0:.1f} s")
    return dls

def run(recipe, dls, opt_func, lr, sf, seed, epochs=None, warmup=0.5, bn_batches=8):
    "One training run; returns the accuracy after each epoch, the fit time, and (schedule-free, BatchNorm) the final accuracy after a BatchNorm recompute at x"
    r = RECIPES[recipe]
    epochs = epochs or r['epochs']
    torch.manual_seed(seed)
    dls.train.seed = seed
    n_out = int(dls.train.y.max()) + 1
    if sf: opt_func = partial(opt_func, warmup_steps=int(warmup * len(dls.train)))
    learn = Learner(r['arch'](n_out), dls, partial(cross_entropy, label_smoothing=r['ls']), lr,
                    cbs=[SetupLearnerCB('cpu')], opt_func=opt_func)
    rec = Recorder(accuracy)
    t0 = time.time()
    learn.fit(epochs, cbs=[rec, EpochSeed(seed), ScheduleFreeCB() if sf else OneCycle(lr)])
    fit_s = time.time() - t0
    accs, acc_bn = [v[3] for v in rec.values], float('nan')
    if sf and any(hasattr(m, 'running_mean') for m in learn.model.modules()):
        dls.train.epoch = 10_000   # batches of an epoch no run trains on
        batches = [xb for _, (xb, _) in zip(range(bn_batches), dls.train)]
        recompute_bn_stats(learn.model, batches)
        acc_bn = learn.validate(metrics=[accuracy])[1]
    return accs, fit_s, acc_bn

def mean_sd(xs): return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.)

def compare(recipe, args):
    dls, rows = load_data(recipe, args.smoke), []
    for name, (opt_func, lr, sf) in METHODS[recipe].items():
        lr = getattr(args, lr) if isinstance(lr, str) else lr
        name = name.format(sgd_lr=args.sgd_lr, adam_lr=args.adam_lr)
        res = [run(recipe, dls, opt_func, lr, sf, s, args.epochs, args.warmup, args.bn_batches) for s in args.seeds]
        for s, (accs, t, acc_bn) in zip(args.seeds, res):
            print(f'  {name}, seed {s}: accuracy per epoch {[round(a, 4) for a in accs]}, fit {t:.1f} s, BN@x {acc_bn:.4f}')
        rows.append((name, res))
    n_ep = args.epochs or RECIPES[recipe]['epochs']
    print(f"\n{recipe} recipe, {n_ep} epochs, seeds {' '.join(map(str, args.seeds))}; torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} threads")
    print(f"{'method':<32} {'valid acc mean':>14} {'sd':>7} {'min':>7} {'max':>7} {'fit s':>7} {'acc BN@x':>9}")
    for name, res in rows:
        finals = [a[-1] for a, _, _ in res]
        m, sd = mean_sd(finals)
        bn = [b for _, _, b in res]
        bn_s = f'{statistics.mean(bn):>9.4f}' if not any(math.isnan(b) for b in bn) else f"{'-':>9}"
        print(f"{name:<32} {m:>14.4f} {sd:>7.4f} {min(finals):>7.4f} {max(finals):>7.4f} {statistics.mean(t for _, t, _ in res):>7.1f} {bn_s}")
    dls.close()

def anytime(args):
    recipe, seed = 'chapter', args.seeds[0]
    dls, n = load_data(recipe, args.smoke), args.epochs or RECIPES['chapter']['epochs']
    (opt_sgd, lr0, _), (opt_sf, _, _) = METHODS[recipe].values()
    sf_accs, sf_t, _ = run(recipe, dls, opt_sf, args.sgd_lr, True, seed, n, args.warmup)
    oc = {b: run(recipe, dls, opt_sgd, lr0, False, seed, b) for b in sorted(set(args.budgets) | {n})}
    print(f"\nanytime: chapter recipe, seed {seed}; accuracy after each epoch of one SGD-SF run (lr {args.sgd_lr}, told nothing)\n"
          f"against one-cycle SGD runs (lr {lr0}) told the budget in advance; {os.cpu_count()} CPU cores")
    print(f"{'epochs':>6} {'SGD-SF (one run)':>17} {'one-cycle told':>15} {f'one-cycle {n}-epoch run':>22}")
    for e in range(1, n + 1):
        told = f'{oc[e][0][-1]:.4f}' if e in oc else ''
        print(f'{e:>6} {sf_accs[e - 1]:>17.4f} {told:>15} {oc[n][0][e - 1]:>22.4f}')
    print(f"fit time: SGD-SF {n} epochs {sf_t:.1f} s; one-cycle runs {sum(t for _, t, _ in oc.values()):.1f} s in all")
    if args.plot:
        import matplotlib; matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(range(1, n + 1), sf_accs, 'o-', label='Schedule-Free SGD, one run')
        ax.plot(sorted(oc), [oc[b][0][-1] for b in sorted(oc)], 's--', label='one-cycle, told the budget')
        ax.plot(range(1, n + 1), oc[n][0], ':', label=f'one-cycle {n} epochs, stopped early')
        ax.set_xlabel('epochs (budget)'); ax.set_ylabel('validation accuracy'); ax.legend(fontsize=8)
        fig.tight_layout(); fig.savefig(args.plot, dpi=100)
    dls.close()

def sweep(args):
    dls = load_data(args.recipe, args.smoke)
    _, (opt_func, _, _) = METHODS[args.recipe].values()
    print(f'\nsweep: {args.recipe} recipe, schedule-free, seed {args.seeds[0]}')
    for lr in args.lrs:
        accs, t, bn = run(args.recipe, dls, opt_func, lr, True, args.seeds[0], args.epochs, args.warmup)
        print(f'lr {lr:<8g} accuracy per epoch {[round(a, 4) for a in accs]}  fit {t:.1f} s  BN@x {bn:.4f}')
    dls.close()

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('mode', choices=['chapter', 'train', 'anytime', 'sweep'])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=None, help="default: the recipe's")
    p.add_argument('--sgd-lr', type=float, default=1.0, help='SGD-SF learning rate (default: %(default)s)')
    p.add_argument('--adam-lr', type=float, default=3e-3, help='AdamW-SF learning rate (default: %(default)s)')
    p.add_argument('--warmup', type=float, default=0.5, help='schedule-free warmup, in epochs (default: %(default)s)')
    p.add_argument('--bn-batches', type=int, default=8, help='training batches for the BatchNorm recompute (default: %(default)s)')
    p.add_argument('--budgets', type=int, nargs='+', default=[1, 2, 4, 6], help='anytime: one-cycle budgets (default: 1 2 4 6 + all)')
    p.add_argument('--plot', default=None, help='anytime: save the plot to this file')
    p.add_argument('--recipe', choices=list(RECIPES), default='chapter', help='sweep: the recipe')
    p.add_argument('--lrs', type=float, nargs='+', default=[0.5, 1., 2.], help='sweep: the learning rates')
    p.add_argument('--smoke', action='store_true', help='a few generated images: checks the script, measures nothing')
    args = p.parse_args()
    if args.mode in ('chapter', 'train'): compare(args.mode, args)
    elif args.mode == 'anytime': anytime(args)
    else: sweep(args)

if __name__ == '__main__': main()
