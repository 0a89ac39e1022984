"""Benchmark: our Module/layers against the same architectures written with torch.nn.

Times forward+backward (training mode) of simple_cnn, resnet_small and resnet18 built from minifastai's
layers, and of the same architectures in torch.nn with the same weights and inputs; and our BatchNorm
against nn.BatchNorm2d; resnet_small and the batch norms again in the channels-last memory format (rows
marked `CL`), the layout minifastai-train uses; then our resnet_small's training step at the CPU recipe's
shape (batch 128, 56px) in channels-last against NCHW; then our xresnet50's step (channels-last) with our
batch norm kernel against PyTorch's fused one (`BatchNorm(fused=True)`, what `minifastai-train --bn auto`
takes), with the number of operations that do work (kernels, on a GPU) each step issues; and the same for the
command's default network, resnet_small_d, at batch 64 and 32 and 80 pixels. "Ours" is always our own batch norm code
(`fused=False`), on a GPU too. Timings are interleaved (ours, torch, torch, ours,
...): we report the median time of each and the median of the per-rep ratios, so that noise from other
processes hits both sides alike.
Runs on CUDA when available (wall-clock time), else on CPU with one thread by default, timing the CPU
time of the process: on a shared machine, wall-clock time mostly measures how long we wait for a core.

    python bench/module.py [--reps 11] [--threads 1]
"""
import argparse, statistics, time
import torch
import torch.nn.functional as F
from torch import nn
from minifastai.layers import simple_cnn, resnet_small, resnet18, xresnet50, BatchNorm, OpCounter, set_bn_kernel
from minifastai.resnet import resnet_small_d

def torch_simple_cnn(n_out=10):
    convs = [m for ni, nf in [(3, 16), (16, 32), (32, 64), (64, 128)] for m in (nn.Conv2d(ni, nf, 3, 2, 1), nn.ReLU(inplace=True))]
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, n_out))

def conv_bn(ni, nf, ks, stride):
    return [nn.Conv2d(ni, nf, ks, stride, ks // 2, bias=False), nn.BatchNorm2d(nf)]

class TorchBlock(nn.Module):
    "torchvision's BasicBlock"
    def __init__(self, ni, nf, stride=1):
        super().__init__()
        self.conv1,self.bn1 = conv_bn(ni, nf, 3, stride)
        self.conv2,self.bn2 = conv_bn(nf, nf, 3, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None if ni == nf and stride == 1 else nn.Sequential(*conv_bn(ni, nf, 1, stride))
    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)

def torch_resnet18(n_out=10):
    stages = [TorchBlock(ni, nf, s) for ni, nf, s in
              [(64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2), (512, 512, 1)]]
    return nn.Sequential(*conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1), *stages,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_out))

def torch_resnet_small(n_out=10):
    return nn.Sequential(*conv_bn(3, 32, 3, 2), nn.ReLU(inplace=True), TorchBlock(32, 64, 2), TorchBlock(64, 128, 2),
                         TorchBlock(128, 256, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, n_out))

def copy_weights(ours, theirs):
    "Copy parameters and float buffers of `ours` into `theirs`, checking the architectures line up"
    pairs = list(zip(ours.parameters(), theirs.parameters())) + list(zip(
        ours.buffers(), [b for b in theirs.buffers() if b.is_floating_point()]))
    assert len(pairs) == len(ours.parameters()) + len(ours.buffers()) == len(list(theirs.parameters())) + len(
        [b for b in theirs.buffers() if b.is_floating_point()])
    with torch.no_grad():
        for a, b in pairs:
            assert a.shape == b.shape, (a.shape, b.shape)
            b.copy_(a)

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

def step_fn(model, x, y):
    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        for p in model.parameters(): p.grad = None
    return step

def layer_fn(layer, x, g):
    def step(): layer(x).backward(g)
    return step

def timeit(ours, theirs, dev, reps, iters):
    "Interleaved timing of `iters` calls per rep; returns median seconds per call of each, and median ratio"
    clock = time.perf_counter if dev.type == 'cuda' else time.process_time
    for f in (ours, theirs): f(); f()
    ta,tb = [],[]
    for r in range(reps):
        for f, ts in ((ours, ta), (theirs, tb))[::1 if r % 2 else -1]:
            sync(dev); t0 = clock()
            for _ in range(iters): f()
            sync(dev); ts.append((clock() - t0) / iters)
    return statistics.median(ta), statistics.median(tb), statistics.median(a / b for a, b in zip(ta, tb))

CL = torch.channels_last

def bench_model(name, ours, theirs, bs, size, dev, reps, iters, cl=False):
    set_bn_kernel(ours, False).to(dev); theirs.to(dev)
    copy_weights(ours, theirs)
    x,y = torch.randn(bs, 3, size, size, device=dev),torch.randint(0, 10, (bs,), device=dev)
    if cl: ours, theirs, x = ours.to(memory_format=CL), theirs.to(memory_format=CL), x.contiguous(memory_format=CL)
    with torch.no_grad():
        a,b = ours(x),theirs(x)
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3), (a - b).abs().max()
    return (f'{name} fwd+bwd bs{bs} {size}px' + ' CL' * cl,) + timeit(step_fn(ours, x, y), step_fn(theirs, x, y), dev, reps, iters)

def bench_bn(shape, dev, reps, iters, cl=False):
    ours,theirs = BatchNorm(shape[1], fused=False).to(dev),nn.BatchNorm2d(shape[1]).to(dev)
    x = torch.randn(shape, device=dev).mul_(3).add_(1)
    g = torch.randn(shape, device=dev)
    if cl: x, g = x.contiguous(memory_format=CL), g.contiguous(memory_format=CL)
    x.requires_grad_()
    return (f'BatchNorm fwd+bwd {list(shape)}' + ' CL' * cl,) + timeit(layer_fn(ours, x, g), layer_fn(theirs, x, g), dev, reps, iters)

def bench_layout(bs, size, dev, reps, iters):
    "Our resnet_small's training step (forward and backward) in channels-last and in NCHW: same weights and inputs"
    nchw, cl = resnet_small().to(dev), resnet_small().to(dev)
    cl.load_state_dict(nchw.state_dict()); cl.to(memory_format=CL)
    x, y = torch.randn(bs, 3, size, size, device=dev), torch.randint(0, 10, (bs,), device=dev)
    return timeit(step_fn(cl, x.contiguous(memory_format=CL), y), step_fn(nchw, x, y), dev, reps, iters)

def bench_bn_kernel(bs, size, dev, reps, iters, arch=xresnet50):
    "Our `arch`'s training step in channels-last with our batch norm kernel and with PyTorch's: times and operations per step"
    ours, fused = arch(10), arch(10)
    fused.load_state_dict(ours.state_dict())
    ours, fused = (set_bn_kernel(m, f).to(dev).to(memory_format=CL) for m, f in ((ours, False), (fused, True)))
    x, y = torch.randn(bs, 3, size, size, device=dev).contiguous(memory_format=CL), torch.randint(0, 10, (bs,), device=dev)
    steps = step_fn(ours, x, y), step_fn(fused, x, y)
    ops = []
    for s in steps:
        with OpCounter() as k: s()   # the operations that do work: on a GPU, kernel launches
        ops.append(sum(k.ops.values()))
    return timeit(*steps, dev, reps, iters) + tuple(ops)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--reps', type=int, default=11)
    p.add_argument('--threads', type=int, default=1, help='CPU threads (ignored on a GPU)')
    args = p.parse_args()
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    gpu = dev.type == 'cuda'
    if not gpu: torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k = 4 if gpu else 1              # bigger batches and more iterations on a GPU
    rows = [
        bench_model('simple_cnn', simple_cnn(), torch_simple_cnn(), 64 * k, 64, dev, args.reps, 5 * k),
        bench_model('resnet_small', resnet_small(), torch_resnet_small(), 32 * k, 64, dev, args.reps, 2 * k),
        bench_model('resnet18', resnet18(10), torch_resnet18(), 32 * k, 64, dev, args.reps, 1 * k),
        bench_bn((32 * k, 64, 32, 32), dev, args.reps, 5 * k),
        bench_bn((32 * k, 256, 8, 8), dev, args.reps, 5 * k),
        bench_model('resnet_small', resnet_small(), torch_resnet_small(), 32 * k, 64, dev, args.reps, 2 * k, cl=True),
        bench_bn((32 * k, 64, 32, 32), dev, args.reps, 5 * k, cl=True),
        bench_bn((32 * k, 256, 8, 8), dev, args.reps, 5 * k, cl=True),
    ]
    name = torch.cuda.get_device_name() if gpu else f'CPU, {torch.get_num_threads()} thread(s), process CPU time'
    print(f'device: {name}; torch {torch.__version__}; medians of {args.reps} interleaved reps')
    w = max(len(r[0]) for r in rows)
    print(f'| {"case":<{w}} | ours ms | torch.nn ms | ours/torch |')
    print(f'|{"-" * (w + 2)}|--------:|------------:|-----------:|')
    for case, a, b, ratio in rows: print(f'| {case:<{w}} | {a * 1e3:7.2f} | {b * 1e3:11.2f} | {ratio:10.3f} |')
    a, b, ratio = bench_layout(128, 56, dev, args.reps, 1)
    print(f'\nour resnet_small, training step, bs128 56px: channels-last {a * 1e3:.1f} ms, NCHW {b * 1e3:.1f} ms, '
          f'channels-last/NCHW {ratio:.3f}')
    bs, size = (128, 128) if gpu else (16, 64)
    a, b, ratio, n_ours, n_fused = bench_bn_kernel(bs, size, dev, args.reps, 1)
    print(f'our xresnet50, training step, bs{bs} {size}px channels-last: our batch norm {a * 1e3:.1f} ms ({n_ours} operations), '
          f'PyTorch\'s fused batch norm {b * 1e3:.1f} ms ({n_fused} operations), ours/fused {ratio:.3f}')
    for size in (32, 80):   # the command's default network, at its first and last training sizes (--bn auto takes the fused kernel)
        a, b, ratio, *_ = bench_bn_kernel(64 * k, size, dev, args.reps, 1, arch=resnet_small_d)
        print(f'our resnet_small_d (the default network), training step, bs{64 * k} {size}px channels-last: our batch norm '
              f'{a * 1e3:.1f} ms, PyTorch\'s fused batch norm {b * 1e3:.1f} ms, ours/fused {ratio:.3f}')

if __name__ == '__main__': main()
