#!/usr/bin/env bash
# Everything this project checks on a GPU, on a lent GPU machine (the workplace's `device` tool), which has
# PyTorch but neither network nor our other dependencies. One call carries at most 64 MiB and Imagenette-160
# (74 MB, what the leaderboard's 128px runs read) does not fit, so it travels in two parts, in two calls.
# Prepare here, in the repository root (`data/` and `.whl/` are git-ignored):
#
#   mkdir -p data .whl && split -b 40M ../shared/data/imagenette2-160.tgz data/imagenette2-160.tgz.part-
#   grep imagenette2-160 ../shared/data/SHA256SUMS > data/imagenette2-160.sha256
#   python -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl nbdev==2.4.14 "execnb<0.2" "fastcore<2" "fastprogress<1.1" "ghapi<2"
#   (then delete from .whl what the machine already has: numpy, pyyaml, packaging, setuptools, psutil, pygments, ...)
#
# Call 1 carries `data/imagenette2-160.tgz.part-aa` and runs `bash bench/gpu.sh stage`, which only checks that
# the part arrived (a warm machine keeps it, for 30 s after the call: make call 2 at once). Call 2 carries
# `data/imagenette2-160.tgz.part-ab`, `data/imagenette2-160.sha256` and `.whl`, and runs `bash bench/gpu.sh
# [BUDGET_S]`: it joins and checks the archive, runs the notebooks with their `#| cuda` cells on it (through the
# download code's mirror setting), then bench/train.py's GPU benchmark (the recipes that start within BUDGET_S
# seconds, default 240, then the plain PyTorch peer), and writes the logs to $OUT. With
# `data/imagenette2-128.tgz` instead of the parts (one call), the benchmark trains on the 128px images and the
# notebooks read a stand-in: those images enlarged to 160px on their shorter side.
set -uo pipefail
if [ "${1:-}" = stage ]; then ls -l data/imagenette2-160.tgz.part-aa || { echo "call 1 must carry data/imagenette2-160.tgz.part-aa"; exit 1; }; exit 0; fi
if [ -f data/imagenette2-160.tgz.part-ab ]; then
    [ -f data/imagenette2-160.tgz.part-aa ] || { echo "data/imagenette2-160.tgz.part-aa is not here: the machine was given back after call 1; run both calls again"; exit 1; }
    [ -f data/imagenette2-160.sha256 ] || { echo "call 2 must carry data/imagenette2-160.sha256 as well"; exit 1; }
    cat data/imagenette2-160.tgz.part-a? > data/imagenette2-160.tgz &&
        (cd data && sha256sum -c imagenette2-160.sha256) || { echo "data/imagenette2-160.tgz: the joined parts fail their checksum"; exit 1; }
    archive=data/imagenette2-160.tgz
else archive=data/imagenette2-128.tgz
fi
[ -f $archive ] || { echo "no data: carry the parts of data/imagenette2-160.tgz (or data/imagenette2-128.tgz), as this script's header says"; exit 1; }
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
if [ $archive = data/imagenette2-160.tgz ]; then   # the real archive, through the mirror (and no stand-in left from a 128px call)
    rm -rf $MINIFASTAI_HOME/data/imagenette2-160*; export MINIFASTAI_MIRROR=file://$PWD/data
elif [ ! -d $MINIFASTAI_HOME/data/imagenette2-160 ]; then
    tar xzf $archive -C $MINIFASTAI_HOME/data && mv $MINIFASTAI_HOME/data/imagenette2-128 $MINIFASTAI_HOME/data/imagenette2-160 &&
    python3 - <<'PY'
from multiprocessing import Pool
from pathlib import Path
from PIL import Image
def enlarge(fn):   # shorter side 128 -> 160, in place
    with Image.open(fn) as im: w, h = im.size; im = im.convert('RGB').resize((round(w * 160 / min(w, h)), round(h * 160 / min(w, h))))
    im.save(fn, quality=90)
with Pool() as p: p.map(enlarge, Path('/tmp/mfhome/data/imagenette2-160').rglob('*.JPEG'), chunksize=64)
PY
fi
t0=$SECONDS
for nb in 00_data 01_module 02a_batchnorm 08_fastpath 09_train 11_inference; do
    timeout 150 python3 -c "from nbdev.test import nbdev_test; nbdev_test(path='nbs/$nb.ipynb', flags='cuda')" \
        >>$OUT/cuda_tests.log 2>&1 && echo "$nb with its cuda cells: passed" || echo "$nb with its cuda cells: FAILED (see cuda_tests.log)"
done 2>&1 | tee $OUT/cuda_summary.log
echo "notebooks: $((SECONDS - t0)) s"
python3 bench/module.py --reps 5 2>&1 | tee $OUT/module_bench.log
python3 bench/train.py gpu --archive $archive --budget ${1:-240} 2>&1 | tee $OUT/gpu_bench.log
cat $OUT/cuda_summary.log
