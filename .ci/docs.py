"""Check the docs site's sources as `nbdev_docs` uses them, without quarto (which renders the site, and is not here).

    python .ci/docs.py config          # nbs/_quarto.yml, nbdev.yml and sidebar.yml: valid YAML, what nbdev writes, every notebook listed
    python .ci/docs.py procs [NB ...]  # nbdev's processors on each notebook, as nbdev_docs runs them before quarto

`nbdev_docs` (and the deploy workflow, which calls it) writes `nbs/nbdev.yml` from settings.ini and, since
`custom_sidebar = False`, `nbs/sidebar.yml` from the notebooks, then runs its processors on every notebook
(`_proc/`) and hands the result to quarto. Those processors drop `#| hide` and `#| export` cells, add the API
docs, and *execute* every exported cell and every cell with an import (`exec_show_docs`) in a fresh shell, without
the cells in between: a cell that imports and also uses a variable of an earlier cell stops the docs build.
Do not run `nbdev_docs`/`nbdev_preview` here to check this: without quarto they try to install it, and then
`pip install -e` the project into whatever Python is first on PATH. NB defaults to every notebook in nbs/."""
import contextlib, io, json, re, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import yaml

root = Path(__file__).resolve().parent.parent
nbs = root/'nbs'
_hide = re.compile(r'^\s*#\|\s*hide\s*$', re.M)

def config():
    "The problems of the quarto configuration (an empty list when there are none)"
    from nbdev.config import get_config
    from nbdev.quarto import nbdev_sidebar, _nbdev_yml
    errs = []
    q = yaml.safe_load((nbs/'_quarto.yml').read_text())
    if q.get('project', {}).get('type') != 'website': errs.append('_quarto.yml: project.type is not website')
    for f in q.get('metadata-files', []) + [q['format']['html'].get('css', 'styles.css')]:
        if not (nbs/f).exists(): errs.append(f'_quarto.yml names nbs/{f}, which does not exist')
    cfg = get_config()
    vals = {k: cfg[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']} | {'doc_path': cfg.doc_path.name}
    if (nbs/'nbdev.yml').read_text() != _nbdev_yml.format(**vals):
        errs.append('nbs/nbdev.yml is not what nbdev_docs writes from settings.ini')
    with contextlib.redirect_stdout(io.StringIO()) as out: nbdev_sidebar.__wrapped__(printit=True, force=True)
    listed = yaml.safe_load((nbs/'sidebar.yml').read_text())['website']['sidebar']['contents']
    if yaml.safe_load(out.getvalue())['website']['sidebar']['contents'] != listed:
        errs.append('nbs/sidebar.yml is not what nbdev_sidebar makes of nbs/: run `nbdev_sidebar` (it writes only that file)')
    every = sorted(p.name for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    if sorted(listed) != every: errs.append(f'sidebar.yml lists {sorted(set(listed) ^ set(every))} wrongly')
    if listed[:1] != ['index.ipynb']: errs.append('sidebar.yml does not start with index.ipynb, the home page')
    return errs

_proc = """import sys, warnings
from pathlib import Path
warnings.simplefilter('ignore')
from nbdev.serve_drv import exec_nb
from nbdev.processors import FilterDefaults
exec_nb(Path(sys.argv[1]), Path(sys.argv[2]), FilterDefaults)"""

def procs(path, out, timeout=300):
    "Run nbdev's docs processors on notebook `path` into folder `out`; return (seconds, error or None)"
    t0, dst = time.time(), out/path.name
    try: r = subprocess.run([sys.executable, '-c', _proc, str(path), str(dst)], cwd=root, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired: return time.time() - t0, f'more than {timeout} s'
    if r.returncode:
        lines = r.stderr.splitlines()
        at = next((l for l in lines if l.startswith('Exception: Error in notebook')), '')
        cause = next((l for l in lines if re.match(r'\w+(Error|Exception|Interrupt): ', l) and l != at), f'exit status {r.returncode}')
        return time.time() - t0, f'{cause} ({at.removeprefix("Exception: Error in notebook: ").rstrip(" :")})' if at else cause
    left = [c for c in json.loads(dst.read_text())['cells'] if _hide.search(''.join(c.get('source', '')))]
    return time.time() - t0, f'{len(left)} #| hide cell(s) left in the docs' if left else None

def main(args):
    mode, names = (args or [''])[0], args[1:]
    if mode == 'config':
        errs = config()
        for e in errs: print(f'FAIL: {e}')
        if not errs: print('docs config: _quarto.yml, nbdev.yml and sidebar.yml as nbdev_docs expects, every notebook listed')
        sys.exit(1 if errs else 0)
    if mode != 'procs': sys.exit(__doc__)
    paths = [Path(n).resolve() for n in names] or sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith('_'))
    with tempfile.TemporaryDirectory() as d:
        def one(p):
            s, err = procs(p, Path(d))
            print(f"{p.name}: {'FAIL: ' + err[:400] if err else 'ok'}, {s:.0f} s", flush=True)
            return err is None
        with ThreadPoolExecutor(2) as ex: ok = list(ex.map(one, paths))
    print(f'docs processors: {sum(ok)} passed, {len(ok) - sum(ok)} failed')
    sys.exit(0 if all(ok) else 1)

if __name__ == '__main__': main(sys.argv[1:])
