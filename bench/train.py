"""Training benchmarks for minifastai-train: wall time from raw JPEGs to the final valid accuracy.

    python bench/train.py cpu      # (a) the chapter's recipe, fast path vs plain path; (b) the 5-epoch and the default recipes
    python bench/train.py default [--peer-python PY] [--seeds 0 1 2]   # the defaults against fastai (5 epochs; our recipe), the chapter's path
    python bench/train.py repro    # (d) two runs with the same seed give the same metrics
    python bench/train.py gpu --archive path/to/imagenette2-160.tgz [--budget S]   # (c) 128px, 5 epochs, vs plain PyTorch
    python bench/train.py gpu --smoke    # (c) on the CPU, on 16+8 images per class: checks this script
    python bench/train.py peer [--peer-python PY] [--seeds 0 1 2]   # (e) the 5-epoch recipe against fastai's
    python bench/train.py quality [--seeds 0 1 2]   # (f) what the sharper training crops and the validation crop are worth

Each recipe runs the real command (`minifastai.train.main`) into a temporary folder and reads its
metrics.json: decode = data setup (decoding into the cache, or the loaders' first setup), train = `fit`
(epochs with validation), epoch = the last epoch's time (train + valid), total = the whole command. CPU
numbers need MINIFASTAI_MIRROR to point at a folder with imagenette2-160.tgz when there is no internet.
`gpu` trains each of GPU_RECIPES for 5 epochs at 128px (the leaderboard's setting: random init, no test-time
augmentation, validation at the training size, images from Imagenette-160; imagenette2-128.tgz also works, at a
loss of detail in the crops), then the plain PyTorch peer: torch DataLoader with PIL
random-resized-crop workers, torch.nn resnet18 written inline (torchvision is not a dependency), the recipe of
GPU_RECIPES' first row. Each run, ours and the peer's, starts a fresh Python process (its own CUDA context
and cuDNN autotuning, as a user's run would: in one process, a later run would reuse the autotuning of an
earlier one), one after the other on the same card. With `--budget S` it skips the recipes that would
start after S seconds (the peer always runs). bench/gpu.sh runs it in one call on a lent GPU machine.

`quality` trains the 5-epoch recipe with plainer training crops and validation images (a
cache at 5/4 of the training size, one sample per pixel, the whole validation image), with the validation
centre crop alone, and with both changes (the default), for each seed.

`peer` trains the 5-epoch recipe (resnet_small at 56px, 5 epochs, one-cycle Adam 3e-3 with decoupled
wd 0.01, label smoothing 0.1, bs 128, random resized crops of at least half the image and flips) with
minifastai-train and with fastai, for each seed, one run after the other, and prints both with their mean and
spread, the time ratio and the accuracy difference. fastai trains the same network written in torch.nn (same
initialisation rules) with its own pipeline: `ImageDataLoaders.from_folder`, `RandomResizedCrop(56,
min_scale=0.5)` per item, `Flip` and `Normalize` per batch, 2 workers, `fit_one_cycle(5, 3e-3)`. It runs in a
subprocess of `--peer-python` (default: this Python): fastai needs torchvision, whose binary must match torch,
and PyTorch's CPU-only wheel has no matching torchvision on the package index, so the peer usually lives in a
virtualenv of its own, made with the regular wheel:
    python -m venv /tmp/fastai-venv && /tmp/fastai-venv/bin/pip --isolated install torch==2.13.0 torchvision==0.28.0 fastai==2.8.12
    python bench/train.py peer --peer-python /tmp/fastai-venv/bin/python
Without fastai there, the row is skipped with a line saying so.

`default` runs, in the same run: minifastai-train with its defaults for each of `--seeds`, and between those runs
(ours and fastai's alternate, so that the host's drift hits both alike) fastai's 5-epoch recipe and fastai given the
default's own recipe (FASTAI_RECIPE: the same network in torch.nn, the same size each epoch, Ranger with the same
betas and epsilon at the same rate on flat-cos, label smoothing, batch size, crops, and validation on every 4th image
but in the last epoch), each for each of `--peer-seeds` (default 0); then the chapter's path on our package against
the chapter's own code (bench/chapter.py; `--no-chapter` skips it). It prints each row's GFLOP (training and
validation passes, by torch's FLOP counter) and the GFLOPS it reached in training against the float32 and the bfloat16
sgemm roofs measured in the same run (against the bfloat16 roof only where the CPU computes bfloat16 natively:
elsewhere that roof is emulated and training keeps float32), then the default's mean accuracy, its ratios of total
wall time and of CPU time (the process and its workers: other load on the machine inflates it less than wall time) to
fastai's 5-epoch recipe, the engine's ratio to fastai on the same recipe, and the chapter's ratio.
A complete run (fastai found, at least 3 seeds, the chapter's rows) writes its figures to bench/results.json.
"""
import argparse, json, math, os, resource, subprocess, sys, tempfile, time
from functools import lru_cache, partial
from pathlib import Path

import torch
from minifastai.train import main
from minifastai.data import extract_archive
from minifastai.fastpath import native_bf16   # whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX)

CHAPTER = dict(arch='simple_cnn', size=64, epochs=8, opt='sgd', lr=0.1, bs=128, mom=0.9, wd=0, ls=0,  # + momentum (cycled)
               **{'resize-from': 64, 'valid-subset': 1})   # every epoch at 64px, validated on every image
CPU_RECIPES = {  # name: (arguments of minifastai-train, extra flags)
    '(a) chapter recipe, fast path': (CHAPTER | {'min-scale': 1.0}, []),
    '(a) chapter recipe, plain path': (CHAPTER, ['--no-fast']),
    '(b) the 5-epoch recipe (fastai peer\'s)': (dict(arch='resnet_small', size=56, epochs=5, opt='adam', lr=3e-3, wd=0.01, bs=128, ls=0.1,
                                                    **{'min-scale': 0.5, 'resize-from': 56, 'valid-subset': 1}), []),
    '(b) the default recipe': ({}, []),
}
PEER_RECIPE = CPU_RECIPES["(b) the 5-epoch recipe (fastai peer's)"][0]   # what `peer` trains on both sides
GPU = {'size': 128, 'epochs': 5, 'ls': 0.1, 'min-scale': 0.35, 'device': 'cuda', 'resize-from': 128, 'valid-subset': 1}
# An earlier 5-epoch entry of the Imagenette leaderboard at 128px (85.77%, 5-run mean; github.com/pete88b/data-science,
# fastai-things/train-imagenette-mininet.ipynb): a small SE-ResNeXt with Mish (02's `mininet`), Ranger at 1e-2 with
# wd 1e-4 and bs 64 on a flat-then-cosine schedule, label smoothing, and whole images resized to 128px with flips
# (the entry's Ranger had eps 1e-6: --eps 1e-6)
LEADERBOARD = {'arch': 'mininet', 'bs': 64, 'opt': 'ranger', 'sched': 'flat-cos', 'lr': 1e-2, 'wd': 1e-4, 'act': 'mish', 'eps': 1e-6,
               'min-scale': 1.0, 'valid-crop': 1.0}
GPU_RECIPES = {   # name: minifastai-train's arguments on top of GPU; the first is the plain PyTorch peer's recipe too
    "resnet18, bs 256, Adam 3e-3 (the peer's recipe)": dict(arch='resnet18', bs=256, opt='adam', lr=3e-3, wd=0.05),
    "mininet, Ranger 1e-2 flat-cos (the leaderboard's)": LEADERBOARD,
    # the record at 128px and 5 epochs (87.43%, 5-run mean; radekosmulski/imagenette-LB-entry): xse_resnext50 with
    # self-attention and MaxBlurPool (02c), Mish, Ranger mom 0.95 sqr_mom 0.99 eps 1e-6, flat-cos 8e-3, wd 1e-4, bs 32
    'xse_resnext50, bs 32, Ranger 8e-3 flat-cos (the record\'s)': LEADERBOARD | {'arch': 'xse_resnext50', 'bs': 32, 'lr': 8e-3,
                                                                 'mom': 0.95, 'sqr-mom': 0.99, 'eps': 1e-6},
    'mininet, the same with crops of >= 35%': LEADERBOARD | {'min-scale': 0.35, 'valid-crop': 0.875},
    'xresnet50, bs 64, Ranger 8e-3 flat-cos, Mish': LEADERBOARD | dict(arch='xresnet50', lr=8e-3, wd=0.01),
    'xresnet50, bs 128, sf-adam 3e-3': dict(arch='xresnet50', bs=128, opt='sf-adam', lr=3e-3, wd=0.05),
    'xresnet50, bs 128, sf-adam 3e-3, our BN kernel': dict(arch='xresnet50', bs=128, opt='sf-adam', lr=3e-3, wd=0.05, bn='ours'),
    'xresnet50, bs 128, Adam 3e-3 one-cycle, Mish': dict(arch='xresnet50', bs=128, opt='adam', lr=3e-3, wd=0.05, act='mish'),
}   # sf-adam: schedule-free AdamW (06a); "our BN kernel": --bn ours, where the others take PyTorch's fused kernel on the GPU
SMOKE = {'size': 32, 'epochs': 1, 'bs': 32, 'workers': 2, 'device': 'cpu'}   # gpu --smoke: the same code path on a CPU

def cpu_seconds():
    "CPU time of this process and its finished children (decoding workers): a load-independent cost."
    return sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
               for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))

def train(args, flags=(), data=None, fresh=False):
    "Run minifastai-train with `args` into a temporary folder (`fresh`: in a new Python process); return its metrics.json, with `cpu_s` added"
    with tempfile.TemporaryDirectory() as d:
        argv = [s for k, v in args.items() for s in (f'--{k}', str(v))] + list(flags) + ['--out', f'{d}/run']
        if data is not None: argv += ['--data', str(data)]
        c0 = cpu_seconds()
        if not fresh: main(argv)
        else:
            r = subprocess.run([sys.executable, '-m', 'minifastai.train', *argv], capture_output=True, text=True)
            if r.returncode: raise RuntimeError(f'minifastai-train {" ".join(argv)} failed:\n{r.stderr[-3000:]}')
        return json.loads(Path(d, 'run', 'metrics.json').read_text()) | {'cpu_s': cpu_seconds() - c0}

def row(name, m):
    t = m['time']
    return [name, len(m['epochs']), t['data_s'], t['fit_s'], m['epochs'][-1]['time'], t['total_s'],
            m.get('cpu_s', float('nan')), m['epochs'][-1]['accuracy'], m.get('gflop', float('nan'))]

@lru_cache(None)
def image_gflop(arch, size, train, act='relu'):
    "GFLOP per image of `arch` at `size`px: forward and backward (`train`) or forward alone, by torch's FLOP counter"
    from torch.utils.flop_counter import FlopCounterMode
    from minifastai.train import ARCHS, ACTS
    model, x = ARCHS[arch](10, act=ACTS[act]), torch.randn(2, 3, size, size)
    with FlopCounterMode(display=False) as fc:
        if train: model(x).sum().backward()
        else:
            model.eval()
            with torch.no_grad(): model(x)
    return fc.get_total_flops() / 2 / 1e9

def run_gflop(args, sizes, n_train, n_valid, n_validations=None):
    "The GFLOP of a run of `args` that trained an epoch at each of `sizes` on `n_train` images (dropping the last partial batch) and validated `n_validations` times (default: each epoch) on `n_valid` at `args['size']`"
    arch, act, bs = args.get('arch', 'resnet_small'), args.get('act', 'relu'), args.get('bs', 128)
    train = sum(n_train // bs * bs * image_gflop(arch, s, True, act) for s in sizes)
    return train + (len(sizes) if n_validations is None else n_validations) * n_valid * image_gflop(arch, args['size'], False, act)

def sgemm_gflops(n=2048, secs=2.0, dtype=torch.float32):
    "GFLOPS of torch's n x n matrix product in `dtype` on this CPU, with torch's threads: the roof a training step is held to"
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < secs: a @ b; k += 1
    return 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9

def cpu_name():
    f = Path('/proc/cpuinfo')
    return next((l.split(':', 1)[1].strip() for l in f.read_text().splitlines() if l.startswith('model name')), 'CPU') if f.exists() else 'CPU'

def machine():
    "The host in words: CPU model and cores"
    return f'{cpu_name()}, {os.cpu_count()} cores, no GPU used, torch {torch.__version__}'

RESULTS = Path(__file__).parent/'results.json'   # the benchmarks' results file, which the book's figures come from

def save(key, entry, fn=RESULTS):
    "Replace the entry `key` in the results file `fn`"
    res = json.loads(fn.read_text()) if fn.exists() else {}
    res[key] = entry
    fn.write_text(json.dumps(res, indent=1, sort_keys=True) + '\n')

def chapter_rows():
    "The chapter's run on our package and the chapter's own code: [(name, seconds, accuracy, time ratio)] (bench/chapter.py)"
    sys.path.insert(0, str(Path(__file__).parent))
    from chapter import chapter_rows as rows
    return rows()

def print_chapter(rows):
    from chapter import print_rows
    print_rows(rows)

def n_images():
    "The number of training and validation images of Imagenette-160"
    from minifastai.data import untar_data, URLs, get_image_files
    path = untar_data(URLs.IMAGENETTE_160)
    return len(get_image_files(path/'train')), len(get_image_files(path/'val'))

def with_gflop(m, counts):
    "metrics.json `m` with its run's GFLOP (`counts`: the numbers of training and validation images)"
    from minifastai.train import speed_plan
    a = m['args']
    sizes, k = speed_plan(argparse.Namespace(**a))
    return m | {'gflop': run_gflop(a, sizes, *counts, n_validations=(len(sizes) - 1) * len(range(0, counts[1], k)) / counts[1] + 1)}

_SHORT = {'float32': 'f32', 'bfloat16': 'bf16'}

def table(rows, ref=None, compared=None, roofs=None):
    "Print `rows`; with `ref` (a row), the total time of the `compared` rows (default: all others) as a ratio to `ref`'s; with `roofs` ({dtype: sgemm GFLOPS}), each row's GFLOPS during training against each"
    roofs = roofs or {}
    print(f"\n{'recipe':<50} {'epochs':>6} {'decode s':>9} {'train s':>8} {'epoch s':>8} {'total s':>8} {'CPU s':>7} {'valid acc':>9}"
          f" {'GFLOP':>7} {'GFLOPS':>6}" + ''.join(f" {'of ' + _SHORT.get(k, k) if len(roofs) > 1 else 'of roof':>7}" for k in roofs))
    for r in rows:
        r = list(r) + [float('nan')] * (9 - len(r))   # rows without a FLOP count (the plain PyTorch peer)
        shown = ref is not None and r[0] != ref[0] and (compared is None or any(r[0] == c[0] for c in compared))
        ratio = f'  {r[5] / ref[5]:.2f}x the time of {ref[0]}' if shown else ''
        gflops = r[8] / r[3]
        print(f'{r[0]:<50} {r[1]:>6} {r[2]:>9.1f} {r[3]:>8.1f} {r[4]:>8.2f} {r[5]:>8.1f} {r[6]:>7.1f} {r[7]:>9.4f}'
              f' {r[8]:>7.0f} {gflops:>6.1f}' + ''.join(f' {gflops / v:>7.0%}' for v in roofs.values()) + ratio)

def cpu():
    "The chapter's recipe on the fast and the plain path, the 5-epoch recipe and the default, with their GFLOP against the sgemm roof"
    roof, counts = sgemm_gflops(), n_images()
    rows = [row(name, with_gflop(train(a, f), counts)) for name, (a, f) in CPU_RECIPES.items()]
    print(f'\nCPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; '
          f'sgemm (2048x2048 float32) {roof:.1f} GFLOPS, measured in this run')
    table(rows, ref=rows[1], compared=rows[:1], roofs={'float32': roof})
    print("CPU s = CPU time of the process and its decoding workers, which other load on the machine inflates less than\n"
          "wall time; GFLOP = the training and validation passes, by torch's FLOP counter; GFLOPS = GFLOP / train s")

def default(py, seeds, peer_seeds=(0,), chapter=True):
    """The default recipe for each of `seeds` against fastai's 5-epoch recipe and against fastai given the default's own
    recipe (each for each of `peer_seeds`, run between ours), then the chapter's path on our package against the
    chapter's code (`chapter`), all in the same run, with the float32 and bfloat16 sgemm roofs; writes its figures to bench/results.json"""
    from minifastai.data import untar_data, URLs
    roofs, counts, path = {'float32': sgemm_gflops(), 'bfloat16': sgemm_gflops(dtype=torch.bfloat16)}, n_images(), untar_data(URLs.IMAGENETTE_160)
    recipe, peer, same, ours = default_recipe(), [], [], []
    fastai_runs = [(peer, "fastai 5-epoch recipe", s, ()) for s in peer_seeds]
    fastai_runs += [(same, "fastai on the default's recipe", s, (FASTAI_RECIPE, recipe)) for s in peer_seeds]
    def run_fastai(k):   # the k-th of fastai's runs, unless fastai turned out missing
        if k >= len(fastai_runs) or (k and not peer): return
        out, name, s, args = fastai_runs[k]
        if (f := _fastai_run(py, path, s, *args)) is not None: out.append(f); print(f'{name}, seed {s}: {f}', flush=True)
    for k, s in enumerate(seeds):   # ours and fastai's alternate, so that the host's drift over the run hits both alike
        ours.append(with_gflop(train({'seed': s}), counts))
        print(f"minifastai-train seed {s}: valid acc {ours[-1]['epochs'][-1]['accuracy']:.4f}, {ours[-1]['time']['total_s']:.1f} s", flush=True)
        run_fastai(k)
    for k in range(len(seeds), len(fastai_runs)): run_fastai(k)
    chap = chapter_rows() if chapter else []
    print(f'\nCPU: {os.cpu_count()} cores ({cpu_name()}{", native bfloat16" if native_bf16() else ", no native bfloat16"}), '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads; sgemm (2048x2048) {roofs["float32"]:.1f} GFLOPS in float32, '
          f'{roofs["bfloat16"]:.1f} in bfloat16, measured in this run'
          + ('' if native_bf16() else ' (bfloat16 emulated: training keeps float32, so its column is left out of the table)'))
    shown = roofs if native_bf16() else {'float32': roofs['float32']}   # an emulated bfloat16 roof bounds nothing we run
    rows = [row(f'minifastai-train (defaults), seed {s}', m) for s, m in zip(seeds, ours)]
    if peer:
        fg = run_gflop(PEER_RECIPE | {'bs': 128}, [PEER_RECIPE['size']] * PEER_RECIPE['epochs'], *counts)
        rows += [[f'fastai 2.8, its 5-epoch recipe, seed {s}', 5, float('nan'), f['fit_s'], float('nan'), f['total_s'],
                  f.get('cpu_s', float('nan')), f['acc'], fg] for s, f in zip(peer_seeds, peer)]
        rows += [[f"fastai 2.8, the default's recipe, seed {s}", len(recipe['sizes']), float('nan'), f['fit_s'], float('nan'),
                  f['total_s'], f.get('cpu_s', float('nan')), f['acc'], ours[0]['gflop']] for s, f in zip(peer_seeds, same)]
    table(rows, ref=rows[len(seeds)] if peer else None, compared=rows[:len(seeds)], roofs=shown)
    mean = lambda xs: _stats(xs)[0]
    acc, sd = _stats([m['epochs'][-1]['accuracy'] for m in ours])
    t, c = mean([m['time']['total_s'] for m in ours]), mean([m['cpu_s'] for m in ours])
    res = {'machine': machine(), 'date': time.strftime('%Y-%m-%d'), 'seeds': list(seeds),
           'sgemm_gflops': {k: round(v, 1) for k, v in roofs.items()},
           'rows': [{'name': r[0], 'total_s': round(r[5], 1), 'accuracy': round(r[7], 4), 'gflops': round(r[8] / r[3], 1),
                     'of_float32_roof': f"{r[8] / r[3] / roofs['float32']:.0%}", 'of_bfloat16_roof': f"{r[8] / r[3] / roofs['bfloat16']:.0%}" if native_bf16() else None}
                    for r in rows],
           'default': {'mean_accuracy': round(acc, 4), 'sd': round(sd, 4), 'mean_total_s': round(t, 1)}}
    print(f'the default: mean valid accuracy {acc:.4f} (sd {sd:.4f}, {len(seeds)} seeds), mean total {t:.1f} s')
    if peer:
        tp, a5 = mean([f['total_s'] for f in peer]), mean([f['acc'] for f in peer])
        res['vs_fastai_5_epochs'] = {'time': f'{t / tp:.2f}x', 'cpu_time': f"{c / mean([f.get('cpu_s', float('nan')) for f in peer]):.2f}x",
                                     'points': round(100 * (acc - a5), 2)}
        print(f"  against fastai's 5-epoch recipe ({tp:.1f} s, {a5:.4f}, {len(peer)} run(s)): {res['vs_fastai_5_epochs']['time']} "
              f"its total time, CPU time {res['vs_fastai_5_epochs']['cpu_time']}, {100 * (acc - a5):+.2f} points")
    if same:
        ts, as_ = mean([f['total_s'] for f in same]), mean([f['acc'] for f in same])
        res['vs_fastai_same_recipe'] = {'time': f'{t / ts:.2f}x', 'points': round(100 * (acc - as_), 2)}
        print(f"  the engine, against fastai on the default's own recipe ({ts:.1f} s, {as_:.4f}, {len(same)} run(s)): "
              f"{res['vs_fastai_same_recipe']['time']} its total time, {100 * (acc - as_):+.2f} points (goal: at most 0.5x, within 0.5 points)")
    if chap:
        print(); print_chapter(chap)
        res['chapter'] = {'rows': [{'name': n, 'total_s': round(t_, 1), 'accuracy': round(a, 4), 'time': f'{r:.2f}x'} for n, t_, a, r in chap],
                          'time': f'{chap[0][3]:.2f}x'}
        print(f"  the chapter's path on minifastai: {res['chapter']['time']} the time of the chapter's code (goal: at most 0.5x)")
    if not peer: print(f'fastai rows skipped: fastai is not importable by {py} (see this script\'s docstring for the peer virtualenv)')
    elif len(seeds) >= 3 and chap: save('bench/train.py default', res)   # only a complete run replaces the stored figures

def repro():
    a = dict(CHAPTER, epochs=2)
    m1, m2 = train(a), train(a)
    key = lambda m: [[e[k] for k in ('train_loss', 'valid_loss', 'accuracy')] for e in m['epochs']]
    print(f'\nreproducibility: two 2-epoch runs, seed 0: {key(m1)} vs {key(m2)}: identical = {key(m1) == key(m2)}')

# --- the plain PyTorch peer (GPU) -------------------------------------------------------------------
import torch.nn as nn, torch.nn.functional as F
from PIL import Image
from minifastai.data import get_image_files, parent_label
from minifastai.fastpath import valid_size

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])

class PeerDataset(torch.utils.data.Dataset):
    "PIL decode, random resized crop (area min_scale-1, aspect 3/4-4/3) + flip when training, else a centre crop; uint8 CHW."
    def __init__(self, fns, v2i, size, train, min_scale=0.35):
        self.fns, self.v2i, self.size, self.train, self.min_scale = fns, v2i, size, train, min_scale
    def __len__(self): return len(self.fns)
    def __getitem__(self, i):
        im = Image.open(self.fns[i]).convert('RGB')
        if self.train:
            w, h = im.size
            s, r = torch.empty(1).uniform_(self.min_scale, 1).item(), math.exp(torch.empty(1).uniform_(math.log(3/4), math.log(4/3)).item())
            cw, ch = min(w, round(math.sqrt(s * r) * w)), min(h, round(math.sqrt(s / r) * h))
            x0, y0 = torch.randint(0, w - cw + 1, ()).item(), torch.randint(0, h - ch + 1, ()).item()
            im = im.resize((self.size, self.size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            if torch.rand(()) < 0.5: im = im.transpose(Image.FLIP_LEFT_RIGHT)
        else:   # the centre, as minifastai-train's default --valid-crop
            vs = valid_size(self.size); o = (vs - self.size) // 2
            im = im.resize((vs, vs), Image.BILINEAR).crop((o, o, o + self.size, o + self.size))
        x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(self.size, self.size, 3).permute(2, 0, 1)
        return x, self.v2i[parent_label(self.fns[i])]

class Block(nn.Module):
    def __init__(self, ni, nf, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(ni, nf, 3, stride, 1, bias=False), nn.BatchNorm2d(nf)
        self.c2, self.b2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf)
        self.down = (nn.Sequential(nn.Conv2d(ni, nf, 1, stride, bias=False), nn.BatchNorm2d(nf))
                     if stride != 1 or ni != nf else nn.Identity())
    def forward(self, x): return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.down(x))

def torch_resnet18(n_out):
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    for ni, nf, s in [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]: layers += [Block(ni, nf, s), Block(nf, nf, 1)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_out))

def torch_peer(path, epochs, bs=256, size=128, lr=3e-3, wd=0.05, min_scale=0.35, workers=None, device='cuda'):
    "Plain PyTorch: torch DataLoader, resnet18, AdamW one-cycle, label smoothing, bf16, channels_last."
    t0, dev = time.time(), torch.device(device)
    fns = {s: get_image_files(path/s) for s in ('train', 'val')}
    v2i = {v: i for i, v in enumerate(sorted(set(map(parent_label, fns['train']))))}
    kw = dict(num_workers=workers or os.cpu_count(), pin_memory=dev.type == 'cuda', persistent_workers=True)
    tdl = torch.utils.data.DataLoader(PeerDataset(fns['train'], v2i, size, True, min_scale), bs, shuffle=True, drop_last=True, **kw)
    vdl = torch.utils.data.DataLoader(PeerDataset(fns['val'], v2i, size, False), bs * 2, **kw)
    torch.manual_seed(0)
    model = torch_resnet18(len(v2i)).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(tdl), pct_start=0.25)
    mean, std = (MEAN * 255).view(1, 3, 1, 1).to(dev), (STD * 255).view(1, 3, 1, 1).to(dev)
    prep = lambda x: ((x.to(dev, non_blocking=True).float() - mean) / std).contiguous(memory_format=torch.channels_last)
    bf16 = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == 'cuda')
    for _ in range(epochs):
        model.train()
        for x, y in tdl:
            with bf16(): loss = F.cross_entropy(model(prep(x)), y.to(dev), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
        model.eval(); correct = 0
        with torch.no_grad(), bf16():
            for x, y in vdl: correct += (model(prep(x)).argmax(1).cpu() == y).sum().item()
    total = time.time() - t0
    return [f'plain PyTorch resnet18, bs {bs}, AdamW {lr:g}', epochs, *[float('nan')] * 3, total, float('nan'), correct / len(vdl.dataset)]

def torch_peer_fresh(path, epochs, **kw):
    "`torch_peer` in a new Python process, as ours runs: its own CUDA context and cuDNN autotuning"
    c0 = cpu_seconds()
    r = subprocess.run([sys.executable, __file__, '_torch_peer', '--peer-args', json.dumps([str(path), epochs, kw])],
                       capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'the plain PyTorch peer failed:\n{r.stderr[-3000:]}')
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row[6] = cpu_seconds() - c0
    return row

def subset(path, dest, n_train=16, n_valid=8):
    "An Imagenette-like folder at `dest` with the first images of each class of `path` (symbolic links)."
    for split, n in (('train', n_train), ('val', n_valid)):
        for c in sorted((path/split).iterdir()):
            (dest/split/c.name).mkdir(parents=True)
            for f in sorted(c.iterdir())[:n]: (dest/split/c.name/f.name).symlink_to(f)
    return dest

def gpu(archive, smoke=False, budget=None):
    "Each of GPU_RECIPES at 128px for 5 epochs (the ones that start within `budget` seconds), then the plain PyTorch peer"
    if not smoke and not torch.cuda.is_available(): sys.exit('bench/train.py gpu: no CUDA GPU here (try --smoke)')
    over = SMOKE if smoke else {}   # --smoke: small images and batches, on the CPU
    first, base = next(iter(GPU_RECIPES.values())), GPU | over
    t0, rows, skipped = time.time(), [], []
    with tempfile.TemporaryDirectory() as d:
        path = extract_archive(Path(archive), Path(d)/'data')
        path = next(p for p in [path, *path.iterdir()] if (p/'train').is_dir())
        if smoke: path = subset(path, Path(d)/'smoke')
        for name, r in GPU_RECIPES.items():
            if budget is not None and time.time() - t0 > budget: skipped.append(name); continue
            rows.append(row(name, train(GPU | r | over, data=path, fresh=True)))
            print(f'{name}: valid accuracy {rows[-1][7]:.4f}, {rows[-1][5]:.1f} s in all', flush=True)
        rows.append(torch_peer_fresh(path, base['epochs'], bs=(first | over)['bs'], size=base['size'], lr=first['lr'],
                               wd=first['wd'], min_scale=base['min-scale'], workers=base.get('workers'), device=base['device']))
    name = torch.cuda.get_device_name() if base['device'] == 'cuda' else 'none (--smoke: CPU)'
    print(f"\nGPU: {name}, {os.cpu_count()} CPU cores, torch {torch.__version__}; {base['size']}px, {base['epochs']} epochs, "
          f"label smoothing {base['ls']}, crops of at least {base['min-scale']} of the image (the Ranger rows: whole images, "
          f"unless they say crops); images from {Path(archive).name}")
    table(rows, ref=rows[-1])
    if skipped: print(f'skipped (past the {budget} s budget): {"; ".join(skipped)}')
    print('targets: >= 0.85 at 128px in 5 epochs, in under 30 s in all; the leaderboard\'s 5-epoch record: 0.8743')

# --- the fastai peer (CPU) ----------------------------------------------------------------------------
# resnet_small and resnet_small_d (02b) written in torch.nn, with the same initialisation rules: the networks fastai
# trains here, and the ones bench/predict.py loads our weights into (their tensors in the order of our state dict)
TORCH_RESNET_SMALL = r"""
def conv(ni, nf, stride=1, ks=3, act=True):
    c = nn.Conv2d(ni, nf, ks, stride, ks // 2, bias=False)
    (nn.init.kaiming_normal_ if act else nn.init.xavier_normal_)(c.weight)
    return nn.Sequential(c, nn.BatchNorm2d(nf), *([nn.ReLU(inplace=True)] if act else []))

class ResBlock(nn.Module):
    def __init__(self, ni, nf, stride, pool=False):   # pool: ResNet-D's shortcut (average pooling, then the 1x1 conv)
        super().__init__()
        self.convs = nn.Sequential(conv(ni, nf, stride), conv(nf, nf, act=False))
        nn.init.zeros_(self.convs[-1][1].weight)
        self.idconv = (nn.Sequential(nn.AvgPool2d(stride, ceil_mode=True), conv(ni, nf, ks=1, act=False)) if pool
                       else conv(ni, nf, stride, ks=1, act=False))
    def forward(self, x): return F.relu(self.convs(x) + self.idconv(x))

def resnet_small(n_out=10, pool=False):   # pool: resnet_small_d
    lin = nn.Linear(256, n_out); nn.init.xavier_normal_(lin.weight); nn.init.zeros_(lin.bias)
    return nn.Sequential(conv(3, 32, 2), *[ResBlock(ni, nf, 2, pool) for ni, nf in [(32, 64), (64, 128), (128, 256)]],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin)

"""

FASTAI_PEER = r"""
import json, sys, time
t_start = time.time()
import torch
from torch import nn
import torch.nn.functional as F
from fastai.vision.all import (ImageDataLoaders, RandomResizedCrop, Flip, Normalize, Learner, Adam, accuracy,
                               LabelSmoothingCrossEntropy, set_seed)
path, seed = sys.argv[1], int(sys.argv[2])

""" + TORCH_RESNET_SMALL + r"""
set_seed(seed)
dls = ImageDataLoaders.from_folder(path, train='train', valid='val', bs=128, num_workers=2,
                                   item_tfms=RandomResizedCrop(56, min_scale=0.5), batch_tfms=[Flip(), Normalize()])
learn = Learner(dls, resnet_small(), loss_func=LabelSmoothingCrossEntropy(0.1), opt_func=Adam, wd=0.01, metrics=accuracy)
t0 = time.time()
with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(5, 3e-3)
import resource
cpu_s = sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({'acc': float(learn.recorder.values[-1][2]), 'fit_s': time.time() - t0, 'total_s': time.time() - t_start, 'cpu_s': cpu_s}))
"""

# fastai trains the default's own recipe: the same network, the same training size each epoch (a callback swaps the
# training loader), Ranger with the default's betas and epsilon at 3e-2 on fastai's flat-cos, label smoothing 0.1, bs 128,
# random resized crops of at least half the image with flips, validation at the last size on a centre crop, every
# epoch but the last on every 4th validation image (as `ValidSubset`)
FASTAI_RECIPE = r"""
import json, sys, time
t_start = time.time()
from functools import partial
import torch
from torch import nn
import torch.nn.functional as F
from fastai.vision.all import (ImageDataLoaders, DataLoaders, RandomResizedCrop, Flip, Normalize, imagenet_stats, Learner,
                               ranger, accuracy, LabelSmoothingCrossEntropy, Callback, set_seed)
path, seed, r = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])

""" + TORCH_RESNET_SMALL + r"""
set_seed(seed)
def loaders(size):
    return ImageDataLoaders.from_folder(path, train='train', valid='val', bs=r['bs'], num_workers=2,
                                        item_tfms=RandomResizedCrop(size, min_scale=r['min_scale']),
                                        batch_tfms=[Flip(), Normalize.from_stats(*imagenet_stats)])
dls = {s: loaders(s) for s in sorted(set(r['sizes']))}
last = dls[r['size']]
quarter = last.test_dl(last.valid_ds.items[::r['k']], with_labels=True)

class Sizes(Callback):
    "Before each epoch: the training loader of its size; validation on every k-th image but in the last epoch"
    order = -20
    def before_epoch(self):
        last_epoch = self.epoch == self.n_epoch - 1
        self.learn.dls = DataLoaders(dls[r['sizes'][self.epoch]].train, last.valid if last_epoch else quarter)

learn = Learner(last, resnet_small(pool=r['arch'] == 'resnet_small_d'), loss_func=LabelSmoothingCrossEntropy(r['ls']), wd=r['wd'], metrics=accuracy,
                opt_func=partial(ranger, mom=r['mom'], sqr_mom=r['sqr_mom'], eps=r['eps']), cbs=Sizes())
t0 = time.time()
with learn.no_bar(), learn.no_logging(): learn.fit_flat_cos(len(r['sizes']), r['lr'])
import resource
cpu_s = sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({'acc': float(learn.recorder.values[-1][2]), 'fit_s': time.time() - t0, 'total_s': time.time() - t_start,
                  'cpu_s': cpu_s, 'n_valid': len(learn.dls.valid.dataset)}))
"""

def default_recipe():
    "The default recipe, as FASTAI_RECIPE takes it: minifastai-train's defaults, completed by `_check`, and their sizes"
    from minifastai.train import get_parser, _check
    p = get_parser(); a = p.parse_args([]); _check(p, a)
    assert a.arch in ('resnet_small', 'resnet_small_d') and (a.opt, a.sched, a.mixup, a.act) == ('ranger', 'flat-cos', 0, 'relu'), \
        'FASTAI_RECIPE trains resnet_small or resnet_small_d with Ranger on flat-cos, without Mixup, with ReLU'
    from minifastai.train import speed_plan
    sizes, k = speed_plan(a)
    return dict(arch=a.arch, sizes=sizes, k=k, size=a.size, bs=a.bs, lr=a.lr, wd=a.wd, mom=a.mom, sqr_mom=a.sqr_mom, eps=a.eps, ls=a.ls,
                min_scale=a.min_scale)

def _fastai_run(py, path, seed, script=None, recipe=None):
    "One fastai run in a subprocess of `py` (`script`, default: the 5-epoch recipe; `recipe`: its settings as JSON): its accuracy, fit and total seconds (None: no fastai there)"
    import subprocess
    r = subprocess.run([py, '-c', script or FASTAI_PEER, str(path), str(seed), json.dumps(recipe or {})], capture_output=True, text=True)
    if r.returncode: 
        if 'No module named' in r.stderr and 'fastai' in r.stderr: return None
        raise RuntimeError(f'the fastai peer failed:\n{r.stderr[-2000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def _stats(xs):
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / max(len(xs) - 1, 1)) ** 0.5

def fastai_peer(py, seeds):
    from minifastai.data import untar_data, URLs
    path, ours, theirs = untar_data(URLs.IMAGENETTE_160), [], []
    for s in seeds:
        m = train(PEER_RECIPE | {'seed': s})
        ours.append({'acc': m['epochs'][-1]['accuracy'], 'fit_s': m['time']['fit_s'], 'total_s': m['time']['total_s']})
        print(f"minifastai-train seed {s}: {ours[-1]}", flush=True)
        if theirs is not None:
            f = _fastai_run(py, path, s)
            if f is None: theirs = None
            else: theirs.append(f); print(f'fastai seed {s}: {f}', flush=True)
    print(f'\nthe 5-epoch recipe (resnet_small 56px, 5 epochs, Adam 3e-3 one-cycle, ls 0.1, bs 128), seeds {" ".join(map(str, seeds))}; '
          f'{os.cpu_count()} CPU cores, torch {torch.__version__}')
    print(f"{'':<18} {'valid acc mean':>14} {'sd':>7} {'min':>7} {'max':>7} {'fit s':>7} {'total s':>8}")
    rows = [('minifastai-train', ours)] + ([('fastai 2.8', theirs)] if theirs else [])
    for name, rs in rows:
        (m, sd), accs = _stats([r['acc'] for r in rs]), [r['acc'] for r in rs]
        print(f"{name:<18} {m:>14.4f} {sd:>7.4f} {min(accs):>7.4f} {max(accs):>7.4f} "
              f"{_stats([r['fit_s'] for r in rs])[0]:>7.1f} {_stats([r['total_s'] for r in rs])[0]:>8.1f}")
    if not theirs: print(f'fastai row skipped: fastai is not importable by {py} (see this script\'s docstring for the peer virtualenv)')
    else:
        t_ours, t_theirs = _stats([r['total_s'] for r in ours])[0], _stats([r['total_s'] for r in theirs])[0]
        d = _stats([r['acc'] for r in ours])[0] - _stats([r['acc'] for r in theirs])[0]
        print(f'minifastai-train is {t_theirs / t_ours:.2f}x faster in total time, {100 * d:+.1f} points of accuracy')

def quality(seeds):
    "The 5-epoch recipe with plainer training and validation images, and with the default ones, for each seed"
    import minifastai.fastpath as fp
    old_cache = partial(fp.cache_size, scale=1.25)   # 5/4 of the training size, as before
    variants = [('cache 5/4 of the size, whole validation image (before)', old_cache, {'valid-crop': 1}),
                ('cache 5/4, validation centre crop 0.875', old_cache, {}),
                ('cache 2x, anti-aliased crops, centre crop (default)', fp.cache_size, {})]
    rows = []
    for name, cache_size, args in variants:
        new, fp.cache_size = fp.cache_size, cache_size   # the cache's size also sets the crops' supersampling
        try: ms = [train(PEER_RECIPE | args | {'seed': s}) for s in seeds]
        finally: fp.cache_size = new
        accs = [m['epochs'][-1]['accuracy'] for m in ms]
        rows.append((name, *_stats(accs), min(accs), max(accs), _stats([m['time']['fit_s'] for m in ms])[0]))
        print(name, accs, flush=True)
    print(f'\nthe 5-epoch recipe (resnet_small 56px, 5 epochs, Adam), seeds {" ".join(map(str, seeds))}; {os.cpu_count()} CPU cores, torch {torch.__version__}')
    print(f"{'images':<55} {'valid acc mean':>14} {'sd':>7} {'min':>7} {'max':>7} {'fit s':>7}")
    for r in rows: print(f'{r[0]:<55} {r[1]:>14.4f} {r[2]:>7.4f} {r[3]:>7.4f} {r[4]:>7.4f} {r[5]:>7.1f}')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('what', choices=['cpu', 'default', 'repro', 'gpu', 'peer', 'quality', '_torch_peer'], nargs='+')
    p.add_argument('--peer-args', help=argparse.SUPPRESS)   # _torch_peer: [path, epochs, keyword arguments] as JSON
    p.add_argument('--peer-python', default=sys.executable, help='peer: a Python that can import fastai')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='default, peer, quality: the seeds')
    p.add_argument('--peer-seeds', type=int, nargs='+', default=[0], help="default: the seeds of fastai's runs")
    p.add_argument('--archive', default='data/imagenette2-160.tgz', help='gpu: imagenette2-160.tgz (or -128)')
    p.add_argument('--budget', type=float, default=None, help='gpu: start no recipe after this many seconds (the peer still runs)')
    p.add_argument('--no-chapter', action='store_true', help="default: skip the chapter's rows (bench/chapter.py)")
    p.add_argument('--smoke', action='store_true', help='gpu: run on the CPU, on a few images, to check the script')
    a = p.parse_args()
    for w in a.what:
        if w == 'gpu': gpu(a.archive, a.smoke, a.budget)
        elif w == 'peer': fastai_peer(a.peer_python, a.seeds)
        elif w == 'default': default(a.peer_python, a.seeds, a.peer_seeds, chapter=not a.no_chapter)
        elif w == 'quality': quality(a.seeds)
        elif w == '_torch_peer':
            path, epochs, kw = json.loads(a.peer_args)
            print(json.dumps(torch_peer(Path(path), epochs, **kw)))
        else: globals()[w]()
