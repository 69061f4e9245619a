"""The seed's WorkspaceClient and WorkspaceView, on top of `wopfs serve`.

Agents never receive a host path: they negotiate a *view* by intent and get
a mount of exactly the granted files. Reads and writes go through that
mount; writes land in wopfs's overlay and reach the host tree only when an
approver commits them.

    client = WopfsClient("/run/wopfs.sock")
    view = client.open_view(purpose="Fix the rounding bug", hints=["payment"],
                            file_types=[FileType.PYTHON], max_files=5,
                            mode=WorkspaceMode.READ_WRITE_OVERLAY)
    for f in view.files:
        text = view.read(f.path)

Standard library only (no pydantic): the models are dataclasses with the
seed's fields. The API is HTTP+JSON on a Unix domain socket; the server
knows the caller from the socket's peer credentials.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence


class WorkspaceMode(str, Enum):
    READ_ONLY = "read_only"
    READ_WRITE_OVERLAY = "read_write_overlay"
    READ_WRITE_DIRECT = "read_write_direct"


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


@dataclass(frozen=True)
class FileMatch:
    path: str
    file_type: FileType
    score: float = 0.0
    summary: str | None = None
    size_bytes: int = 0


@dataclass(frozen=True)
class WorkspaceGrant:
    grant_id: str
    purpose: str
    files: tuple[FileMatch, ...]
    mode: WorkspaceMode
    reason: str
    expires_at: str | None = None
    requires_human_approval: bool = False


@dataclass(frozen=True)
class WorkspacePatch:
    grant_id: str
    path: str
    operation: str  # create | update | delete
    content: bytes | None = None
    blob: str | None = None
    base: str | None = None
    mode: int | None = None
    size: int | None = None


class WorkspaceDenied(PermissionError):
    """A request the policy or the server refused; the message says why."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def _file_match(d: dict[str, Any]) -> FileMatch:
    return FileMatch(
        path=d["path"],
        file_type=FileType(d.get("file_type", "other")),
        score=float(d.get("score", 0.0)),
        summary=d.get("summary"),
        size_bytes=int(d.get("size_bytes", 0)),
    )


def _grant(d: dict[str, Any]) -> WorkspaceGrant:
    return WorkspaceGrant(
        grant_id=d["grant_id"],
        purpose=d.get("purpose", ""),
        files=tuple(_file_match(f) for f in d.get("files", [])),
        mode=WorkspaceMode(d["mode"]),
        reason=d.get("reason", ""),
        expires_at=d.get("expires_at"),
        requires_human_approval=bool(d.get("requires_human_approval", False)),
    )


class WopfsClient:
    """The seed's WorkspaceClient: search, request_access, open_view,
    list_grants, delegate; plus the approver's commit and reject."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        conn = _UnixConnection(self.socket_path)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        try:
            decoded = json.loads(payload) if payload else None
        except ValueError:
            decoded = {"error": payload.decode(errors="replace")}
        if resp.status >= 400:
            msg = decoded.get("error") if isinstance(decoded, dict) else str(decoded)
            raise WorkspaceDenied(f"{resp.status}: {msg}")
        return decoded

    def search(self, *, query: str, types: Sequence[FileType] = (), limit: int = 20) -> list[FileMatch]:
        hits = self._call("POST", "/v1/search",
                          {"query": query, "types": [t.value for t in types], "limit": limit})
        return [_file_match(h) for h in hits]

    def request_access(self, *, files: Sequence[FileMatch | str], mode: WorkspaceMode,
                       reason: str, purpose: str = "") -> WorkspaceGrant:
        paths = [f.path if isinstance(f, FileMatch) else f for f in files]
        g = self._call("POST", "/v1/request_access",
                       {"files": paths, "mode": mode.value, "reason": reason, "purpose": purpose})
        return _grant(g)

    def open_view(self, *, purpose: str, hints: Sequence[str] = (), file_types: Sequence[FileType] = (),
                  max_files: int = 10, mode: WorkspaceMode = WorkspaceMode.READ_ONLY,
                  reason: str | None = None) -> "WopfsView":
        body = {"purpose": purpose, "hints": list(hints), "file_types": [t.value for t in file_types],
                "max_files": max_files, "mode": mode.value}
        if reason is not None:
            body["reason"] = reason
        out = self._call("POST", "/v1/open_view", body)
        return WopfsView(_grant(out["grant"]), out["mount_path"], self)

    def list_grants(self) -> list[WorkspaceGrant]:
        return [_grant(g) for g in self._call("GET", "/v1/grants")]

    def delegate(self, *, grant_id: str, audience: str, allow_patterns: Sequence[str] = (),
                 deny_patterns: Sequence[str] = (), mode: WorkspaceMode = WorkspaceMode.READ_ONLY,
                 outputs_prefix: str | None = None, ttl_seconds: int = 300) -> str:
        """A signed, narrowed grant token a sub-agent can mount with
        `wopfs mount --token`."""
        out = self._call("POST", "/v1/delegate", {
            "grant_id": grant_id, "audience": audience, "allow_patterns": list(allow_patterns),
            "deny_patterns": list(deny_patterns), "mode": mode.value,
            "outputs_prefix": outputs_prefix, "ttl_seconds": ttl_seconds})
        return out["token"]

    def patches(self, grant_id: str) -> tuple[WorkspacePatch, ...]:
        import base64
        out = []
        for p in self._call("GET", f"/v1/grants/{grant_id}/patches"):
            content = base64.b64decode(p["content"]) if p.get("content") is not None else None
            out.append(WorkspacePatch(grant_id=p["grant_id"], path=p["path"], operation=p["operation"],
                                      content=content, blob=p.get("blob"), base=p.get("base"),
                                      mode=p.get("mode"), size=p.get("size")))
        return tuple(out)

    def commit(self, grant_id: str, *, paths: Sequence[str] = (), approver: str | None = None) -> dict:
        body: dict[str, Any] = {"paths": list(paths)}
        if approver:
            body["approver"] = approver
        return self._call("POST", f"/v1/grants/{grant_id}/commit", body)

    def reject(self, grant_id: str, *, reason: str) -> None:
        self._call("POST", f"/v1/grants/{grant_id}/reject", {"reason": reason})


class WopfsView:
    """The seed's WorkspaceView: reads and writes go through the mount."""

    def __init__(self, grant: WorkspaceGrant, mount_path: str, client: WopfsClient):
        self.grant = grant
        self.mount_path = mount_path
        self._client = client

    @property
    def files(self) -> tuple[FileMatch, ...]:
        return self.grant.files

    def _path(self, path: str) -> str:
        if path.startswith("/") or ".." in path.split("/"):
            raise WorkspaceDenied(f"path {path!r} is not a relative path in the view")
        return os.path.join(self.mount_path, path)

    def read(self, path: str) -> bytes:
        try:
            with open(self._path(path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise WorkspaceDenied(f"path {path!r} not in grant {self.grant.grant_id}") from None

    def write(self, path: str, content: bytes) -> WorkspacePatch:
        if self.grant.mode is WorkspaceMode.READ_ONLY:
            raise WorkspaceDenied(f"grant is read-only: {self.grant.grant_id}")
        full = self._path(path)
        existed = os.path.exists(full)
        try:
            with open(full, "wb") as f:
                f.write(content)
        except PermissionError as e:
            raise WorkspaceDenied(f"cannot write {path!r}: {e.strerror}") from None
        return WorkspacePatch(grant_id=self.grant.grant_id, path=path,
                              operation="update" if existed else "create", content=content)

    def delete(self, path: str) -> WorkspacePatch:
        if self.grant.mode is WorkspaceMode.READ_ONLY:
            raise WorkspaceDenied(f"grant is read-only: {self.grant.grant_id}")
        try:
            os.remove(self._path(path))
        except FileNotFoundError:
            raise WorkspaceDenied(f"path {path!r} not in grant {self.grant.grant_id}") from None
        return WorkspacePatch(grant_id=self.grant.grant_id, path=path, operation="delete")

    def patches(self) -> tuple[WorkspacePatch, ...]:
        return self._client.patches(self.grant.grant_id)
