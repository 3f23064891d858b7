"""The agent's changes inside submodules: never applied, kept as one patch per submodule.

The branch records a submodule as a commit of another repository (a gitlink), so no file under
such a path can land on it. A run with ``--include-submodules`` gave the agent those files
(:mod:`sandboxrun.sandbox.submodules`); without it the agent saw empty directories. Either way,
:func:`keep_submodule_changes` refuses every change under a gitlink of the branch (called from
:func:`sandboxrun.sync.replay.build_plan`'s checks) and :func:`write_submodule_patches` keeps
them as ``submodules/<path>.diff`` with paths relative to the submodule (``git -C PATH apply``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from sandboxrun.redact import Redactor

#: where the changes kept back inside submodules go, one patch per submodule
SUBMODULES_DIR = "submodules"
SUBMODULE_REASON = "inside a submodule"
GITLINK_MODE = "160000"


def keep_submodule_changes(
    refusals: list[tuple[str, str]], gitlinks: list[str], touched: set[str], refused: set[str]
) -> dict[str, list[str]]:
    """Refuse (append to ``refusals``) every touched path inside one of ``gitlinks``, the
    paths the branch holds as submodules; returns submodule -> the changed paths inside it.

    The sandbox had those paths as plain files (``--include-submodules``) or as nothing; the
    branch records a commit of another repository there, so no file under it can be applied.
    A path refused for another reason gets this reason too, so it is never kept for applying.
    """
    inside: dict[str, list[str]] = {}
    for path in sorted(touched):
        sub = next((s for s in gitlinks if path == s or path.startswith(s + "/")), None)
        if sub is None:
            continue
        refusals.append((path, f"{SUBMODULE_REASON} ({sub}): kept as a patch for it, "
                               "not applied to this branch"))  # fmt: skip
        inside.setdefault(sub, []).append(path)
        refused.add(path)
    return inside


def write_submodule_patches(
    raw: Callable[..., bytes],
    directory: Path,
    changes: dict[str, list[str]],
    tree: str,
    base_tree: str,
) -> dict[str, str]:
    """Write each submodule's kept-back changes (``tree`` against ``base_tree``, through the
    quarantine's ``raw`` git) as ``directory/submodules/<path>.diff``, paths relative to it;
    returns submodule -> patch file."""
    out = directory / SUBMODULES_DIR
    shutil.rmtree(out, ignore_errors=True)
    patches: dict[str, str] = {}
    for sub, paths in changes.items():
        inside = [p for p in paths if p != sub]
        if not inside:
            continue
        data = raw("diff", "--binary", "--full-index", "--no-renames", "--no-ext-diff",
                   "--no-textconv", "--no-color", f"--relative={sub}/", base_tree, tree,
                   "--", *(f":(literal){p}" for p in inside))  # fmt: skip
        if data:
            out.mkdir(exist_ok=True)
            target = out / (sub.replace("/", "__") + ".diff")
            # masked like every stored artifact (it is for reading and applying by hand)
            target.write_bytes(Redactor.from_env(os.environ).bytes(data))
            patches[sub] = str(target)
    return patches
