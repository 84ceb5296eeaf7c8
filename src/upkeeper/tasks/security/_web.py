"""Options and target handling shared by the web checks (headers, CORS, exposed files)."""

from __future__ import annotations

from pydantic import Field

from upkeeper.config.targets import HttpTarget, NginxTarget
from upkeeper.core.task import TaskContext, TaskOptions
from upkeeper.errors import TaskError


class WebOptions(TaskOptions):
    url: str | None = Field(None, description="URL to check (default: the target's url). "
            "Source: upkeeper (not set by default)")
    verify: bool | str = Field(
        True, description="verify TLS certificates: true (system CAs), false, or the path of a CA bundle to trust. "
                "Source: upkeeper default"
    )
    timeout: float = Field(10, gt=0, description="seconds per HTTP request. Source: upkeeper default")


def web_url(ctx: TaskContext, url: str | None) -> str:
    if url:
        return url
    target = ctx.target
    if isinstance(target, HttpTarget | NginxTarget) and target.url:
        return target.url
    raise TaskError(f"job {ctx.job!r} has no URL to check",
                    "Try: give the target a 'url', or set the job's 'url' option")
