"""The chapter's run, `fit(8)` of `simple_cnn` with `OneCycle(0.1)` on Imagenette-160 at 64px (bs 128), two ways:

  (a)  the chapter's cells unchanged, on minifastai: its `Dataset`, `DataLoader`, `DataLoaders`, `Learner`,
       `SetupLearnerCB`, `TrackResults`, `OneCycle`, `simple_cnn` and `cross_entropy`, in this process
  (b)  the chapter's own code for the same run, as the chapter writes it (quoted below): its Dataset (PIL
       decode and resize of every JPEG), its DataLoader (a new fork process pool per epoch), its Module,
       ConvLayer, Linear, Sequential, simple_cnn, cross_entropy, SGD, Learner and callbacks

Usage: MINIFASTAI_MIRROR=file:///path/to/data python bench/chapter.py [--epochs 8] [--threads 1] [--uncached]
From Python: `chapter_rows(epochs=8, every=1, threads=1, uncached=False)` returns the rows, `print_rows(rows)`
prints them (`bench/train.py` does both).

Each row: wall seconds from building the datasets to the end of `fit`, the last epoch's validation accuracy,
and its time over the chapter's. Both use the same file list and `n_workers = min(16, cpus)`, as the chapter
does; the page cache is warmed first, so both decode from memory. (b) runs in a subprocess with
OMP_NUM_THREADS=1: the chapter's fork pool hangs at its first batch when torch has run a multi-threaded op
before the fork, so that is the only setting in which it runs; (a) runs in this process with torch on as
many threads (`--threads`, default 1), so that the rows compare the code, not the thread counts.
`--uncached` adds (a0), (a) with the DataLoader's decode-once cache off (`cache_mb=0`).
Deviations in (b), none slowing it: `SetupLearnerCB` calls `model.cuda()` only when there is a GPU (the
chapter's `Module.cuda` fails without one), there is no progress bar (nor in (a)), `store_attr` takes the
current fastcore's arguments, and fastai's `tensor` (PIL image -> numpy -> tensor) is written out.
"""
import os, sys, io, json, time, argparse, subprocess, contextlib

def _last_valid_acc(out):
    "The accuracy of the last `epoch False loss accuracy` row that `TrackResults` printed"
    rows = [l.split() for l in out.splitlines() if len(l.split()) == 4 and l.split()[1] == 'False']
    return float(rows[-1][3]) if rows else float('nan')

def _files(every=1):
    "Imagenette-160's image files (every `every`-th one: a smoke test)"
    from minifastai.data import URLs, untar_data, get_image_files
    return get_image_files(untar_data(URLs.IMAGENETTE_160))[::every]

def ours(epochs=8, every=1, cache=True, threads=1):
    "(seconds, printed rows) of the chapter's cells on minifastai (`cache=False`: with `cache_mb=0`), torch on `threads` threads"
    import torch
    from functools import partial
    from fastcore.foundation import L
    from fastcore.basics import defaults
    from minifastai.data import Dataset, DataLoader, DataLoaders
    from minifastai.learner import Learner, SetupLearnerCB, TrackResults
    from minifastai.schedulers import OneCycle
    from minifastai.layers import simple_cnn
    from minifastai.loss import cross_entropy
    if not cache: DataLoader = partial(DataLoader, cache_mb=0)
    files, nt = _files(every), torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        # the chapter's cells (with `v2i` passed: the package's Dataset does not read a global)
        lbls = files.map(lambda o: o.parent.name).unique()
        v2i = lbls.val2idx()
        train_filt = L(o.parent.parent.name == 'train' for o in files)
        train, valid = files[train_filt], files[~train_filt]
        train_ds, valid_ds = Dataset(train, v2i), Dataset(valid, v2i)
        n_workers = min(16, defaults.cpus)
        train_dl = DataLoader(train_ds, bs=128, shuffle=True, n_workers=n_workers)
        valid_dl = DataLoader(valid_ds, bs=256, shuffle=False, n_workers=n_workers)
        dls = DataLoaders(train_dl, valid_dl)
        cbs = [SetupLearnerCB(), TrackResults()]
        torch.manual_seed(42)
        onecyc = OneCycle(0.1)
        learn = Learner(simple_cnn(), dls, cross_entropy, lr=0.1, cbs=cbs + [onecyc])
        learn.fit(epochs)
        dls.close()
    t = time.perf_counter() - start
    torch.set_num_threads(nt)
    return t, out.getvalue()

CHAPTER = r'''
import numpy as np, torch
from torch import Tensor, nn
import torch.nn.functional as F
from PIL import Image
from fastcore.basics import GetAttr, store_attr, noop, defaults, first
from fastcore.foundation import L
from fastcore.parallel import ProcessPoolExecutor
from minifastai.data import to_device

def tensor(x):  # fastai's `tensor`, which the chapter uses, as far as the chapter needs it: PIL images via numpy
    return torch.from_numpy(np.array(x)) if isinstance(x, Image.Image) else torch.tensor(x)

class Dataset:
    def __init__(self, fns): self.fns=fns
    def __len__(self): return len(self.fns)
    def __getitem__(self, i):
        im = Image.open(self.fns[i]).resize((64,64)).convert('RGB')
        y = v2i[self.fns[i].parent.name]
        return tensor(im).float()/255, tensor(y)

def collate(idxs, ds):
    xb,yb = zip(*[ds[i] for i in idxs])
    return torch.stack(xb),torch.stack(yb)

class DataLoader:
    def __init__(self, ds, bs=128, shuffle=False, n_workers=1):
        self.ds,self.bs,self.shuffle,self.n_workers = ds,bs,shuffle,n_workers

    def __len__(self): return (len(self.ds)-1)//self.bs+1

    def __iter__(self):
        idxs = L.range(self.ds)
        if self.shuffle: idxs = idxs.shuffle()
        chunks = [idxs[n:n+self.bs] for n in range(0, len(self.ds), self.bs)]
        with ProcessPoolExecutor(self.n_workers) as ex:
            yield from ex.map(collate, chunks, ds=self.ds)

class Normalize:
    def __init__(self, stats): self.stats=stats
    def __call__(self, x):
        if x.device != self.stats[0].device:
            self.stats = to_device(self.stats, x.device)
        return (x-self.stats[0])/self.stats[1]

class Parameter(Tensor):
    def __new__(self, x): return Tensor._make_subclass(Parameter, x, True)
    def __init__(self, *args, **kwargs): self.requires_grad_()

class Module:
    def __init__(self):
        self.hook,self.params,self.children,self._training = None,[],[],False

    def register_parameters(self, *ps): self.params += ps
    def register_modules   (self, *ms): self.children += ms

    @property
    def training(self): return self._training
    @training.setter
    def training(self,v):
        self._training = v
        for m in self.children: m.training=v

    def parameters(self):
        return self.params + sum([m.parameters() for m in self.children], [])

    def __setattr__(self,k,v):
        super().__setattr__(k,v)
        if isinstance(v,Parameter): self.register_parameters(v)
        if isinstance(v,Module):    self.register_modules(v)

    def __call__(self, *args, **kwargs):
        res = self.forward(*args, **kwargs)
        if self.hook is not None: self.hook(res, args)
        return res

    def cuda(self):
        for p in self.parameters(): p.data = p.data.cuda()

class ConvLayer(Module):
    def __init__(self, ni, nf, stride=1, bias=True, act=True):
        super().__init__()
        self.w = Parameter(torch.zeros(nf,ni,3,3))
        self.b = Parameter(torch.zeros(nf)) if bias else None
        self.act,self.stride = act,stride
        init = nn.init.kaiming_normal_ if act else nn.init.xavier_normal_
        init(self.w)

    def forward(self, x):
        x = F.conv2d(x, self.w, self.b, stride=self.stride, padding=1)
        if self.act: x = F.relu(x)
        return x

class Linear(Module):
    def __init__(self, ni, nf):
        super().__init__()
        self.w = Parameter(torch.zeros(nf,ni))
        self.b = Parameter(torch.zeros(nf))
        nn.init.xavier_normal_(self.w)

    def forward(self, x): return x@self.w.t() + self.b

class Sequential(Module):
    def __init__(self, *layers):
        super().__init__()
        self.layers = layers
        self.register_modules(*layers)

    def forward(self, x):
        for l in self.layers: x = l(x)
        return x

class AdaptivePool(Module):
    def forward(self, x): return x.mean((2,3))

def simple_cnn():
    return Sequential(
        ConvLayer(3 ,16 ,stride=2), #32
        ConvLayer(16,32 ,stride=2), #16
        ConvLayer(32,64 ,stride=2), # 8
        ConvLayer(64,128,stride=2), # 4
        AdaptivePool(),
        Linear(128, 10)
    )

def nll(input, target): return -input[range(target.shape[0]), target].mean()
def log_softmax(x): return x - x.logsumexp(-1,keepdim=True)
def cross_entropy(preds, yb): return nll(log_softmax(preds), yb).mean()

class SGD:
    def __init__(self, params, lr, wd=0.): store_attr('params,lr,wd')
    def step(self):
        for p in self.params:
            p.data -= (p.grad.data + p.data*self.wd) * self.lr
            p.grad.data.zero_()

class DataLoaders:
    def __init__(self, *dls): self.train,self.valid = dls

class CancelFitException(Exception): pass

class Learner:
    def __init__(self, model, dls, loss_func, lr, cbs, opt_func=SGD):
        store_attr('model,dls,loss_func,lr,cbs,opt_func')
        for cb in cbs: cb.learner = self

    def one_batch(self):
        self('before_batch')
        xb,yb = self.batch
        self.preds = self.model(xb)
        self.loss = self.loss_func(self.preds, yb)
        if self.model.training:
            self.loss.backward()
            self.opt.step()
        self('after_batch')

    def one_epoch(self, train):
        self.model.training = train
        self('before_epoch')
        dl = self.dls.train if train else self.dls.valid
        for self.num,self.batch in enumerate(dl):  # the chapter wraps `dl` in `progress_bar(dl, leave=False)`
            self.one_batch()
        self('after_epoch')

    def fit(self, n_epochs):
        self('before_fit')
        self.opt = self.opt_func(self.model.parameters(), self.lr)
        self.n_epochs = n_epochs
        try:
            for self.epoch in range(n_epochs):
                self.one_epoch(True)
                self.one_epoch(False)
        except CancelFitException: pass
        self('after_fit')

    def __call__(self,name):
        for cb in self.cbs: getattr(cb,name,noop)()

class Callback(GetAttr): _default='learner'

class SetupLearnerCB(Callback):
    def before_batch(self):
        xb,yb = to_device(self.batch)
        self.learner.batch = tfm_x(xb),yb

    def before_fit(self):
        if torch.cuda.is_available(): self.model.cuda()  # the chapter: `self.model.cuda()`

class TrackResults(Callback):
    def before_epoch(self): self.accs,self.losses,self.ns = [],[],[]

    def after_epoch(self):
        n = sum(self.ns)
        print(self.epoch, self.model.training,
              sum(self.losses).item()/n, sum(self.accs).item()/n)

    def after_batch(self):
        xb,yb = self.batch
        acc = (self.preds.argmax(dim=1)==yb).float().sum()
        self.accs.append(acc)
        n = len(xb)
        self.losses.append(self.loss*n)
        self.ns.append(n)

class OneCycle(Callback):
    def __init__(self, base_lr): self.base_lr = base_lr
    def before_fit(self): self.lrs = []

    def before_batch(self):
        if not self.model.training: return
        n = len(self.dls.train)
        bn = self.epoch*n + self.num
        mn = self.n_epochs*n
        pct = bn/mn
        pct_start,div_start = 0.25,10
        if pct<pct_start:
            pct /= pct_start
            lr = (1-pct)*self.base_lr/div_start + pct*self.base_lr
        else:
            pct = (pct-pct_start)/(1-pct_start)
            lr = (1-pct)*self.base_lr
        self.opt.lr = lr
        self.lrs.append(lr)
'''

RUN = r'''
lbls = files.map(lambda o: o.parent.name).unique()
v2i = lbls.val2idx()
train_filt = L(o.parent.parent.name=='train' for o in files)
train,valid = files[train_filt],files[~train_filt]
train_ds,valid_ds = Dataset(train),Dataset(valid)
n_workers = min(16, defaults.cpus)
train_dl = DataLoader(train_ds, bs=128, shuffle=True, n_workers=n_workers)
valid_dl = DataLoader(valid_ds, bs=256, shuffle=False, n_workers=n_workers)
xb,yb = first(train_dl)
stats = [xb.mean((0,1,2)),xb.std((0,1,2))]
norm = Normalize(stats)
def tfm_x(x): return norm(x).permute((0,3,1,2))
dls = DataLoaders(train_dl,valid_dl)
cbs = [SetupLearnerCB(),TrackResults()]
torch.manual_seed(42)
onecyc = OneCycle(0.1)
learn = Learner(simple_cnn(), dls, cross_entropy, lr=0.1, cbs=cbs+[onecyc])
learn.fit(EPOCHS)
'''

def _peer_main(epochs, every=1):
    "In the subprocess: run the chapter's code; print JSON (seconds, printed rows)"
    g = vars(sys.modules['__main__'])  # the pool's workers unpickle `Dataset` and `collate` from `__main__`
    exec(CHAPTER, g)
    g['files'], g['EPOCHS'] = _files(every), epochs
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out: exec(RUN, g)
    print(json.dumps({'seconds': time.perf_counter() - start, 'out': out.getvalue()}))

def chapter(epochs=8, every=1, timeout=3600):
    "(seconds, printed rows) of the chapter's own code, run in a subprocess with OMP_NUM_THREADS=1 (else its pool hangs)"
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, os.path.abspath(__file__), '--peer', '--epochs', str(epochs), '--every', str(every)],
                       capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode: raise RuntimeError(f"the chapter's run failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return res['seconds'], res['out']

def chapter_rows(epochs=8, every=1, threads=1, uncached=False):
    "Run (a) (and (a0), `uncached`), then (b); return rows `(name, seconds, last valid accuracy, seconds / (b)'s seconds)`"
    for f in _files(every): f.read_bytes()  # warm the page cache: all decode from memory
    runs = {"(a) the chapter's cells on minifastai": ours(epochs, every, True, threads)}
    if uncached: runs['(a0) the same with cache_mb=0'] = ours(epochs, every, False, threads)
    runs["(b) the chapter's own code"] = chapter(epochs, every)
    tb = runs["(b) the chapter's own code"][0]
    return [(name, t, _last_valid_acc(o), t / tb) for name, (t, o) in runs.items()]

def print_rows(rows, epochs=8):
    print(f"The chapter's run: fit({epochs}) of simple_cnn, OneCycle(0.1), Imagenette-160 at 64px, bs 128, "
          f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f'{"run":40} {"seconds":>8} {"valid acc":>9} {"time / (b)":>10}')
    for name, t, acc, r in rows: print(f'{name:40} {t:8.1f} {acc:9.3f} {r:10.2f}')

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--threads', type=int, default=1, help="torch threads for (a): 1, as (b) must run")
    p.add_argument('--uncached', action='store_true', help="add (a0): (a) without the DataLoader's decode-once cache")
    p.add_argument('--every', type=int, default=1, help='use every n-th image only (a smoke test)')
    p.add_argument('--peer', action='store_true', help="(internal) run only the chapter's code, print JSON")
    a = p.parse_args()
    if a.peer: return _peer_main(a.epochs, a.every)
    print_rows(chapter_rows(a.epochs, a.every, a.threads, a.uncached), a.epochs)

if __name__ == '__main__': main()
