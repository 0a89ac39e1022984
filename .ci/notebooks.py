"""Run the notebooks the way a reader does: top to bottom in a real Jupyter kernel (ipykernel via nbclient).

    python .ci/notebooks.py check [NB ...]   run every cell but the `#| slow` ones; fail on any error cell
    python .ci/notebooks.py store [NB ...]   run every cell (slow ones too) and store the outputs in the notebook
    python .ci/notebooks.py lint [NB ...]    the book's layout rules: no markdown cell over 30 lines, no code cell
                                             over 60, no stored image over 100 KB

`nbdev_test` is not a kernel: there, output is captured differently, `in_notebook()` is false and the
`#| cuda`/`#| slow` flags skip cells. A notebook can pass it and still stop a reader's Run All, so CI runs
this check as well. `store` keeps what teaches (text, tables, plots) and drops what does not: progress-bar
HTML and its styles, warnings and other stderr, empty displays. NB defaults to every notebook in nbs/."""
import re, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import nbformat
from nbclient import NotebookClient

root = Path(__file__).resolve().parent.parent
_flag = re.compile(r'^\s*#\|\s*(\w+)\s*$', re.M)

def flags(cell): return set(_flag.findall(''.join(cell.source))) if cell.cell_type == 'code' else set()

def _keep(o):
    "Whether output `o` teaches something (and is not a progress bar, its styles, a warning or an empty display)"
    if o.output_type == 'stream': return o.name == 'stdout' and o.text.strip() != ''
    if o.output_type == 'error': return True
    html = ''.join(o.get('data', {}).get('text/html', ''))
    if '<progress' in html or html.lstrip().startswith('<style') : return False
    if set(o.get('data', {})) <= {'text/html', 'text/plain'} and html.strip() == '' and 'text/html' in o.get('data', {}): return False
    return True

def run(path, store=False, timeout=1800):
    "Execute notebook `path` in a kernel; return (seconds, [(cell index, error)])"
    nb = nbformat.read(path, as_version=4)
    run_nb = nb if store else nbformat.from_dict(nb)
    if not store:  # the slow cells are skipped: keep them out of the kernel's sight
        run_nb.cells = [c for c in run_nb.cells if 'slow' not in flags(c)]
    t0 = time.time()
    client = NotebookClient(run_nb, timeout=timeout, kernel_name='python3', allow_errors=True,
                            resources={'metadata': {'path': str(path.parent)}})
    client.execute()
    errors = [(i, f"{o.ename}: {o.evalue}") for i, c in enumerate(run_nb.cells) if c.cell_type == 'code'
              for o in c.outputs if o.output_type == 'error']
    if store and not errors:
        for c in nb.cells:
            if c.cell_type == 'code':
                c.outputs = [o for o in c.outputs if _keep(o)]
                c.execution_count = None
                for o in c.outputs:
                    if 'execution_count' in o: o.execution_count = None
        nbformat.write(nb, path)
    return time.time() - t0, errors

MAX_LINES, MAX_IMAGE = {'markdown': 30, 'code': 60}, 100_000

def lint(path):
    "The cells of notebook `path` that break the layout rules, as messages"
    nb, bad = nbformat.read(path, as_version=4), []
    for i, c in enumerate(nb.cells):
        n = len(c.source.split('\n'))
        if n > MAX_LINES.get(c.cell_type, n): bad.append(f'cell {i}: {n} lines of {c.cell_type} (at most {MAX_LINES[c.cell_type]})')
        for o in c.get('outputs', []):
            for kind, data in o.get('data', {}).items():
                if kind.startswith('image/') and len(data) * 3 // 4 > MAX_IMAGE:
                    bad.append(f'cell {i}: a {kind} output of {len(data) * 3 // 4 // 1000} KB (at most {MAX_IMAGE // 1000})')
    return bad

def main(args):
    mode, names = (args or [''])[0], args[1:]
    if mode not in ('check', 'store', 'lint'): sys.exit(__doc__)
    paths = [Path(n).resolve() for n in names] or sorted((root/'nbs').glob('[0-9]*.ipynb'))
    if mode == 'lint':
        bad = {p.name: lint(p) for p in paths}
        for name, msgs in bad.items():
            for m in msgs: print(f'{name}: {m}')
        print(f"lint: {sum(not m for m in bad.values())} passed, {sum(bool(m) for m in bad.values())} failed")
        sys.exit(1 if any(bad.values()) else 0)
    def one(p):
        try: s, errs = run(p, store=mode == 'store')
        except Exception as e: s, errs = 0., [(-1, f'{type(e).__name__}: {e}')]   # a dead kernel, a cell past its time-out
        print(f"{p.name}: {len(errs)} error cell(s), {s:.0f} s", flush=True)
        for i, e in errs: print(f"    cell {i}: {e[:300]}", flush=True)
        return not errs
    with ThreadPoolExecutor(1 if mode == 'store' else 2) as ex: ok = list(ex.map(one, paths))
    print(f"kernel: {sum(ok)} passed, {len(ok) - sum(ok)} failed")
    if mode == 'store' and all(ok):  # clean only what was stored: other notebooks may be open in an editor
        import subprocess
        for p in paths: subprocess.run(['nbdev_clean', '--fname', str(p)], cwd=root, check=True)
    sys.exit(0 if all(ok) else 1)

if __name__ == '__main__': main(sys.argv[1:])
