"""Workspace capability negotiation.

Agents never receive a filesystem path. They negotiate a *view* by intent::

    view = await ctx.workspace.open_view(
        purpose="Fix failing payment test",
        hints=["payment", "checkout"],
        file_types=["python"],
        max_files=10,
        mode=WorkspaceMode.READ_WRITE_OVERLAY,
    )

    for path in view.files:
        content = await view.read(path)

The runtime resolves the request (semantic search + dependency graph + git
metadata + policy + optional human approval) and returns a bounded grant.
Writes are staged as :class:`WorkspacePatch` objects, never applied directly
to the host filesystem from inside the sandbox.
"""

# wopfs: a transcription of the seed's a2a_pack/workspace.py (the project's
# source document): its models and its WorkspaceView / WorkspaceClient
# interfaces, unchanged. Left out: LocalWorkspaceView, LocalWorkspaceClient
# and _glob_to_regex (the seed's in-memory implementation for dev/tests);
# added: the pydantic 2 check just below, so that under pydantic 1 (whose
# BaseModel ignores model_config) this module fails to import and
# wopfs_client falls back to its dataclasses instead of building models
# that neither forbid extra fields nor freeze.
# `wopfs_client` builds these classes when this module (or the seed's own
# a2a_pack.workspace) imports.

from __future__ import annotations

import re  # noqa: F401  (the seed's import, used by its local implementation)
from abc import ABC, abstractmethod
from datetime import datetime
from enum import Enum
from typing import Literal, Sequence

import pydantic

if int(pydantic.VERSION.split(".")[0]) < 2:  # wopfs: not in the seed
    raise ImportError(f"the seed's models need pydantic 2, this is {pydantic.VERSION}")

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt  # noqa: E402


class WorkspaceMode(str, Enum):
    READ_ONLY = "read_only"
    READ_WRITE_OVERLAY = "read_write_overlay"  # writes staged as patches
    READ_WRITE_DIRECT = "read_write_direct"  # discouraged; needs explicit policy


class FileType(str, Enum):
    PYTHON = "python"
    TYPESCRIPT = "typescript"
    JAVASCRIPT = "javascript"
    YAML = "yaml"
    JSON = "json"
    TOML = "toml"
    MARKDOWN = "markdown"
    SQL = "sql"
    SHELL = "shell"
    OTHER = "other"


class FileMatch(BaseModel):
    """Result row from :meth:`WorkspaceClient.search`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    file_type: FileType
    score: float = 0.0
    summary: str | None = None
    size_bytes: NonNegativeInt = 0


class WorkspaceGrant(BaseModel):
    """An approved access grant for a bounded set of files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grant_id: str
    purpose: str
    files: tuple[FileMatch, ...]
    mode: WorkspaceMode
    reason: str
    expires_at: datetime | None = None
    requires_human_approval: bool = False


class WorkspacePatch(BaseModel):
    """A staged write. Not applied until the runtime/approver commits it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grant_id: str
    path: str
    operation: Literal["create", "update", "delete"]
    content: bytes | None = None  # bytes for create/update, None for delete


class WorkspaceAccess(BaseModel):
    """Class-level workspace policy.

    Use :meth:`none` for agents that do not touch any workspace, or
    :meth:`dynamic` to allow capability negotiation under bounds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    max_files: NonNegativeInt = 0
    allowed_modes: tuple[WorkspaceMode, ...] = ()
    require_reason: bool = True
    deny_patterns: tuple[str, ...] = ()
    require_human_approval: bool = False
    max_total_size_bytes: PositiveInt = 100 * 1024 * 1024

    @classmethod
    def none(cls) -> "WorkspaceAccess":
        return cls(enabled=False)

    @classmethod
    def dynamic(
        cls,
        *,
        max_files: int = 25,
        allowed_modes: Sequence[WorkspaceMode] = (WorkspaceMode.READ_ONLY,),
        require_reason: bool = True,
        deny_patterns: Sequence[str] = (),
        require_human_approval: bool = False,
        max_total_size_bytes: int = 100 * 1024 * 1024,
    ) -> "WorkspaceAccess":
        return cls(
            enabled=True,
            max_files=max_files,
            allowed_modes=tuple(allowed_modes),
            require_reason=require_reason,
            deny_patterns=tuple(deny_patterns),
            require_human_approval=require_human_approval,
            max_total_size_bytes=max_total_size_bytes,
        )


class WorkspaceDenied(PermissionError):
    """Raised when a workspace request violates the agent's policy."""


class WorkspaceView(ABC):
    """A bounded view over a granted set of files.

    Returned by :meth:`WorkspaceClient.open_view`. Reads always go to the
    granted view; writes return :class:`WorkspacePatch` objects that the
    runtime will commit (or reject) outside the sandbox.
    """

    grant: WorkspaceGrant

    @property
    def files(self) -> tuple[FileMatch, ...]:
        return self.grant.files

    @abstractmethod
    async def read(self, path: str) -> bytes: ...

    @abstractmethod
    async def write(self, path: str, content: bytes) -> WorkspacePatch: ...

    @abstractmethod
    async def delete(self, path: str) -> WorkspacePatch: ...

    @abstractmethod
    async def patches(self) -> tuple[WorkspacePatch, ...]: ...


class WorkspaceClient(ABC):
    """Negotiation surface handed to the agent via ``ctx.workspace``.

    The concrete implementation is provided by the runtime; agents must
    program against this interface only.
    """

    @abstractmethod
    async def search(
        self,
        *,
        query: str,
        types: Sequence[FileType] = (),
        limit: int = 20,
    ) -> list[FileMatch]: ...

    @abstractmethod
    async def request_access(
        self,
        *,
        files: Sequence[FileMatch | str],
        mode: WorkspaceMode,
        reason: str,
        purpose: str = "",
    ) -> WorkspaceGrant: ...

    @abstractmethod
    async def open_view(
        self,
        *,
        purpose: str,
        hints: Sequence[str] = (),
        file_types: Sequence[FileType] = (),
        max_files: int = 10,
        mode: WorkspaceMode = WorkspaceMode.READ_ONLY,
        reason: str | None = None,
    ) -> WorkspaceView: ...

    @abstractmethod
    async def list_grants(self) -> list[WorkspaceGrant]: ...

    async def delegate(
        self,
        *,
        audience: str,
        allow_patterns: Sequence[str] = ("**",),
        deny_patterns: Sequence[str] = (),
        mode: WorkspaceMode = WorkspaceMode.READ_ONLY,
        outputs_prefix: str | None = None,
        ttl_seconds: int = 300,
    ) -> str:
        """Mint a signed grant token the caller can hand to ``ctx.call``.

        The default implementation requires the workspace to expose
        ``self.bucket`` and ``self.issuer`` — override in concrete clients
        that don't fit that shape.
        """
        from .grants import mint_grant

        bucket = getattr(self, "bucket", None) or getattr(self, "_bucket", None)
        if bucket is None:
            raise NotImplementedError(
                "this WorkspaceClient does not expose a bucket; override delegate()"
            )
        issuer = getattr(self, "issuer", "self")
        _, token = mint_grant(
            issuer=issuer,
            audience=audience,
            bucket=bucket,
            mode=mode,
            allow_patterns=tuple(allow_patterns),
            deny_patterns=tuple(deny_patterns),
            outputs_prefix=outputs_prefix,
            ttl_seconds=ttl_seconds,
        )
        return token
