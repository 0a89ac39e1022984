#!/usr/bin/env bash
# Everything this project checks on a GPU, in one call of a lent GPU machine (the workplace's `device` tool),
# which has PyTorch but neither network nor our other dependencies. Prepare here, in the repository root:
#
#   mkdir -p data .whl && cp ../shared/data/imagenette2-128.tgz data/     # both folders are git-ignored
#   python -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl nbdev==2.4.14 "execnb<0.2" "fastcore<2" "fastprogress<1.1" "ghapi<2"
#
# then run `bash bench/gpu.sh` there, carrying `.whl` and `data/imagenette2-128.tgz` (about 62 MB together).
# It runs the notebooks' `#| cuda` cells (08_fastpath's picture of Imagenette-160, too big to carry, reads the
# 128px copy extracted in its place), then bench/train.py's GPU benchmark with its lr/wd sweep, and writes the whole log to $OUT.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
export MINIFASTAI_HOME=/tmp/mfhome
mkdir -p $MINIFASTAI_HOME/data
[ -d $MINIFASTAI_HOME/data/imagenette2-160 ] || { tar xzf data/imagenette2-128.tgz -C $MINIFASTAI_HOME/data &&
    mv $MINIFASTAI_HOME/data/imagenette2-128 $MINIFASTAI_HOME/data/imagenette2-160; }
for nb in 01_module 02_layers 03_loss 08_fastpath 09_train; do
    python3 -c "from nbdev.test import nbdev_test; nbdev_test(path='nbs/$nb.ipynb', flags='cuda')" \
        >>$OUT/cuda_tests.log 2>&1 && echo "cuda cells of $nb: passed" || echo "cuda cells of $nb: FAILED (see cuda_tests.log)"
done
python3 bench/train.py gpu --sweep --archive data/imagenette2-128.tgz 2>&1 | tee $OUT/gpu_bench.log
