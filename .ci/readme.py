"""Generate README.md from nbs/index.ipynb (nbdev_readme needs quarto, which these machines lack).

Markdown cells are copied; code cells are shown as python blocks with their text outputs, except
cells with a `#| hide` directive. `--check` fails if README.md is out of date."""
import json, sys
from pathlib import Path

def render(nb_path):
    out = []
    for c in json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']:
        src = ''.join(c['source']).strip('\n')
        if c['cell_type'] == 'markdown': out.append(src)
        elif c['cell_type'] == 'code':
            lines = src.split('\n')
            if any(l.strip().replace(' ', '') in ('#|hide', '#|export', '#|exporti') for l in lines): continue
            code = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
            if code: out.append(f'```python\n{code}\n```')
            for o in c.get('outputs', []):
                text = o.get('text') or o.get('data', {}).get('text/plain')
                if text: out.append('```\n' + ''.join(text).rstrip('\n') + '\n```')
    return '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    root = Path(__file__).resolve().parent.parent
    md = render(root / 'nbs' / 'index.ipynb')
    readme = root / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != md:
            sys.exit('FAIL: README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py`')
        print('README.md matches nbs/index.ipynb')
    else: readme.write_text(md, encoding='utf-8')
