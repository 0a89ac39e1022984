"""Figures never go stale: every result quoted in the book's prose must be shown by a stored output.

    python .ci/figures.py            check every notebook in nbs/ (index.ipynb, which README.md is made from, too)
    python .ci/figures.py NB ...     check only these notebooks' prose
    python .ci/figures.py --why ...  also print, for each backed figure, the output that backs it

A *figure* is a percentage (`80.05%`, `61 %`) or a ratio (`0.95x`, `1.2x`; not `3x3`, not `2x2`) in a markdown
cell. Each one must appear in a *backing*: a stored output (stream, text/plain or text/html) of the same
notebook or of a notebook that the same cell names (`09_train`, `02b_resnet.ipynb`), or `bench/results.json`.
(Any notebook at all would back almost any figure by accident: some `0.7747` somewhere "shows" 77.5%.)
A number in a backing backs a figure when it rounds to it (half up or half even) and is written at least as
precisely, but not much more:
- `80.1%` is backed by `80.08%`, by a fraction `0.8008` (two to four more decimals than the figure) or by a
  bare `80.08` (a table column: at most one more decimal), never by a less precise `80%` or `0.8`;
- `0.95x` is backed by `0.951x` or a bare `0.95`, not by a loss `0.948296`; a whole figure (`61%`, `2x`) is
  backed by a number with its unit (`61%`, `2x`) or with decimals (`0.6083`, `2.0`), not by any stray `61`;
- a number with another unit (`75.7 MFLOP`, `3 s`) or inside a range or an expression (`0.95-0.85`, `3e-3`,
  `5.4e-08`) backs nothing.

Not checked, because they are not prose: code spans and blocks, math (`$...$`), links' targets, HTML tags.

Figures that are not our measurements (a setting: "crops of at least 50%"; a definition; a number quoted from
a paper or a leaderboard) are declared where they stand, in the same markdown cell, by an HTML comment that
the rendered page does not show and that says what they are:

    <!-- not measured: 50% 75% (settings), 85.77% (the leaderboard's) -->

Every figure listed in such a comment is exempt in that cell, and a listed figure that the cell does not
contain is an error (the marker went stale). There is no central allow-list.

`bench/results.json`, the benchmarks' results file: a JSON object with one entry per table, keyed by the
benchmark's command line (`"bench/train.py default"`), each an object with at least `machine` (the host in
words: CPU, cores, GPU) and `date`, and the table's values in any JSON shape (`rows`: a list of objects).
A benchmark writes its entry after printing its table: it reads the file (or `{}`), sets its key, and writes
the whole file back (sorted keys, indent 1), so that re-running a benchmark replaces its own figures only.
Every number in the file (in values or inside strings) is a backing. No benchmark writes it yet.

The check is a guard, not a proof: an unrelated output of the same notebook that happens to round to a figure
backs it too. `--why` prints what backs each figure, for a reviewer to read.

Prints each unbacked figure as `notebook cell N (id): figure  <context>`, and ends with a summary line; the exit
status is 1 if any figure is unbacked or any marker is stale."""
import json, re, sys
from decimal import Decimal, ROUND_HALF_UP, ROUND_HALF_EVEN
from pathlib import Path

root = Path(__file__).resolve().parent.parent
RESULTS = root / 'bench' / 'results.json'

# a figure: a number followed by % or x (a ratio); not in a word, a range (2-3x) or an expression (3x3, 0x1f)
FIGURE = re.compile(r'(?<![\w.\-/])(\d+(?:\.\d+)?)(?:\s?(%)|(x)(?![\w\d]))')
# a number in a backing, and its unit: %, x, none, or (group 4) another unit, a range or an expression: these
# back nothing
_OTHER = r'\s?(?:[KMGT]?FLOPS?|[KMGT]i?B|ms|us|µs|s|min|h|px|M|k|billion|million|img|epochs?|steps?|seeds?)(?!\w)'
NUMBER = re.compile(r'(?<![\w.])(?<!\d-)(\d+(?:\.\d+)?)(?:\s?(%)|(x)(?![\w\d])|(' + _OTHER + r'|[-/]\d|e[-+]?\d|\.\d)|(?!\d))')
MARKER = re.compile(r'<!--\s*not measured:(.*?)-->', re.S)
# what is not prose: fenced code, code spans, math, HTML comments and tags, link targets
NOT_PROSE = re.compile(r'```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$\n]*\$|<!--.*?-->|<[^>\n]*>|\]\([^)\n]*\)', re.S)
# a notebook named in a cell: 09_train, 02b_resnet.ipynb
NAMED = re.compile(r'(?<![\w/])(\d\d[a-z]?_\w+?)(?:\.ipynb)?(?!\w)')

def figures(text):
    "The figures in the prose of markdown `text`: (figure as written, value, decimals, unit, position)"
    return [(m.group(1) + ('%' if m.group(2) else 'x'), Decimal(m.group(1)), len(m.group(1).partition('.')[2]),
             '%' if m.group(2) else 'x', m.start()) for m in FIGURE.finditer(NOT_PROSE.sub(' ', text))]

def _numbers(text):
    "The numbers of a backing `text` that can back a figure: (value, decimals, unit: '%', 'x' or '')"
    for m in NUMBER.finditer(text):
        if not m.group(4): yield Decimal(m.group(1)), len(m.group(1).partition('.')[2]), m.group(2) or m.group(3) or ''

def _outputs(cell):
    "The texts a code cell's stored outputs show"
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream': yield ''.join(o.get('text', ''))
        data = o.get('data', {})
        yield ''.join(data.get('text/plain', ''))
        yield re.sub(r'<[^>]*>', ' ', ''.join(data.get('text/html', '')))

def _json_texts(v):
    "Every key, string and number of a JSON value, as text"
    if isinstance(v, dict):
        for k, x in v.items(): yield str(k); yield from _json_texts(x)
    elif isinstance(v, list):
        for x in v: yield from _json_texts(x)
    elif isinstance(v, float): yield format(v, '.10f').rstrip('0')
    elif v is not None and not isinstance(v, bool): yield str(v)

def backings(nbs):
    "{notebook name: {(value, decimals, unit): where}} for the stored outputs of `nbs`; the results file's under 'results'"
    nums = {}
    for p in nbs:
        d = nums[p.stem] = {}
        for i, c in enumerate(json.loads(p.read_text(encoding='utf-8'))['cells']):
            for t in _outputs(c):
                for n in _numbers(t): d.setdefault(n, f'{p.name} cell {i}')
    d = nums['results'] = {}
    if RESULTS.exists():
        res = json.loads(RESULTS.read_text(encoding='utf-8'))
        bad = [k for k, v in res.items() if not (isinstance(v, dict) and {'machine', 'date'} <= set(v))]
        if bad: sys.exit(f'FAIL: {RESULTS.name}: entries without machine and date: {bad}')
        for t in _json_texts(res):
            for n in _numbers(t): d.setdefault(n, RESULTS.name)
    return nums

def _rounds_to(v, d, figure):
    q = Decimal(1).scaleb(-d)
    return any(v.quantize(q, rounding=r) == figure for r in (ROUND_HALF_UP, ROUND_HALF_EVEN))

def backed(value, d, unit, nums):
    "Where a figure (`value` with `d` decimals and `unit`) is shown in `nums` ({(value, decimals, unit): where}), or None"
    for (v, e, u), where in nums.items():
        if u == unit and e >= d and _rounds_to(v, d, value): return where                     # 80.08% or 0.951x
        if u == '' and max(d, 1) <= e <= d + 1 and _rounds_to(v, d, value): return where     # a bare 80.08 or 0.95
        if unit == '%' and u == '' and v <= 1 and d + 2 <= e <= d + 4 and _rounds_to(v * 100, d, value):
            return where                                                                      # a fraction 0.8008
    return None

def check(paths, nbs, why=False):
    "Print the unbacked figures and stale markers in the markdown of notebooks `paths`; return how many"
    all_nums, bad, n_figs = backings(nbs), 0, 0
    for p in paths:
        for i, c in enumerate(json.loads(p.read_text(encoding='utf-8'))['cells']):
            if c['cell_type'] != 'markdown': continue
            src, at_cell = ''.join(c['source']), f'{p.name} cell {i} ({c.get("id")})'
            nums = dict(all_nums['results'])
            for nb in [p.stem, *NAMED.findall(src)]: nums.update(all_nums.get(nb, {}))
            figs, prose = figures(src), NOT_PROSE.sub(' ', src)
            exempt = {f for m in MARKER.finditer(src) for f, *_ in figures(m.group(1))}
            for f in sorted(exempt - {f for f, *_ in figs}):
                print(f'{at_cell}: {f}  stale marker: the cell does not contain it'); bad += 1
            for f, v, d, unit, at in figs:
                n_figs += 1
                if f in exempt: continue
                ctx, where = ' '.join(prose[max(0, at - 50):at + 25].split()), backed(v, d, unit, nums)
                if where is None: print(f'{at_cell}: {f}  ...{ctx}...'); bad += 1
                elif why: print(f'  {at_cell}: {f} backed by {where}  ...{ctx}...')
    print(f'{n_figs} figures in the prose of {len(paths)} notebooks: {bad} unbacked or stale')
    return bad

def _selftest():
    "The rules above, on examples: (figure, backing text, backed?)"
    cases = [('80.1%', 'acc 0.8008 after', True), ('80.05%', '0.8', False), ('80.1%', '80.08%', True),
             ('80%', '80 images', False), ('0.95x', '(0.951x)', True), ('0.95x', '0.95-0.85', False),
             ('1.4x', '1.448296', False), ('75.7%', '75.7 MFLOP', False), ('5%', '5.4e-08', False),
             ('0.46x', '| 0.46 |', True), ('2x', '2', False), ('61%', 'of roof 61%', True)]
    for fig, text, want in cases:
        (_, v, d, unit, _), = figures(fig)
        assert (backed(v, d, unit, {n: 'here' for n in _numbers(text)}) is not None) == want, (fig, text, want)
    text = 'a 3x3 conv, a 2x2 grid, `0.5x`, $50%$, <!-- 9% -->, [a](b/7%), 1.5x faster, 50 % off, 2-3x'
    assert [f for f, *_ in figures(text)] == ['1.5x', '50%'], figures(text)

if __name__ == '__main__':
    _selftest()
    nbs = sorted(p for p in (root / 'nbs').glob('*.ipynb') if not p.name.startswith('_'))
    paths = [Path(a).resolve() for a in sys.argv[1:] if a != '--why'] or nbs
    sys.exit(1 if check(paths, nbs, why='--why' in sys.argv) else 0)
