"""Where the default recipe's training step spends its time on this CPU, part by part, against each part's roof.

    python bench/engine.py [--steps 30]

It decodes Imagenette-160 as minifastai-train does (MINIFASTAI_MIRROR as for bench/train.py), builds the default's
learner (`resnet_small_d` in channels-last memory, PyTorch's batch norm kernel, Ranger, label smoothing 0.2, batches of
64), and at each of the default's training sizes times, as medians over `--steps` batches:
- crops: one training batch cropped from the cache (`box_crops`, 08_fastpath);
- the step: forward, loss and backward on that batch, then the optimizer's step; and how many cores were busy;
- the parts of forward and backward, as torch's profiler shares them out (scaled to the unprofiled time): the
  convolutions' forward and backward passes, with their GFLOPS (torch's FLOP counter) against the float32 sgemm roof
  measured in the same run; batch norm and ReLU, forward and backward together, also in units of one `add` over the
  same tensors (the memory passes they cost: a kernel fusing them would need about 3, see FUSED_ADDS); the rest
  (pooling, the residual additions, the loss, autograd's own work).
A last row adds each part up over the default's run (its sizes by epoch, its batches per epoch; validation and
decoding left out), and two lines say what the run's training would take if the convolutions' backward passes ran at
their forward passes' rate, and if batch norm and ReLU cost FUSED_ADDS adds. Then the whole run, estimated from its parts:
decoding (timed), the training batches (above) and validation (one pass over the subset and one over all of it, timed at
the last size, counted as the run counts them). Last, a compiler's try at the fusion: batch norm with ReLU through
`torch.compile` (inductor, dynamic shapes), forward and backward at the model's own shapes, against the same eager
kernels (`--no-compile` skips it; without a C++ compiler it says why). Writes its figures to bench/results.json.
"""
import argparse, os, statistics, sys, time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from minifastai.batchnorm import BatchNorm
from minifastai.fastpath import keep_freed_memory
from minifastai.train import get_parser, _check, load_data, make_learner, speed_plan

sys.path.insert(0, str(Path(__file__).parent))
from train import machine, save, sgemm_gflops   # bench/train.py: the host in words, the results file, the roof

FUSED_ADDS = 3   # batch norm + ReLU in one kernel each way: forward reads x twice (statistics, then normalise-and-ReLU) and
                 # writes y once; backward reads the gradient and x twice (sums, then the input's gradient) and writes once:
                 # 7 tensor passes, where an `add` makes 3 (reads 2, writes 1); rounded up to 3 adds

CONV_FWD = {'aten::conv2d', 'aten::convolution', 'aten::_convolution', 'aten::mkldnn_convolution'}
CONV_BWD = {'aten::convolution_backward', 'ConvolutionBackward0'}
BN_RELU = ('batch_norm', 'BatchNorm', 'relu', 'Relu', 'clamp_min', 'threshold_backward')

def median_ms(f, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000

@contextmanager
def quiet_stderr():
    "Send file descriptor 2 to /dev/null for the block: the profiler's C++ side writes a line at each start and stop"
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, 'w') as null: os.dup2(null.fileno(), 2)
    try: yield
    finally: os.dup2(saved, 2); os.close(saved)

def part(name):
    "The part of the step that the profiler's op `name` belongs to (autograd's own bookkeeping around each backward op: the rest)"
    if name.startswith('autograd::'): return 'rest'
    if name in CONV_FWD: return 'conv_fwd'
    if name in CONV_BWD: return 'conv_bwd'
    if any(k in name for k in BN_RELU): return 'bn_relu'
    return 'rest'

def conv_flops(learn, xb, yb):
    "FLOPs of the convolutions of one training step (forward; backward), by torch's FLOP counter"
    with FlopCounterMode(display=False) as fc:
        learn.loss_func(learn.model(xb), yb).backward()
    learn.opt.zero_grad()
    c = {str(k): v for k, v in fc.get_flop_counts()['Global'].items()}
    return c.get('aten.convolution', 0), c.get('aten.convolution_backward', 0)

def bn_shapes(learn, xb):
    "The shapes of the inputs of every batch norm of the model, in the order it runs them, for the batch `xb`"
    shapes = []
    hs = [m.register_hook(lambda out, args: shapes.append(out.shape)) for m in learn.model.modules() if isinstance(m, BatchNorm)]
    with torch.no_grad(): learn.model(xb)
    for h in hs: h.remove()
    return shapes

def add_ms(shapes, n):
    "Time of one `add` over channels-last tensors of each of `shapes` (the inputs of the model's batch norms)"
    ts = [torch.randn(s).contiguous(memory_format=torch.channels_last) for s in shapes for _ in range(3)]
    return median_ms(lambda: [torch.add(a, b, out=c) for a, b, c in zip(ts[0::3], ts[1::3], ts[2::3])], n)

def measure(learn, dl, size, n):
    "One row: the step's parts at `size`, in ms per batch; and the shapes of the batch norms' inputs at that size"
    dl.size = size
    it = iter(dl)
    xb, yb = next(it)
    model, opt, loss_func = learn.model, learn.opt, learn.loss_func
    def fwd_bwd(): loss_func(model(xb), yb).backward()
    def opt_step(): opt.step(); opt.zero_grad()
    for _ in range(3): fwd_bwd(); opt_step()
    crops = median_ms(lambda: next(it), n)
    tf, to, c0, t0 = [], [], os.times(), time.perf_counter()
    for _ in range(n):
        t = time.perf_counter(); fwd_bwd(); t1 = time.perf_counter(); opt_step()
        tf.append(t1 - t); to.append(time.perf_counter() - t1)
    wall, c1 = time.perf_counter() - t0, os.times()
    busy = (c1.user - c0.user + c1.system - c0.system) / wall
    fb, optim = statistics.median(tf) * 1000, statistics.median(to) * 1000
    shares = dict.fromkeys(('conv_fwd', 'conv_bwd', 'bn_relu', 'rest'), 0.)
    with quiet_stderr():
        for _ in range(max(3, n // 4)):   # profiled steps (forward and backward only): only their shares are used
            with torch.profiler.profile() as p: fwd_bwd()
            opt_step()
            for e in p.key_averages(): shares[part(e.key)] += e.self_cpu_time_total
    total = sum(shares.values())
    ms = {k: fb * v / total for k, v in shares.items()}
    ff, fbk = conv_flops(learn, xb, yb)
    shapes = bn_shapes(learn, xb)
    adds = add_ms(shapes, n)
    return dict(size=size, step_ms=round(fb + optim, 2), crops_ms=round(crops, 2), optimizer_ms=round(optim, 2),
                **{f'{k}_ms': round(v, 2) for k, v in ms.items()},
                conv_fwd_gflops=round(ff / ms['conv_fwd'] / 1e6, 1), conv_bwd_gflops=round(fbk / ms['conv_bwd'] / 1e6, 1),
                conv_fwd_gflop=round(ff / 1e9, 3), conv_bwd_gflop=round(fbk / 1e9, 3),
                add_ms=round(adds, 3), bn_relu_adds=round(ms['bn_relu'] / adds, 1), cores_busy=round(busy, 2)), shapes

def bn_relu(x, w, b):
    "Batch norm in training mode (batch statistics), then ReLU: what most `ConvLayer`s of the model run after their convolution"
    return F.relu(F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5))

def compiled_bn_relu(shapes_by_size, n):
    "Forward and backward of `bn_relu` over each size's batch norm shapes, ms per batch, eager and through `torch.compile`"
    fn, rows = torch.compile(bn_relu, dynamic=True), []
    def run(f, args): [f(x, w, b).backward(g) for x, w, b, g in args]
    for size, shapes in sorted(shapes_by_size.items()):
        args = []
        for s in shapes:
            x = torch.randn(s).contiguous(memory_format=torch.channels_last).requires_grad_()
            w, b = torch.rand(s[1], requires_grad=True), torch.randn(s[1], requires_grad=True)
            args.append((x, w, b, torch.randn_like(x)))
        try: run(fn, args)   # the first calls compile (no C++ compiler, or a failing one: the error, in one line)
        except Exception as e: return dict(error=f'{type(e).__name__}: {e}'.strip().splitlines()[0][:200])
        rows.append(dict(size=size, eager_ms=round(median_ms(lambda: run(bn_relu, args), n), 2),
                         compiled_ms=round(median_ms(lambda: run(fn, args), n), 2)))
    return dict(rows=rows)

def valid_s(learn, dls, k, n_epochs):
    "Seconds of the run's validation: every epoch but the last on every `k`-th image, the last on all (as `ValidSubset`)"
    dl, model = dls.valid, learn.model
    x, y = dl.x, dl.y
    def one_pass():
        t = time.perf_counter()
        with torch.no_grad():
            for xb, _ in dl: model(xb)
        return time.perf_counter() - t
    model.eval()
    try:
        dl.x, dl.y = x[::k], y[::k]
        one_pass(); sub = one_pass()   # the first pass warms oneDNN's kernels for these shapes
        dl.x, dl.y = x, y
        full = one_pass()
    finally: dl.x, dl.y = x, y; model.train()
    return (n_epochs - 1) * sub + full if k > 1 else n_epochs * full

COLS = ['crops_ms', 'conv_fwd_ms', 'conv_bwd_ms', 'bn_relu_ms', 'optimizer_ms', 'rest_ms']

def print_table(res):
    print(f"{res['machine']}, {res['date']}; sgemm (2048x2048) {res['sgemm_gflops']} GFLOPS in float32, measured in this run")
    print(f"{'size':>4} {'batch ms':>9} {'crops':>6} {'conv fwd':>9} {'GFLOPS':>7} {'conv bwd':>9} {'GFLOPS':>7} "
          f"{'BN+ReLU':>8} {'in adds':>8} {'optim':>6} {'rest':>6} {'cores':>6}")
    for r in res['rows']:
        print(f"{r['size']:>4} {r['step_ms'] + r['crops_ms']:>9.1f} {r['crops_ms']:>6.1f} {r['conv_fwd_ms']:>9.1f} {r['conv_fwd_gflops']:>7.1f} "
              f"{r['conv_bwd_ms']:>9.1f} {r['conv_bwd_gflops']:>7.1f} {r['bn_relu_ms']:>8.1f} {r['bn_relu_adds']:>8.1f} "
              f"{r['optimizer_ms']:>6.1f} {r['rest_ms']:>6.1f} {r['cores_busy']:>6.2f}")
    run = res['run']
    print(f"the default's run, {run['batches']} batches of training (validation and decoding left out), in seconds:")
    print('  ' + ', '.join(f"{k[:-3].replace('_', ' ')} {run[k]:.1f}" for k in COLS) + f"; total {run['total_s']:.1f}")
    h = res['headroom']
    print(f"  convolutions' backward at their forward's GFLOPS: {h['conv_bwd_at_fwd_rate_s']:.1f} s less; batch norm and ReLU "
          f"in {FUSED_ADDS} adds (fused): {h['bn_relu_fused_s']:.1f} s less; both: {h['both_pct']:.1f}% of the run's training")
    w = res.get('whole_run')
    if w: print(f"the whole run, from its parts: decoding {w['decode_s']:.1f} s, training batches {run['total_s']:.1f} s, "
                f"validation {w['valid_s']:.1f} s; {w['total_s']:.1f} s")
    c = res.get('compiled')
    if c is None: return
    if 'error' in c: print(f"batch norm with ReLU through torch.compile: not measured ({c['error']})"); return
    print("batch norm with ReLU, forward and backward at the model's shapes, ms per batch, eager / through torch.compile (inductor):")
    print('  ' + ', '.join(f"{r['size']} px {r['eager_ms']:.1f} / {r['compiled_ms']:.1f}" for r in c['rows']))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=30, help='batches timed at each size (default: %(default)s)')
    p.add_argument('--no-compile', action='store_true', help="skip torch.compile's batch norm with ReLU")
    a = p.parse_args(argv)
    keep_freed_memory()
    tp = get_parser()
    args = tp.parse_args(['--out', '/nonexistent/bench-engine'])   # the default recipe; nothing is written there
    _check(tp, args)
    device = torch.device('cpu')
    t0 = time.perf_counter()
    dls, n_out = load_data(args, device)
    decode = time.perf_counter() - t0
    if not 1 <= a.steps < len(dls.train): p.error(f'--steps {a.steps}: give 1 to {len(dls.train) - 1} (an epoch has {len(dls.train)} batches)')
    torch.manual_seed(0)
    learn = make_learner(args, dls, n_out, device)
    learn.model.to(memory_format=torch.channels_last)   # as ChannelsLastCB does in `fit`
    learn.create_opt()
    gf = round(sgemm_gflops(), 1)
    rows, shapes = zip(*[measure(learn, dls.train, s, a.steps) for s in sorted(set(speed_plan(args)[0]))])
    sizes, per_epoch = speed_plan(args)[0], len(dls.train)
    by = {r['size']: r for r in rows}
    run = {k: sum(by[s][k] for s in sizes) * per_epoch / 1000 for k in COLS}
    run['total_s'], run['batches'] = sum(run[k] for k in COLS), len(sizes) * per_epoch
    bwd_at_fwd = sum(by[s]['conv_bwd_ms'] - by[s]['conv_bwd_gflop'] / by[s]['conv_fwd_gflops'] * 1000 for s in sizes) * per_epoch / 1000
    fused = sum(by[s]['bn_relu_ms'] - FUSED_ADDS * by[s]['add_ms'] for s in sizes) * per_epoch / 1000
    val = valid_s(learn, dls, speed_plan(args)[1], len(sizes))
    res = dict(machine=machine(), date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), sgemm_gflops=gf, steps=a.steps,
               rows=list(rows), run={k: round(v, 1) for k, v in run.items()} | {'batches': run['batches']},
               headroom=dict(conv_bwd_at_fwd_rate_s=round(bwd_at_fwd, 1), bn_relu_fused_s=round(fused, 1),
                             both_pct=round(100 * (bwd_at_fwd + fused) / run['total_s'], 1)),
               whole_run=dict(decode_s=round(decode, 1), valid_s=round(val, 1), total_s=round(decode + run['total_s'] + val, 1)))
    if not a.no_compile: res['compiled'] = compiled_bn_relu({r['size']: s for r, s in zip(rows, shapes)}, a.steps)
    print_table(res)
    save('bench/engine.py', res)

if __name__ == '__main__': main()
