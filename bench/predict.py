"""Inference benchmark: minifastai-predict against fastai 2.8 and ONNX Runtime, on the same network and weights.

    python bench/predict.py RUN [--peer-python PY] [--latency-n N]

RUN is a minifastai-train run folder of a `resnet_small_d` (the default recipe's network) or `resnet_small` model, trained on
Imagenette-160; the images are its `val/` folder (3,925 images), through MINIFASTAI_MIRROR / MINIFASTAI_HOME.
Rows, one after the other in one run on the same machine:
- `minifastai-predict RUN val/`: the command, as a user runs it, timed from its start to its exit (Python start,
  imports, loading the model, decoding in the DataLoader's worker processes, inference, printing the table);
- `learn.predict_files`: the same work inside a Python that has loaded the model;
- its forward passes alone, on the images decoded beforehand (batches of 256);
- ONNX Runtime (`learn.to_onnx`, then `InferenceSession`) fed by our decoding, batches of 64;
- fastai 2.8.12 in its own venv (`--peer-python`, as `bench/train.py peer` makes it): the same network written in
  `torch.nn` with our weights loaded, validation's preprocessing (`Resize` squish to the decode size with PIL's
  bicubic filter, centre `CropPad`, `Normalize` with our statistics; JPEGs decoded in full where ours use draft mode), `learn.get_preds(dl=learn.dls.test_dl(files))`, timed inside its
  Python after its loaders are built (its start-up is not counted: that favours fastai).
Each row also prints the GFLOPS its network's forward passes reached (torch's FLOP counter, decoding counted in
the time), against the float32 sgemm roof measured in the same run: near the roof, only less arithmetic (a
smaller network, lower precision) makes inference faster. Then single-image latency: the median of `--latency-n` calls of `learn.predict(file)` on different files, after 3
warm-up calls, ours and fastai's. Every row prints its accuracy on val/ as a check that both run the same model.
The table ends with the ratios to fastai measured in this run, and the run's figures replace this benchmark's
entry in bench/results.json (the results file the README's figures come from).
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

import torch
from minifastai.data import URLs, untar_data, get_image_files, parent_label, DataLoader
from minifastai.inference import load_learner, _Files
sys.path.insert(0, str(Path(__file__).parent))
from train import image_gflop, sgemm_gflops, TORCH_RESNET_SMALL, machine, save   # bench/train.py: FLOP counter, sgemm roof, the torch.nn net, results file

FASTAI = r'''
import json, statistics, sys, time
import torch
from torch import nn
import torch.nn.functional as F
from fastai.vision.all import (ImageDataLoaders, Resize, ResizeMethod, CropPad, Normalize, Learner, get_image_files,
                               CrossEntropyLossFlat)
from PIL import Image
path, weights, size, decode_size, n_lat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

''' + TORCH_RESNET_SMALL + r'''
w = torch.load(weights)
model = resnet_small(len(w['vocab']), pool=w['arch'] == 'resnet_small_d')
keys = [k for k in model.state_dict() if not k.endswith('num_batches_tracked')]
assert [tuple(model.state_dict()[k].shape) for k in keys] == [tuple(t.shape) for t in w['tensors']], 'the networks differ'
model.load_state_dict(dict(zip(keys, w['tensors'])), strict=False)
crop = CropPad(size)
crop.order = Resize.order + 1   # after the resize (a CropPad runs first by default)
dls = ImageDataLoaders.from_folder(path, train='train', valid='val', bs=64, num_workers=2,
                                   item_tfms=[Resize(decode_size, method=ResizeMethod.Squish, resamples=(Image.BICUBIC, Image.NEAREST)), crop],
                                   batch_tfms=Normalize.from_stats(*w['stats']))
assert list(dls.vocab) == w['vocab'], 'vocab'
learn = Learner(dls, model, loss_func=CrossEntropyLossFlat())
files = get_image_files(path + '/val')
t0 = time.time()
with learn.no_bar(): preds, _ = learn.get_preds(dl=learn.dls.test_dl(files))
secs = time.time() - t0
acc = float((preds.argmax(1) == torch.tensor([dls.vocab.o2i[f.parent.name] for f in files])).float().mean())
lat = []
with learn.no_bar():
    for i, f in enumerate(files[:n_lat + 3]):
        t = time.perf_counter(); learn.predict(f); lat.append(time.perf_counter() - t)
print(json.dumps({'secs': secs, 'n': len(files), 'acc': acc, 'latency': statistics.median(lat[3:])}))
'''

def fastai_row(py, learn, path, n_lat):
    "fastai's `get_preds` and `predict` in a subprocess of `py` (None when fastai is not there)"
    fn = Path(os.environ.get('TMPDIR', '/tmp'))/f'bench-predict-{os.getpid()}.pt'
    torch.save({'tensors': list(learn.model.state_dict().values()), 'vocab': learn.vocab, 'arch': learn.arch['name'],
                'stats': [s.tolist() for s in learn.prep.stats]}, fn)
    try:
        r = subprocess.run([py, '-c', FASTAI, str(path), str(fn), str(learn.prep.size), str(learn.prep.decode_size), str(n_lat)],
                           capture_output=True, text=True)
    finally: fn.unlink(missing_ok=True)
    if r.returncode:
        if 'No module named' in r.stderr and 'fastai' in r.stderr: return None
        raise RuntimeError(f'the fastai peer failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def accuracy(files, preds, vocab):
    return sum(vocab[int(i)] == parent_label(f) for f, i in zip(files, preds)) / len(files)

def ours_cli(run, val):
    t0 = time.time()
    r = subprocess.run([sys.executable, '-m', 'minifastai.inference', str(run), str(val)], capture_output=True, text=True, check=True)
    secs = time.time() - t0
    return secs, float(r.stdout.strip().splitlines()[-1].split()[1])

def ours_onnx(learn, files, tmp):
    "Export, then time ONNX Runtime on our decoding (the `DataLoader`'s workers), batches of 64"
    import onnxruntime as ort
    learn.to_onnx(tmp)
    sess, ds = ort.InferenceSession(tmp), _Files(files, learn.prep)
    t0 = time.time()
    dl, out = DataLoader(ds, bs=64, n_workers=os.cpu_count(), dtype=torch.uint8), []
    for xb, _ in dl: out.append(torch.from_numpy(sess.run(['probs'], {'images': xb.numpy()})[0]))
    dl.close()
    return time.time() - t0, torch.cat(out).argmax(1)

def latency(learn, files, n):
    ts = []
    for f in files[:n + 3]:
        t = time.perf_counter(); learn.predict(f); ts.append(time.perf_counter() - t)
    return statistics.median(ts[3:])

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('run', type=Path, help='a minifastai-train run folder of a resnet_small or resnet_small_d model')
    p.add_argument('--peer-python', default=sys.executable, help='a Python with fastai 2.8 (default: this one)')
    p.add_argument('--latency-n', type=int, default=50)
    a = p.parse_args()
    path = untar_data(URLs.IMAGENETTE_160)
    learn = load_learner(a.run)
    arch = learn.arch['name']
    assert arch in ('resnet_small', 'resnet_small_d'), f"the fastai peer's network is resnet_small or resnet_small_d, not {arch}"
    files = get_image_files(path/'val')
    n, rows = len(files), []
    secs, acc = ours_cli(a.run, path/'val')
    rows.append(('minifastai-predict RUN val/ (the command: start-up included)', secs, acc))
    t0 = time.time(); pr = learn.predict_files(path/'val'); s = time.time() - t0
    rows.append(('learn.predict_files(val/) (model loaded)', s, accuracy(pr.files, pr.idxs, learn.vocab)))
    xb = torch.stack([learn.prep.image(f) for f in files])   # decoded beforehand: the network alone
    model = learn._inference()
    t0 = time.time(); idxs = torch.cat([learn._probs(xb[k:k + 256], model) for k in range(0, n, 256)]).argmax(1); s = time.time() - t0
    rows.append(('its forward passes alone (images decoded beforehand)', s, accuracy(files, idxs, learn.vocab)))
    onnx_fn = Path(os.environ.get('TMPDIR', '/tmp'))/f'bench-predict-{os.getpid()}.onnx'
    try:
        s, idxs = ours_onnx(learn, files, onnx_fn)
        rows.append(('ONNX Runtime on our decoding', s, accuracy(files, idxs, learn.vocab)))
    except ImportError as e: print(f'ONNX row skipped: {e}')
    finally: onnx_fn.unlink(missing_ok=True)
    lat = latency(learn, files, a.latency_n)
    f = fastai_row(a.peer_python, learn, path, a.latency_n)
    if f: rows.append(('fastai 2.8: get_preds(dl=test_dl(files)) (model loaded)', f['secs'], f['acc']))
    roof, gflop = sgemm_gflops(), n * image_gflop(arch, learn.prep.size, False)
    print(f'\n{n} images of Imagenette-160 val/, {arch} at {learn.prep.size}px ({gflop:.0f} GFLOP of forward passes); '
          f'{os.cpu_count()} CPU cores, torch {torch.__version__}, float32 sgemm {roof:.0f} GFLOPS')
    print(f"{'':<62} {'seconds':>8} {'images/s':>9} {'accuracy':>9} {'GFLOPS':>7} {'of roof':>8} {'vs fastai':>10}")
    for name, s, acc in rows:
        ratio = f"{f['secs'] / s:.2f}x" if f else ''
        print(f'{name:<62} {s:>8.2f} {n / s:>9.0f} {acc:>9.4f} {gflop / s:>7.1f} {gflop / s / roof:>8.0%} {ratio:>10}')
    print(f"single image, learn.predict(file), median of {a.latency_n}: ours {1000 * lat:.1f} ms" +
          (f", fastai {1000 * f['latency']:.1f} ms: ours takes {lat / f['latency']:.2f} of fastai's time" if f else
           f'; fastai rows skipped: fastai is not importable by {a.peer_python}'))
    if not f: return
    if abs(f['acc'] - rows[0][2]) > 0.005:
        print(f"fastai's accuracy differs from ours by {100 * abs(f['acc'] - rows[0][2]):.1f} points: its preprocessing differs")
    save('bench/predict.py', {'machine': machine(), 'date': time.strftime('%Y-%m-%d'), 'images': n, 'size': learn.prep.size,
          'sgemm_gflops': round(roof, 1),
          'rows': [{'name': name, 'seconds': round(s, 2), 'images_per_s': round(n / s), 'accuracy': round(acc, 4),
                    'gflops': round(gflop / s, 1), 'of_roof': f'{gflop / s / roof:.0%}', 'speed_vs_fastai': f"{f['secs'] / s:.2f}x"} for name, s, acc in rows],
          'latency_ms': {'ours': round(1000 * lat, 1), 'fastai': round(1000 * f['latency'], 1),
                         'ours_over_fastai': f"{lat / f['latency']:.2f}x"}})

if __name__ == '__main__': main()
