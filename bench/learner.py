"""Learner.fit against a hand-written loop: same model, same optimizer, same batches held in memory.

Only the loop differs, so the ratio is the cost of the Learner's machinery (events, callbacks, recording).
Each variant runs `--repeats` times, interleaved with the others, from the same initial weights; we report
the median time and the median of the per-round ratios to the hand-written loop doing the same work (on
the CPU the time is this process's CPU time, which other jobs on a shared machine disturb far less than
wall time; on a GPU it is wall time). Two workloads:
- `cnn`: a small CNN on 32px batches (milliseconds per batch): the ratio a user sees;
- `tiny`: a linear model on batches of 8 (microseconds per batch): the loop is all there is, so the
  difference per batch is the Learner's own overhead, which the `cnn` ratio hides in its noise.

    python bench/learner.py [--repeats 15] [--epochs 1] [--threads 1]
"""
import argparse, contextlib, io, statistics, time
import torch
from torch import nn
import torch.nn.functional as F
from minifastai.data import default_device
from minifastai.learner import Learner, SGD, Recorder, ProgressCB, accuracy

def make_model(kind):
    if kind == 'tiny': return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

def make_batches(n, bs, size, device, g):
    return [(torch.randn(bs, 3, size, size, generator=g).to(device), torch.randint(0, 10, (bs,), generator=g).to(device))
            for _ in range(n)]

class DLs:
    def __init__(self, train, valid): self.train, self.valid = train, valid

def opt_func(params, lr): return SGD(params, lr, wd=1e-4, mom=0.9)

def hand_loop(model, dls, epochs, track):
    "The loop a person would write; with `track`, loss and accuracy summed on the device, read once per phase"
    opt = opt_func(model.parameters(), 0.05)
    for _ in range(epochs):
        for train, dl in [(True, dls.train), (False, dls.valid)]:
            model.train(train)
            tot = acc = 0
            n = 0
            with torch.set_grad_enabled(train):
                for xb, yb in dl:
                    preds = model(xb)
                    loss = F.cross_entropy(preds, yb)
                    if train:
                        opt.zero_grad(); loss.backward(); opt.step()
                    if track:
                        tot = tot + loss.detach() * len(yb); n += len(yb)
                        if not train: acc = acc + accuracy(preds, yb) * len(yb)
            if track: (tot / n).item(), (acc / n).item() if not train else None

def learner_fit(model, dls, epochs, cbs):
    Learner(model, dls, F.cross_entropy, 0.05, cbs=cbs(), opt_func=opt_func).fit(epochs)

def bench(kind, n_train, bs, size, a, dev):
    g = torch.Generator().manual_seed(0)
    dls = DLs(make_batches(n_train, bs, size, dev, g), make_batches(n_train // 4, bs, size, dev, g))
    torch.manual_seed(0)
    model = make_model(kind).to(dev)
    init = {k: v.clone() for k, v in model.state_dict().items()}

    variants = {
        'hand loop':                           lambda: hand_loop(model, dls, a.epochs, track=False),
        'Learner.fit, no callbacks':           lambda: learner_fit(model, dls, a.epochs, lambda: None),
        'hand loop + loss/accuracy':           lambda: hand_loop(model, dls, a.epochs, track=True),
        'Learner.fit + Recorder(accuracy)':    lambda: learner_fit(model, dls, a.epochs, lambda: [Recorder(accuracy)]),
        'Learner.fit + Recorder + ProgressCB': lambda: learner_fit(model, dls, a.epochs, lambda: [Recorder(accuracy), ProgressCB()]),
    }
    peer = {'hand loop': None, 'Learner.fit, no callbacks': 'hand loop', 'hand loop + loss/accuracy': None,
            'Learner.fit + Recorder(accuracy)': 'hand loop + loss/accuracy',
            'Learner.fit + Recorder + ProgressCB': 'hand loop + loss/accuracy'}
    times = {k: [] for k in variants}
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    clock = time.perf_counter if dev.type == 'cuda' else time.process_time
    for r in range(a.repeats + 1):                      # the first round warms up and is dropped
        for k, f in variants.items():
            model.load_state_dict(init)
            sync(); t0 = clock()
            with contextlib.redirect_stdout(io.StringIO()): f()
            sync(); t = clock() - t0
            if r: times[k].append(t)

    n_batches = a.epochs * (len(dls.train) + len(dls.valid))
    print(f'\n{kind}: {a.epochs} epoch(s) x ({len(dls.train)} train + {len(dls.valid)} valid) batches of {bs}x3x{size}x{size}, '
          f'{a.repeats} interleaved repeats')
    print(f"{'variant':38s} {'median s':>9s} {'us/batch':>9s} {'ratio':>7s} {'+us/batch':>10s}  vs")
    for k, ts in times.items():
        m = statistics.median(ts)
        pm = statistics.median(times[peer[k]]) if peer[k] else m
        ratio = statistics.median(t / p for t, p in zip(ts, times[peer[k]])) if peer[k] else 1.
        extra = f'{1e6 * (m - pm) / n_batches:+10.1f}' if peer[k] else f"{'':>10s}"
        print(f"{k:38s} {m:9.3f} {1e6 * m / n_batches:9.1f} {ratio:7.3f} {extra}  {peer[k] or '-'}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=15)
    ap.add_argument('--epochs', type=int, default=1)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = default_device()
    print(f"device: {dev}, torch threads: {a.threads}, {'wall' if dev.type == 'cuda' else 'process CPU'} time")
    bench('cnn', 40, 64, 32, a, dev)
    bench('tiny', 400, 8, 4, a, dev)

if __name__ == '__main__': main()
