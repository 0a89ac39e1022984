"""Images/s of data loaders over Imagenette-160 train at 64px (bs 128, shuffled), each measured in this run.

  (a)  minifastai DataLoader, float batches (the chapter's items) and uint8 batches
  (b)  torch.utils.data.DataLoader, persistent workers, over the same Dataset (float items), and over
       uint8 items converted to float after collation (the fastest way we know to use it)
  (c)  the chapter's design: a new fork process pool per epoch mapping `collate` over the batches
  (d)  the limit: the same Dataset's __getitem__ in one process, times the number of cores
  (d') the same limit measured with one process per core at once: on a busy machine (d) assumes cores
       that other processes are using, and (d') does not

Usage: MINIFASTAI_MIRROR=file:///path/to/data python bench/dataloader.py [--epochs 3] [--n_workers 2]
Times include starting the workers. Epochs are interleaved across loaders, so load from other processes
hits them alike; the ratios are what to compare. CPU ms/img (main process and workers together) does not
depends much less on that load: it is what each image costs, wherever the time goes.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')  # (c) forks after torch ops: with a multi-threaded pool it hangs
import argparse, time
import multiprocessing as mp
import torch
from fastcore.foundation import L
from fastcore.parallel import ProcessPoolExecutor
from minifastai.data import URLs, untar_data, get_image_files, parent_label, Dataset, DataLoader, collate

class ChapterDataLoader:
    "The chapter's DataLoader, as written: a new process pool every epoch, float items pickled back."
    def __init__(self, ds, bs=128, shuffle=False, n_workers=1): self.ds, self.bs, self.shuffle, self.n_workers = ds, bs, shuffle, n_workers
    def __len__(self): return (len(self.ds) - 1) // self.bs + 1
    def __iter__(self):
        idxs = L.range(self.ds)
        if self.shuffle: idxs = idxs.shuffle()
        chunks = [idxs[n:n + self.bs] for n in range(0, len(self.ds), self.bs)]
        with ProcessPoolExecutor(self.n_workers) as ex: yield from ex.map(collate, chunks, ds=self.ds)

class Uint8Items:
    "`ds`'s items as uint8 HWC tensors (for torch's loader; converted to float after collation)."
    def __init__(self, ds): self.ds = ds
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        im, y = self.ds.get_raw(i)
        return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, 3), torch.tensor(y)

def cpu_seconds():
    "CPU seconds used so far by this process and its children, finished or running (Linux /proc)."
    t, live = os.times(), 0.
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try: f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
        except OSError: continue
        if int(f[1]) == os.getpid(): live += (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
    return t.user + t.system + t.children_user + t.children_system + live

def epoch_cost(dl, convert=False):
    "(wall seconds, CPU seconds) to iterate `dl` once (converting uint8 batches to float when `convert`)."
    start, cpu = time.perf_counter(), cpu_seconds()
    for xb, yb in dl:
        if convert: xb = xb.float() / 255
    return time.perf_counter() - start, cpu_seconds() - cpu

def getitems(ds, idxs):
    for i in idxs: ds[i]

def getitem_cost(ds, m, procs=1):
    "(wall seconds, CPU seconds) for `ds[i]` over `m` items in each of `procs` processes at once (1: this one)."
    start, cpu = time.perf_counter(), cpu_seconds()
    step = len(ds) // (m * procs)
    if procs == 1: getitems(ds, range(0, len(ds), step))
    else:
        ps = [mp.get_context('fork').Process(target=getitems, args=(ds, range(k, len(ds), step * procs)))
              for k in range(0, step * procs, step)]
        for p in ps: p.start()
        for p in ps: p.join()
    return time.perf_counter() - start, cpu_seconds() - cpu

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--n_workers', type=int, default=2)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--size', type=int, default=64)
    a = p.parse_args()
    path = untar_data(URLs.IMAGENETTE_160)
    fns = get_image_files(path, folders=['train'])
    ds = Dataset(fns, L(sorted(set(map(parent_label, fns)))).val2idx(), size=a.size)
    for f in fns: f.read_bytes()  # warm the page cache: we measure decoding, not the disk
    n, nw, bs, cores = len(ds), a.n_workers, a.bs, len(os.sched_getaffinity(0))
    tl = torch.utils.data.DataLoader
    loaders = {  # name: (loader, convert uint8 batches to float?)
        '(a) minifastai DataLoader, float batches': (DataLoader(ds, bs, shuffle=True, n_workers=nw), False),
        '(a) minifastai DataLoader, uint8 batches': (DataLoader(ds, bs, shuffle=True, n_workers=nw, dtype=torch.uint8), True),
        '(b) torch DataLoader, float items': (tl(ds, bs, shuffle=True, num_workers=nw, persistent_workers=True), False),
        '(b) torch DataLoader, uint8 items -> float': (tl(Uint8Items(ds), bs, shuffle=True, num_workers=nw, persistent_workers=True), True),
        "(c) chapter's per-epoch pool": (ChapterDataLoader(ds, bs, shuffle=True, n_workers=nw), False)}
    limit = f'(d) limit: __getitem__ in 1 process x {cores} cores'
    limit_par = f"(d') __getitem__ in {cores} processes at once"
    costs, m = {name: [] for name in [*loaders, limit, limit_par]}, 1000  # name: [(wall, cpu) seconds per image]
    for epoch in range(a.epochs):  # interleaved, so that load from other processes hits every loader alike
        for name, (dl, convert) in loaders.items(): costs[name].append([t / n for t in epoch_cost(dl, convert)])
        w, u = getitem_cost(ds, m)
        costs[limit].append([w / m / cores, u / m])
        costs[limit_par].append([t / (m * cores) for t in getitem_cost(ds, m, cores)])
    rows = {name: (len(c) / sum(w for w, _ in c), 1 / min(w for w, _ in c), 1000 * sum(u for _, u in c) / len(c))
            for name, c in costs.items()}  # img/s over all epochs, img/s in the best epoch, CPU ms per image
    ours = next(iter(rows.values()))
    print(f'Imagenette-160 train ({n:,} images) at {a.size}px, bs {bs}, {nw} workers, {a.epochs} epochs '
          f'(startup included), {cores} cores, load average {os.getloadavg()[0]:.1f} at the end')
    print(f'{"loader":50} {"img/s":>7} {"(a)/this":>8} {"best epoch":>10} {"(a)/this":>8} {"CPU ms/img":>10}')
    for name, (r, b, c) in rows.items():
        print(f'{name:50} {r:7,.0f} {ours[0] / r:8.2f} {b:10,.0f} {ours[1] / b:8.2f} {c:10.3f}')

if __name__ == '__main__': main()
