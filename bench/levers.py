"""The default recipe's levers toward 85% on 2 CPU cores: each lever trained by the real command, for each seed.

    python bench/levers.py LEVER[:SEED] ...      # e.g. bs64:0 bs64:1 se:0; a lever alone means seed 0
    python bench/levers.py --list                # the levers, and the runs stored for each
    python bench/levers.py --table               # the stored runs: each lever's mean accuracy over its seeds

Each run is `minifastai.train.main` with its base recipe's arguments (`BASE`, the old default, or `DEFAULT`, the
command's defaults) plus the lever's, into a temporary folder, one
after the other in this process; its last epoch's validation accuracy and its total time are stored under
"bench/levers.py" in bench/results.json as soon as it ends (a lever and seed run again replaces its entry). Times
depend on the machine and on its load: read a lever's cost from its FLOPs (09a_recipes prints them), its time only
beside a base run of the same session. A network that is not in the package (`resnet_small` with squeeze-and-excitation,
or `resnet_small_d` with a blur before each stride-2 conv) is registered in the command's `ARCHS` under its own name here, and weight averaging is a callback given to the command, so every lever runs through the same command.
"""
import argparse, contextlib, io, json, sys, tempfile, time
from collections import namedtuple
from pathlib import Path

import torch
import minifastai.train as T
from minifastai.resnet import ResBlock, SEModule
import torch.nn.functional as F
from minifastai.resnet import resnet_small_d
from minifastai.module import Module
from minifastai.layers import ConvLayer, Linear, Sequential, AdaptivePool, activate
from minifastai.loop import Callback

sys.path.insert(0, str(Path(__file__).parent))
from train import machine, save, RESULTS   # bench/train.py: the host in words, the results file

class SEResBlock(ResBlock):
    "`ResBlock` with squeeze-and-excitation on its residual branch, before the sum"
    def __init__(self, ni, nf, stride=1, act=True, reduction=16):
        super().__init__(ni, nf, stride, act)
        self.se = SEModule(nf, reduction, act)
    def forward(self, x):
        res = self.se(self.convs(x))
        res += x if self.idconv is None else self.idconv(x)
        return activate(res, self.act)

def small_net(block, widths=(32, 64, 128, 256)):
    "`resnet_small`'s layout (a stride-2 stem conv, then one `block` per halving) with another block or widths"
    def net(n_out=10, act=True):
        w = widths
        return Sequential(ConvLayer(3, w[0], stride=2, bias=False, bn=True, act=act),
                          *[block(a, b, 2, act) for a, b in zip(w[:-1], w[1:])], AdaptivePool(), Linear(w[-1], n_out))
    return net

class WeightAverage(Callback):
    "An exponential moving average of the weights (and batch norm statistics) over the last `last` of training, validated in the last epoch"
    order = 100
    def __init__(self, beta=0.99, last=0.25): self.beta, self.last = beta, last
    def before_fit(self): self.avg = None
    def after_step(self):
        if (self.epoch + self.num / len(self.dl)) / self.n_epochs < 1 - self.last: return
        state = list(self.learner.model.state_dict().values())
        with torch.no_grad():
            if self.avg is None: self.avg = [t.detach().clone() for t in state]
            else:
                for a, t in zip(self.avg, state): a.lerp_(t, 1 - self.beta) if t.is_floating_point() else a.copy_(t)
    def before_epoch(self):
        if not self.learner.training and self.epoch == self.n_epochs - 1 and self.avg is not None:
            with torch.no_grad():
                for a, t in zip(self.avg, self.learner.model.state_dict().values()): t.copy_(a)

class Blur(Module):
    "A fixed depthwise 3x3 binomial blur ([1, 2, 1] outer [1, 2, 1] / 16), zero-padded: what a stride-2 conv reads, low-passed first"
    def __init__(self, ch):
        super().__init__()
        k = torch.tensor([1., 2., 1.])
        self.register_buffer('k', (k[:, None] * k[None] / 16).expand(ch, 1, 3, 3).clone())
    def forward(self, x): return F.conv2d(x, self.k, padding=1, groups=x.shape[1])

def blurred_d(n_out=10, act=True):
    "`resnet_small_d` with a `Blur` before each stride-2 3x3 conv (the stem's included): anti-aliased downsampling"
    m = list(resnet_small_d(n_out, act).layers)
    for b in m[1:4]: b.convs = Sequential(Blur(b.convs[0].w.shape[1]), *b.convs.layers)
    return Sequential(Blur(3), *m)

NETS = {'resnet_small_se': small_net(SEResBlock), 'resnet_small_d_blur': blurred_d}
# The recipe every lever is measured against, spelt out so that its runs stay comparable whatever the command's
# defaults become: resnet_small, 10 epochs from 32 to 80 pixels, Ranger 3e-2 flat-cos, wd 0.01, bs 128, label
# smoothing 0.1, crops of at least half the image, our own batch norm kernel
BASE = ['--arch', 'resnet_small', '--epochs', '10', '--size', '80', '--resize-from', '32', '--opt', 'ranger', '--lr', '0.03',
        '--wd', '0.01', '--bs', '128', '--ls', '0.1', '--min-scale', '0.5', '--bn', 'ours']
# The default recipe of the command, spelt out the same way: the base with ResNet-D's shortcuts, batches of 64, label
# smoothing 0.2 and PyTorch's batch norm kernel; the levers toward 85% from there are measured on it
DEFAULT = [a for k, v in zip(BASE[::2], BASE[1::2]) for a in (k, {'--arch': 'resnet_small_d', '--bs': '64', '--ls': '0.2', '--bn': 'auto'}.get(k, v))]
BASES = {'base': BASE, 'default': DEFAULT}
Lever = namedtuple('Lever', 'what argv cbs base')   # what it changes, the command's arguments and callbacks on top of the recipe BASES[base]
LEVERS = {
    'base': Lever('the base recipe', [], None, 'base'),
    'bs64': Lever('batches of 64', ['--bs', '64'], None, 'base'),
    'ls0.2': Lever('label smoothing 0.2', ['--ls', '0.2'], None, 'base'),
    'se': Lever('squeeze-and-excitation in each block', ['--arch', 'resnet_small_se'], None, 'base'),
    'resnetd': Lever("ResNet-D's average-pooled shortcuts", ['--arch', 'resnet_small_d'], None, 'base'),
    'ms0.35': Lever('random crops of at least 35% of the image', ['--min-scale', '0.35'], None, 'base'),
    'lr6e-2': Lever('Ranger at 6e-2', ['--lr', '0.06'], None, 'base'),
    'wd0.1': Lever('weight decay 0.1', ['--wd', '0.1'], None, 'base'),
    'd-bs64-ls0.2': Lever("ResNet-D's shortcuts, batches of 64, label smoothing 0.2", ['--arch', 'resnet_small_d', '--bs', '64', '--ls', '0.2'], None, 'base'),
    'e12': Lever('12 epochs', ['--epochs', '12'], None, 'base'),
    'ema': Lever('an average of the weights over the last quarter', [], lambda: [WeightAverage()], 'base'),
    'default': Lever('the default recipe', [], None, 'default'),
    'd+ema': Lever('an average of the weights over the last quarter', [], lambda: [WeightAverage()], 'default'),
    'd+lr2e-2': Lever('Ranger at 2e-2', ['--lr', '0.02'], None, 'default'),
    'd+ls0.3': Lever('label smoothing 0.3', ['--ls', '0.3'], None, 'default'),
    'd+ms0.35': Lever('random crops of at least 35% of the image', ['--min-scale', '0.35'], None, 'default'),
    'd+bs32': Lever('batches of 32', ['--bs', '32'], None, 'default'),
    'd+blur': Lever('a blur before each stride-2 conv', ['--arch', 'resnet_small_d_blur'], None, 'default'),
    'd+wd0.05': Lever('weight decay 0.05', ['--wd', '0.05'], None, 'default'),
    'd+96e8': Lever('8 epochs, the last at 96 pixels (as many training FLOPs)', ['--size', '96', '--epochs', '8'], None, 'default'),
    'd+96': Lever('the last two epochs at 96 pixels', ['--size', '96'], None, 'default'),
    'd+bf16': Lever('bfloat16 autocast (where the CPU computes it natively)', ['--precision', 'bfloat16'], None, 'default'),
}

def stored():
    return json.loads(RESULTS.read_text()).get('bench/levers.py', {}).get('runs', {}) if RESULTS.exists() else {}

def run(name, seed):
    "Train lever `name` with `seed` by the command; store and return its accuracy and times"
    what, argv, cbs, base = LEVERS[name]
    T.ARCHS.update(NETS)
    with tempfile.TemporaryDirectory() as d:
        with contextlib.redirect_stdout(io.StringIO()):
            T.main(BASES[base] + argv + ['--seed', str(seed), '--out', f'{d}/run'], cbs=cbs() if cbs else (), bars=False)
        m = json.loads(Path(d, 'run', 'metrics.json').read_text())
    r = {'accuracy': round(m['epochs'][-1]['accuracy'], 4), 'total_s': round(m['time']['total_s'], 1),
         'date': time.strftime('%Y-%m-%d %H:%M')}
    runs = stored(); runs.setdefault(name, {})[str(seed)] = r
    save('bench/levers.py', {'machine': machine(), 'date': time.strftime('%Y-%m-%d'), 'runs': runs,
                             'levers': {k: v[0] for k, v in LEVERS.items()}, 'bases': BASES})
    return r

def table(kept=None, on='base'):
    "Each stored lever on the base recipe `on` (its accuracy by seed and its mean, and its mean difference from that recipe's runs on the same seeds); `kept`: {lever: 'kept' or 'dropped'}, a column"
    runs, kept = stored(), kept or {}
    base = runs.get(on, {})
    print(f"{'lever':<58} " + (f"{'default':<8} " if kept else '') + f"{'mean acc':>8} {'vs ' + on:>10}   by seed")
    for name, (what, *_) in LEVERS.items():
        rs = runs.get(name)
        if not rs or LEVERS[name].base != on: continue
        acc = sum(r['accuracy'] for r in rs.values()) / len(rs)
        same = [s for s in rs if s in base]
        d = sum(rs[s]['accuracy'] - base[s]['accuracy'] for s in same) / len(same) if same and name != on else None
        print(f"{what:<58} " + (f"{kept.get(name, ''):<8} " if kept else '') + f"{acc:>8.4f} "
              f"{'' if d is None else f'{100 * d:+.2f}':>10}   " + '  '.join(f"{s}: {r['accuracy']:.4f}" for s, r in sorted(rs.items())))

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs', nargs='*', metavar='LEVER[:SEED]')
    p.add_argument('--list', action='store_true'); p.add_argument('--table', action='store_true')
    a = p.parse_args()
    for spec in a.runs:
        name, _, seed = spec.partition(':')
        if name not in LEVERS: p.error(f'unknown lever {name!r}: one of {", ".join(LEVERS)}')
        print(name, seed or 0, run(name, int(seed or 0)), flush=True)
    if a.list:
        for k, (what, argv, cbs, base) in LEVERS.items(): print(f'{k:<10} {"on " + base:<11} {what:<45} {" ".join(argv)}{" + callback" if cbs else ""}  seeds stored: {sorted(stored().get(k, {}))}')
    if a.table or not (a.runs or a.list):
        for on in BASES: table(on=on); print()
