"""Creating a run directory all at once: everything is written into a temporary folder next to it,
which is renamed into place at the end; a failure at any point removes the temporary folder and
leaves ``RUN_DIR`` as it was (absent, or an empty folder)."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def is_free(run_dir: Path) -> bool:
    """Whether ``run_dir`` can be created: it does not exist, or is an empty folder."""
    return not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir()))


@contextlib.contextmanager
def staged(run_dir: str | os.PathLike, tag: str = "init") -> Iterator[Path]:
    """``with staged(RUN_DIR) as tmp:`` write into ``tmp`` (``.NAME.<tag>-<pid>.tmp`` next to it);
    renamed to ``RUN_DIR`` when the block ends, removed when it raises."""
    run_dir = Path(run_dir)
    tmp = run_dir.parent / f".{run_dir.name}.{tag}-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if run_dir.exists():
            run_dir.rmdir()  # an empty folder (is_free)
        os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
