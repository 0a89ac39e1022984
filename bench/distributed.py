"""Data parallelism on CPU cores: one process with N threads against N processes of one thread each (torchrun).

Measures two things, each printed as a table:
- `train`: `minifastai-train` with its defaults but 5 epochs and one-cycle Adam at 3e-3 (the 5-epoch recipe)
  (resnet_small, 56px, --bs 128, the global batch), on
  Imagenette-160, run once as 1 process x N threads and once under torchrun as N processes x 1 thread (with and,
  with --no-sync, without synchronised BatchNorm): validation accuracy, training time (the epochs) and total time
  (decoding included: every process decodes the data set for itself).
- `allreduce`: the cost of adding up resnet_small's gradients over N gloo processes, per step: `average_grads` with
  the gradients packed into buckets against one collective per tensor, next to the time of one training step of a
  share (forward, backward, optimizer) on one thread, which is the most that overlapping the two could save.

Run from the repository root on an otherwise idle machine, with the data reachable (MINIFASTAI_MIRROR):
    python bench/distributed.py                 # both, N = 2
    python bench/distributed.py allreduce --procs 2
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ALLREDUCE = r'''
import statistics, time, torch
from minifastai.distributed import setup_distributed, average_grads, rank
from minifastai.layers import resnet_small
from minifastai.loss import cross_entropy
from minifastai.optimizers import Adam
setup_distributed('cpu', timeout=120)
torch.manual_seed(0)
m = resnet_small(10); ps = list(m.parameters()); opt = Adam(ps, 3e-3)
x, y = torch.randn(BS, 3, 56, 56), torch.randint(0, 10, (BS,))
def step():
    opt.zero_grad(); cross_entropy(m(x), y).backward(); opt.step()
def timed(f, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000
for _ in range(3): step()
loss = torch.tensor(1.)
res = {'params': len(ps), 'numel': sum(p.numel() for p in ps), 'step': timed(step, 15),
       'bucketed': timed(lambda: average_grads(ps, BS, loss), 30), 'per tensor': timed(lambda: average_grads(ps, BS, loss, cap=1), 30)}
if rank() == 0: print(res)
'''

def _train(out, procs, threads, extra=()):
    "Run `minifastai-train` (under torchrun when `procs` > 1); its metrics.json"
    args = ['-m', 'minifastai.train', '--out', str(out), *extra]
    if procs > 1: args = ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={procs}', *args]
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads)}
    subprocess.run([sys.executable, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((Path(out)/'metrics.json').read_text())

def bench_train(n, epochs, no_sync):
    rows = [('1 process', 1, n, ())] + [(f'torchrun, sync BN', n, 1, ())]
    if no_sync: rows.append(('torchrun, BN per share', n, 1, ('--no-sync-bn',)))
    print(f'minifastai-train defaults with --opt adam, {epochs} epochs, Imagenette-160, global batch 128, on {os.cpu_count()} CPU cores')
    print(f"{'setup':<24}{'procs x threads':>16}{'accuracy':>10}{'train s':>9}{'total s':>9}")
    with tempfile.TemporaryDirectory() as d:
        for i, (name, p, t, extra) in enumerate(rows):
            m = _train(Path(d)/str(i), p, t, ('--epochs', str(epochs), '--opt', 'adam', *extra))
            print(f"{name:<24}{f'{p} x {t}':>16}{m['epochs'][-1]['accuracy']:>10.4f}{m['time']['fit_s']:>9.1f}{m['time']['total_s']:>9.1f}", flush=True)

def bench_allreduce(n, bs):
    from minifastai.distributed import spawn_ranks
    r = spawn_ranks(ALLREDUCE.replace('BS', str(bs)), n, timeout=600, env={'OMP_NUM_THREADS': '1'})
    if any(p.returncode for p in r): sys.exit('\n'.join(p.stderr[-2000:] for p in r))
    res = eval(r[0].stdout)
    print(f"adding up resnet_small's gradients ({res['params']} tensors, {res['numel']:,} floats) over {n} gloo processes, 1 thread each")
    print(f"{'what':<40}{'ms per step':>12}")
    print(f"{f'one training step of a {bs}-image share':<40}{res['step']:>12.1f}")
    for k in 'bucketed', 'per tensor': print(f"{'all-reduce, ' + k:<40}{res[k]:>12.2f}")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('what', nargs='*', default=['train', 'allreduce'], help="'train', 'allreduce' (default: both)")
    p.add_argument('--procs', type=int, default=2, help='processes (and threads of the single process) (default: 2)')
    p.add_argument('--epochs', type=int, default=5, help='(default: %(default)s)')
    p.add_argument('--no-sync', action='store_true', help='also train without synchronised BatchNorm')
    a = p.parse_args()
    if set(a.what) - {'train', 'allreduce'}: p.error(f"unknown measurement(s) {set(a.what) - {'train', 'allreduce'}}")
    if 'allreduce' in a.what: bench_allreduce(a.procs, 128 // a.procs)
    if 'train' in a.what: bench_train(a.procs, a.epochs, a.no_sync)
