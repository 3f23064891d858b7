"""The E2B template sandboxrun runs in, and building it (``sandboxrun template build``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from e2b import AuthenticationException

from sandboxrun.config import CLAUDE_CODE_VERSION
from sandboxrun.errors import AuthError, BackendError

if TYPE_CHECKING:
    from e2b.template.main import TemplateBuilder

HOME = "/home/user"


def claude_template() -> TemplateBuilder:
    """The E2B template sandboxrun runs in: Node, git, zstd and a pinned Claude Code."""
    from e2b import Template

    return (
        Template()
        .from_node_image("22-bookworm")
        .apt_install(["git", "zstd", "ca-certificates", "procps"], no_install_recommends=True)
        .npm_install(f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}", g=True)
        .run_cmd("claude --version")
        .set_user("user")
        .set_workdir(HOME)
    )


def build_template(
    name: str,
    *,
    cpu_count: int = 2,
    memory_mb: int = 2048,
    on_log: Callable[[str], None] | None = None,
) -> str:
    """Build :func:`claude_template` on E2B as ``name``; returns the template id."""
    from e2b import Template

    from sandboxrun.sandbox.backends.e2b_env import scrub

    def logs(entry: object) -> None:
        if on_log is not None:
            on_log(scrub(str(entry)))

    try:
        info = Template.build(
            claude_template(), name, cpu_count=cpu_count, memory_mb=memory_mb, on_build_logs=logs
        )
    except AuthenticationException:
        raise AuthError(
            "E2B rejected the API key (E2B_API_KEY) while building the template",
            "Check the key at https://e2b.dev/dashboard?tab=keys.",
        ) from None
    except Exception as exc:  # noqa: BLE001 - BuildException, network errors, ...
        raise BackendError(
            f"building the E2B template {name!r} failed: {scrub(str(exc))[:1000]}",
            "Check the network and your E2B plan's build limits, then run "
            "`sandboxrun template build` again.",
        ) from None
    return getattr(info, "template_id", name)
