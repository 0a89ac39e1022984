#!/usr/bin/env bash
# Everything this project checks on a GPU, in one call of a lent GPU machine (the workplace's `device` tool),
# which has PyTorch but neither network nor our other dependencies. Prepare here, in the repository root:
#
#   mkdir -p data .whl && cp ../shared/data/imagenette2-128.tgz data/     # both folders are git-ignored
#   python -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl nbdev==2.4.14 "execnb<0.2" "fastcore<2" "fastprogress<1.1" "ghapi<2"
#   (then delete from .whl what the machine already has: numpy, pyyaml, packaging, setuptools, psutil, pygments, ...)
#
# then run `bash bench/gpu.sh [BUDGET_S]` there, carrying `.whl` and `data/imagenette2-128.tgz` (about 56 MB together).
# It runs the notebooks with their `#| cuda` cells, then bench/train.py's GPU benchmark (recipes that start within
# BUDGET_S seconds, default 200, then the plain PyTorch peer), and writes the logs to $OUT. Imagenette-160 is too
# big to carry, so the notebooks read a stand-in: the 128px images enlarged to 160px on their shorter side (same
# files, classes and counts; the benchmark itself trains on the real 128px images).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp}
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >$OUT/install.log 2>&1; then
    # offline, pip may lack what an editable build needs; 09's test only needs the console script's entry point
    echo "pip could not install minifastai (the end of $OUT/install.log follows): registering its console script by hand"
    tail -n 3 $OUT/install.log
    d=/tmp/site/minifastai-$(sed -n 's/^version *= *//p' settings.ini).dist-info && mkdir -p $d
    printf 'Metadata-Version: 2.1\nName: minifastai\nVersion: %s\n' "$(sed -n 's/^version *= *//p' settings.ini)" > $d/METADATA
    printf '[console_scripts]\n%s\n' "$(sed -n 's/^console_scripts *= *//p' settings.ini)" > $d/entry_points.txt
fi
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
export MINIFASTAI_HOME=/tmp/mfhome
mkdir -p $MINIFASTAI_HOME/data
[ -d $MINIFASTAI_HOME/data/imagenette2-160 ] || { tar xzf data/imagenette2-128.tgz -C $MINIFASTAI_HOME/data &&
    mv $MINIFASTAI_HOME/data/imagenette2-128 $MINIFASTAI_HOME/data/imagenette2-160 && python3 - <<'PY'
from multiprocessing import Pool
from pathlib import Path
from PIL import Image
def enlarge(fn):   # shorter side 128 -> 160, in place
    with Image.open(fn) as im: w, h = im.size; im = im.convert('RGB').resize((round(w * 160 / min(w, h)), round(h * 160 / min(w, h))))
    im.save(fn, quality=90)
with Pool() as p: p.map(enlarge, Path('/tmp/mfhome/data/imagenette2-160').rglob('*.JPEG'), chunksize=64)
PY
}
t0=$SECONDS
for nb in 00_data 01_module 02_layers 04_learner 08_fastpath 09_train; do
    timeout 150 python3 -c "from nbdev.test import nbdev_test; nbdev_test(path='nbs/$nb.ipynb', flags='cuda')" \
        >>$OUT/cuda_tests.log 2>&1 && echo "$nb with its cuda cells: passed" || echo "$nb with its cuda cells: FAILED (see cuda_tests.log)"
done 2>&1 | tee $OUT/cuda_summary.log
echo "notebooks: $((SECONDS - t0)) s"
python3 bench/train.py gpu --archive data/imagenette2-128.tgz --budget ${1:-200} 2>&1 | tee $OUT/gpu_bench.log
cat $OUT/cuda_summary.log
