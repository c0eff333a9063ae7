#!/usr/bin/env python
"""Check the outputs stored in the notebooks: the documentation site publishes them as they are.

A stored output must not hold
- a stream written to stderr (warnings, progress bars and library chatter all go there),
- an error (a notebook is stored after a clean run),
- a path of the machine that ran it (`/work/`, `/tmp/`, `/home/`, `/root/`, `/Users/`, `site-packages`),
- warning text (`SomethingWarning:` as Python's `warnings` module prints it),
- a figure wider than the docs column can show legibly (`MAX_FIGURE_PX`: 12 inches at the inline backend's 100 dpi;
  a wider figure is shrunk until its labels cannot be read: put its panels in rows instead).

    python tools/check_outputs.py [NOTEBOOK_OR_FOLDER ...]   (default: nbs/)

Exit status 1 with one line per problem (notebook, cell number, what was found and a snippet), 0 when clean.
"""
from __future__ import annotations

import base64
import json
import re
import struct
import sys
from pathlib import Path

MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/tmp/|/home/|/root/|/Users/|/private/var/)|site-packages")
WARNING_TEXT = re.compile(r"\b[A-Z]\w*Warning: ")
MAX_FIGURE_PX = 1200


def png_size(data: str | list) -> tuple[int, int]:
    "Width and height in pixels of a base64 PNG as stored in a notebook output."
    raw = base64.b64decode(''.join(data) if isinstance(data, list) else data)
    if raw[:8] != b'\x89PNG\r\n\x1a\n':
        raise ValueError('not a PNG')
    return struct.unpack('>II', raw[16:24])


def output_texts(output: dict) -> list[str]:
    "The text a reader of the page sees in one stored output (streams, text/plain, markdown, html, errors)."
    texts = []
    if 'text' in output:
        texts.append(''.join(output['text']) if isinstance(output['text'], list) else output['text'])
    for mime, value in output.get('data', {}).items():
        if mime.startswith('text/'):
            texts.append(''.join(value) if isinstance(value, list) else value)
    return texts


def problems_in(notebook: Path) -> list[str]:
    "One line per problem found in the stored outputs of `notebook`."
    try:
        cells = json.loads(notebook.read_text())['cells']
    except (OSError, ValueError, KeyError) as e:
        return [f"{notebook}: cannot be read as a notebook ({e})"]
    found = []
    for index, cell in enumerate(cells):
        for output in cell.get('outputs', []):
            kind = output.get('output_type')
            if kind == 'error':
                found.append(f"{notebook}: cell {index}: an error output ({output.get('ename')}: {output.get('evalue')})")
                continue
            if kind == 'stream' and output.get('name') == 'stderr':
                text = ''.join(output.get('text', ''))
                found.append(f"{notebook}: cell {index}: output on stderr: {text.strip()[:120]!r}")
                continue
            png = output.get('data', {}).get('image/png')
            if png is not None:
                width, height = png_size(png)
                if width > MAX_FIGURE_PX:
                    found.append(f"{notebook}: cell {index}: a figure {width} px wide (at most {MAX_FIGURE_PX}: the docs "
                                 f"column shrinks it until its labels cannot be read; use figsize <= 12 in, panels in rows)")
            for text in output_texts(output):
                for pattern, what in ((MACHINE_PATH, 'a machine path'), (WARNING_TEXT, 'warning text')):
                    match = pattern.search(text)
                    if match:
                        snippet = text[max(0, match.start() - 40): match.end() + 40].replace('\n', ' ')
                        found.append(f"{notebook}: cell {index}: {what}: {snippet!r}")
    return found


def notebooks(paths: list[Path]) -> list[Path]:
    "Notebooks named, or found under the folders named (checkpoints skipped)."
    found = []
    for path in paths:
        candidates = [path] if path.is_file() else sorted(path.rglob('*.ipynb'))
        found += [p for p in candidates if '.ipynb_checkpoints' not in p.parts]
    return found


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [Path(__file__).resolve().parents[1] / 'nbs']
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"check_outputs: no such file or folder: {missing}", file=sys.stderr)
        return 2
    problems = [line for nb in notebooks(paths) for line in problems_in(nb)]
    for line in problems:
        print(line)
    if problems:
        print(f"check_outputs: {len(problems)} problem(s) in stored outputs; fix the cause (pass the option, use a "
              f"relative or memory:// path, end the cell with ';'), re-run the notebook, then nbdev_clean it")
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
