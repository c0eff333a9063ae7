#!/usr/bin/env python
"""Install the notebook hooks of this project (run by `make venv`; safe to run again).

1. Jupyter (JupyterLab, Notebook, any Jupyter server started from this environment): a pre-save hook that cleans
   each notebook with nbdev's `clean_jupyter` as it is saved, so that opening and saving a notebook leaves the tree
   clean (no kernelspec, language_info or execution counts that `tools/check_hygiene.sh` would reject). It goes into
   this environment's own Jupyter configuration (`<venv>/etc/jupyter/jupyter_server_config.json`, merged with what
   is there; the `.d` folder next to it is read for server extensions only), never into `~/.jupyter`. nbdev's `clean_jupyter` acts because settings.ini has `jupyter_hooks = True`.
2. git: a pre-commit hook that cleans the staged notebooks with `nbdev_clean` and stops the commit when that changed
   any of them (add them again and commit). Whether the library matches the notebooks is checked by
   `tools/check_hygiene.sh` (`make test`). An existing pre-commit hook this script did not write is left alone.

    python tools/install_hooks.py      (the Python of the environment that runs Jupyter)
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_CONFIG = Path(sys.prefix) / 'etc' / 'jupyter' / 'jupyter_server_config.json'
HOOK_MARK = '# neuronb pre-commit hook (tools/install_hooks.py)'
PRE_COMMIT = f'''#!/usr/bin/env bash
{HOOK_MARK}: staged notebooks must be clean (nbdev_clean).
set -euo pipefail
root="$(git rev-parse --show-toplevel)"
bin="$root/.venv/bin"
[ -x "$bin/nbdev_clean" ] || {{ echo "pre-commit: $bin/nbdev_clean not found (make venv); skipping the notebook check" >&2; exit 0; }}
mapfile -t notebooks < <(git diff --cached --name-only --diff-filter=ACMR -- '*.ipynb')
[ "${{#notebooks[@]}}" -gt 0 ] || exit 0
dirty=()
for nb in "${{notebooks[@]}}"; do
  before="$(git hash-object "$root/$nb")"
  (cd "$root" && "$bin/nbdev_clean" --fname "$nb")
  [ "$before" = "$(git hash-object "$root/$nb")" ] || dirty+=("$nb")
done
if [ "${{#dirty[@]}}" -gt 0 ]; then
  echo "pre-commit: nbdev_clean cleaned these notebooks; 'git add' them and commit again:" >&2
  printf '    %s\\n' "${{dirty[@]}}" >&2
  exit 1
fi
'''


def install_jupyter_hook() -> str:
    config = json.loads(JUPYTER_CONFIG.read_text()) if JUPYTER_CONFIG.is_file() else {}
    config.setdefault('ContentsManager', {})['pre_save_hook'] = 'nbdev.clean.clean_jupyter'
    JUPYTER_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    JUPYTER_CONFIG.write_text(json.dumps(config, indent=2) + '\n')
    return f"Jupyter: notebooks are cleaned on save ({JUPYTER_CONFIG.relative_to(Path(sys.prefix).parent)})"


def install_git_hook() -> str:
    try:
        hooks = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--git-path', 'hooks'], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'git: not a git checkout (or git is not installed); no pre-commit hook installed'
    hook = (ROOT / hooks / 'pre-commit') if not os.path.isabs(hooks) else Path(hooks) / 'pre-commit'
    if hook.exists() and HOOK_MARK not in hook.read_text(errors='replace'):
        return f'git: {hook} exists and is not ours; left alone (see tools/install_hooks.py for what ours does)'
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(PRE_COMMIT)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return 'git: staged notebooks are cleaned and checked before each commit (.git/hooks/pre-commit)'


if __name__ == '__main__':
    print(install_jupyter_hook())
    print(install_git_hook())
