"""The sandbox side of a cold upload as git objects (``sync/gitupload.py``).

One command (``_CHECKOUT_SCRIPT``) verifies the uploaded pack, checks every entry of the
baseline tree, checks the files out and commits that tree; this module runs it and turns its
exit codes into sandboxrun's errors, as ``E2BSandbox.unpack`` does for a tarball.
"""

from __future__ import annotations

import re
from pathlib import Path

from sandboxrun.errors import BackendError, UnsafeArchiveError
from sandboxrun.sandbox.backends.base import Sandbox
from sandboxrun.sandbox.backends.e2b_scripts import _CHECKOUT_SCRIPT

_COMMIT = re.compile(r"[0-9a-f]{40}")


def checkout(
    sb: Sandbox, remote: str, tree: str, dest: str, *, name: str = "", timeout: float = 900
) -> str:
    """Check the uploaded pack ``remote`` and check its ``tree`` out into ``dest``.

    Every object is verified and every entry of the tree must be a regular file with a safe
    name before anything is written. Returns the baseline commit; ``remote`` is removed
    whatever happens; ``timeout`` bounds the command (``lifetime.command_bound``). Raises :class:`UnsafeArchiveError` for a pack sandboxrun never makes.
    """
    name = name or Path(remote).name
    res = sb.exec(["bash", "-c", _CHECKOUT_SCRIPT, "checkout", remote, dest, tree], timeout=timeout)
    if res.exit_code == 66:
        raise UnsafeArchiveError(
            f"refused to check out {name} in the sandbox: {res.error_text()}",
            "The tree holds links, submodules or names that could escape the repository; "
            "sandboxrun never builds those, so check where the pack came from.",
        )
    if not res.ok:
        raise BackendError(
            f"checking out {name} in sandbox {sb.id} failed: {res.error_text()[-1000:]}"
        )
    lines = res.text().strip().splitlines()
    if not lines or not _COMMIT.fullmatch(lines[-1]):
        raise BackendError(f"checking out {name} in sandbox {sb.id} gave no baseline commit")
    return lines[-1]
