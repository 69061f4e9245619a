"""The seed's WorkspaceClient and WorkspaceView, on top of `wopfs serve`.

Agents never receive a host path: they negotiate a *view* by intent and get
a mount of exactly the granted files. Reads and writes go through that
mount; writes land in wopfs's overlay and reach the host tree only when an
approver commits them.

    ctx.workspace = WopfsWorkspaceClient("/run/wopfs.sock")
    view = await ctx.workspace.open_view(
        purpose="Fix failing payment test",
        hints=["payment", "checkout"],
        file_types=["python"],
        max_files=10,
        mode=WorkspaceMode.READ_WRITE_OVERLAY,
    )
    for path in view.files:
        content = await view.read(path)

`WopfsWorkspaceClient` and `WopfsWorkspaceView` implement the seed's
`WorkspaceClient` and `WorkspaceView` (a2a_pack/workspace.py): the same
async methods, keyword arguments and return types. They subclass the seed's
classes and build the seed's pydantic models when those import: the seed's
own `a2a_pack.workspace` if it is installed, else `wopfs_seed` (a
transcription of it, beside this file) when pydantic 2 is importable.
Otherwise the models are frozen dataclasses with the seed's fields and the
interfaces are ABCs of the same shape. `MODELS` says which ("pydantic" or
"dataclasses"); `SEED` is the seed module in use, or None. Only the seed's
fields are ever passed to its models (they forbid extra fields): the API's
`phase`, `root`, `symlink`, `blob`... are left out.

What the seed leaves open, and what this client does:

* `view.read/write/delete` take a path or a `FileMatch` (the seed's own
  example passes the members of `view.files`, which are FileMatch).
* `write` answers "update" for a granted file and "create" otherwise; a
  view made by open_view holds exactly its files, so the mount refuses new
  names and such a write raises WorkspaceDenied, as in the seed.
* `delegate()` takes no grant id in the seed: it delegates from the most
  recent grant this client obtained (open_view or request_access), else
  from the caller's only open grant on the server; `grant_id=` (an
  addition) or `view.delegate(...)` choose one. `allow_patterns` are
  matched against the grant's files here (`*` and `?` stay within a path
  segment, `**` crosses them, `dir/` means `dir/**`) and sent as those
  exact files; the default ("**",) is the whole grant.
* Errors the API answers (4xx, 5xx) raise `WopfsApiError`, a
  WorkspaceDenied with `.status`; so do reads and writes the mount refuses.

Additions beyond the seed: `ttl_seconds=` on open_view and request_access,
the approver's `commit` and `reject`, `grant_patches(grant_id)` and
`grant_phases()`. `WopfsClient` / `WopfsView` are a synchronous wrapper
(each call runs the coroutine with asyncio.run; not for use inside a
running event loop).

Standard library only: HTTP/1.1 + JSON on the server's Unix domain socket
(asyncio.open_unix_connection), one connection per call; the server knows
the caller from the socket's peer credentials. File I/O on the mount runs
in worker threads (asyncio.to_thread).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import errno
import importlib
import json
import os
import re
import urllib.parse
from abc import ABC, abstractmethod
from datetime import datetime
from enum import Enum
from typing import Any, Sequence

__all__ = [
    "FileMatch",
    "FileType",
    "MODELS",
    "SEED",
    "WopfsApiError",
    "WopfsClient",
    "WopfsView",
    "WopfsWorkspaceClient",
    "WopfsWorkspaceView",
    "WorkspaceClient",
    "WorkspaceDenied",
    "WorkspaceGrant",
    "WorkspaceMode",
    "WorkspacePatch",
    "WorkspaceView",
]

_SEED_NAMES = (
    "WorkspaceMode",
    "FileType",
    "FileMatch",
    "WorkspaceGrant",
    "WorkspacePatch",
    "WorkspaceDenied",
    "WorkspaceView",
    "WorkspaceClient",
)


def _load_seed() -> Any:
    for name in ("a2a_pack.workspace", "wopfs_seed"):
        try:
            mod = importlib.import_module(name)
        except Exception:  # absent, or no (suitable) pydantic
            continue
        if all(hasattr(mod, n) for n in _SEED_NAMES):
            return mod
    return None


SEED = _load_seed()

if SEED is not None:
    MODELS = "pydantic"
    WorkspaceMode = SEED.WorkspaceMode
    FileType = SEED.FileType
    FileMatch = SEED.FileMatch
    WorkspaceGrant = SEED.WorkspaceGrant
    WorkspacePatch = SEED.WorkspacePatch
    WorkspaceDenied = SEED.WorkspaceDenied
    WorkspaceView = SEED.WorkspaceView
    WorkspaceClient = SEED.WorkspaceClient
else:
    MODELS = "dataclasses"

    class WorkspaceMode(str, Enum):  # type: ignore[no-redef]
        READ_ONLY = "read_only"
        READ_WRITE_OVERLAY = "read_write_overlay"
        READ_WRITE_DIRECT = "read_write_direct"

    class FileType(str, Enum):  # type: ignore[no-redef]
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

    @dataclasses.dataclass(frozen=True)
    class FileMatch:  # type: ignore[no-redef]
        path: str
        file_type: FileType
        score: float = 0.0
        summary: str | None = None
        size_bytes: int = 0

    @dataclasses.dataclass(frozen=True)
    class WorkspaceGrant:  # type: ignore[no-redef]
        grant_id: str
        purpose: str
        files: tuple[FileMatch, ...]
        mode: WorkspaceMode
        reason: str
        expires_at: datetime | None = None
        requires_human_approval: bool = False

    @dataclasses.dataclass(frozen=True)
    class WorkspacePatch:  # type: ignore[no-redef]
        grant_id: str
        path: str
        operation: str  # "create" | "update" | "delete"
        content: bytes | None = None

    class WorkspaceDenied(PermissionError):  # type: ignore[no-redef]
        """Raised when a workspace request violates the agent's policy."""

    class WorkspaceView(ABC):  # type: ignore[no-redef]
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

    class WorkspaceClient(ABC):  # type: ignore[no-redef]
        @abstractmethod
        async def search(self, *, query: str, types: Sequence[FileType] = (),
                         limit: int = 20) -> list[FileMatch]: ...

        @abstractmethod
        async def request_access(self, *, files: Sequence[FileMatch | str], mode: WorkspaceMode,
                                 reason: str, purpose: str = "") -> WorkspaceGrant: ...

        @abstractmethod
        async def open_view(self, *, purpose: str, hints: Sequence[str] = (),
                            file_types: Sequence[FileType] = (), max_files: int = 10,
                            mode: WorkspaceMode = WorkspaceMode.READ_ONLY,
                            reason: str | None = None) -> WorkspaceView: ...

        @abstractmethod
        async def list_grants(self) -> list[WorkspaceGrant]: ...

        async def delegate(self, *, audience: str, allow_patterns: Sequence[str] = ("**",),
                           deny_patterns: Sequence[str] = (),
                           mode: WorkspaceMode = WorkspaceMode.READ_ONLY,
                           outputs_prefix: str | None = None, ttl_seconds: int = 300) -> str:
            raise NotImplementedError("override delegate()")


class WopfsApiError(WorkspaceDenied):
    """An error answer of the API: `.status` (400, 403, 404, 409, 413, 422, 5xx)
    and `.message`; str() is "STATUS: MESSAGE"."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


# --- models -----------------------------------------------------------------


def _fields(cls: Any) -> set[str]:
    fields = getattr(cls, "model_fields", None)
    if fields is not None:
        return set(fields)
    return {f.name for f in dataclasses.fields(cls)}


_FIELDS: dict[Any, set[str]] = {}


def _make(cls: Any, **kw: Any) -> Any:
    """An instance of the seed's model `cls` from the fields it declares
    (never an extra one: the seed's models forbid them)."""
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = _fields(cls)
    return cls(**{k: v for k, v in kw.items() if k in known})


def _value(x: Any) -> str:
    return x.value if isinstance(x, Enum) else str(x)


def _datetime(s: Any) -> datetime | None:
    if s is None or isinstance(s, datetime):
        return s
    return datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith("Z") else s)


def _file_match(d: dict[str, Any]) -> Any:
    summary = d.get("summary") or None
    return _make(
        FileMatch,
        path=d["path"],
        file_type=FileType(d.get("file_type", "other")),
        score=float(d.get("score", 0.0)),
        summary=summary,
        size_bytes=int(d.get("size_bytes", 0)),
    )


def _grant(d: dict[str, Any]) -> Any:
    return _make(
        WorkspaceGrant,
        grant_id=d["grant_id"],
        purpose=d.get("purpose", ""),
        files=tuple(_file_match(f) for f in d.get("files", [])),
        mode=WorkspaceMode(d["mode"]),
        reason=d.get("reason") or "",
        expires_at=_datetime(d.get("expires_at")),
        requires_human_approval=bool(d.get("requires_human_approval", False)),
    )


def _patch(d: dict[str, Any], inline: dict[str, Any]) -> Any:
    # A hard link (`link`) carries no content of its own: its bytes are
    # those of the path it links to, which the seed's patch has no field for.
    content = inline.get(d["link"]) if d.get("link") else d.get("content")
    return _make(
        WorkspacePatch,
        grant_id=d["grant_id"],
        path=d["path"],
        operation=d["operation"],
        content=None if content is None else base64.b64decode(content),
    )


def _list(items: Any) -> list[Any]:
    """A sequence argument as a list; a lone string is one item, not its
    characters."""
    return [items] if isinstance(items, (str, bytes)) else list(items)


def _path_of(path: Any) -> str:
    """A path in the view: a string, or a FileMatch (anything with .path)."""
    p = path if isinstance(path, str) else getattr(path, "path", None)
    if not isinstance(p, str):
        raise TypeError(f"a path or a FileMatch, not {type(path).__name__}")
    while p.startswith("./"):
        p = p[2:]
    return p


# --- patterns ---------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """The server's glob semantics: `*` and `?` never cross `/`, `**` does,
    `[...]` and `{a,b}` as usual, backslash escapes; a leading `/` or `./`
    is the root and a trailing `/` means everything beneath."""
    p = pattern
    while p.startswith("./"):
        p = p[2:]
    p = p.lstrip("/")
    if p.endswith("/"):
        p += "**"
    out: list[str] = []
    i, depth = 0, 0
    while i < len(p):
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            out.append(re.escape(p[i + 1]))
            i += 2
            continue
        if c == "*":
            if p.startswith("**", i):
                start = i == 0 or p[i - 1] == "/"
                i += 2
                if start and p.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = p.find("]", i + 2 if p.startswith("[!", i) or p.startswith("[^", i) else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = p[i + 1:j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
                continue
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _exact_pattern(path: str) -> str:
    """The pattern that matches exactly `path` (as the server writes them)."""
    return "".join("\\" + c if c in "*?[]{}\\" else c for c in path)


# --- transport --------------------------------------------------------------


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readline()


async def _http(socket_path: str, method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode("ascii") + b"\r\n" + (body or b""))
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ConnectionError(f"not an HTTP answer from {socket_path}: {status_line!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            payload = await _read_chunked(reader)
        elif "content-length" in headers:
            payload = await reader.readexactly(int(headers["content-length"]))
        else:
            payload = await reader.read()
        return status, payload
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


# Mount errors that mean "not yours to touch", answered as WorkspaceDenied.
_DENIED = {
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
    errno.EDQUOT, errno.ENOSPC, errno.EFBIG, errno.EXDEV, errno.ENAMETOOLONG,
}


def _read_file(full: str) -> bytes:
    with open(full, "rb") as f:
        return f.read()


def _write_file(full: str, content: bytes) -> None:
    with open(full, "wb") as f:
        f.write(content)


# --- the seed's interfaces --------------------------------------------------


class WopfsWorkspaceView(WorkspaceView):
    """The seed's WorkspaceView on a view mounted by `wopfs serve`: reads
    and writes go through the mount at `mount_path`."""

    def __init__(self, grant: Any, mount_path: str, client: "WopfsWorkspaceClient"):
        self.grant = grant
        self.mount_path = mount_path
        self._client = client
        self._granted = {f.path for f in grant.files}

    def _full(self, path: Any) -> str:
        rel = _path_of(path)
        parts = rel.split("/")
        if not rel or rel.startswith("/") or ".." in parts or "" in parts:
            raise WorkspaceDenied(f"path {rel!r} is not a relative path in the view")
        return os.path.join(self.mount_path, rel)

    def _denied(self, path: Any, e: OSError, what: str) -> Exception:
        if e.errno not in _DENIED:
            return e
        rel = _path_of(path)
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return WorkspaceDenied(f"path {rel!r} not in grant {self.grant.grant_id}")
        return WorkspaceDenied(f"cannot {what} {rel!r} in grant {self.grant.grant_id}: {e.strerror}")

    def _writable(self) -> None:
        if _value(self.grant.mode) == "read_only":
            raise WorkspaceDenied(f"grant is read-only: {self.grant.grant_id}")

    async def read(self, path: str | FileMatch) -> bytes:
        full = self._full(path)
        try:
            return await asyncio.to_thread(_read_file, full)
        except OSError as e:
            raise self._denied(path, e, "read") from None

    async def write(self, path: str | FileMatch, content: bytes) -> WorkspacePatch:
        self._writable()
        full = self._full(path)
        data = bytes(content)
        try:
            await asyncio.to_thread(_write_file, full, data)
        except OSError as e:
            raise self._denied(path, e, "write") from None
        rel = _path_of(path)
        op = "update" if rel in self._granted else "create"
        return _make(WorkspacePatch, grant_id=self.grant.grant_id, path=rel, operation=op, content=data)

    async def delete(self, path: str | FileMatch) -> WorkspacePatch:
        self._writable()
        full = self._full(path)
        try:
            await asyncio.to_thread(os.unlink, full)
        except OSError as e:
            raise self._denied(path, e, "delete") from None
        return _make(WorkspacePatch, grant_id=self.grant.grant_id, path=_path_of(path),
                     operation="delete", content=None)

    async def patches(self) -> tuple[WorkspacePatch, ...]:
        return await self._client.grant_patches(self.grant.grant_id)

    async def delegate(self, *, audience: str, allow_patterns: Sequence[str] = ("**",),
                       deny_patterns: Sequence[str] = (),
                       mode: WorkspaceMode = WorkspaceMode.READ_ONLY,
                       outputs_prefix: str | None = None, ttl_seconds: int = 300) -> str:
        """`WorkspaceClient.delegate` from this view's grant (an addition)."""
        return await self._client.delegate(
            audience=audience, allow_patterns=allow_patterns, deny_patterns=deny_patterns,
            mode=mode, outputs_prefix=outputs_prefix, ttl_seconds=ttl_seconds,
            grant_id=self.grant.grant_id)


class WopfsWorkspaceClient(WorkspaceClient):
    """The seed's WorkspaceClient on `wopfs serve`'s control API."""

    def __init__(self, socket_path: str | os.PathLike[str], *, timeout: float | None = 300.0):
        self.socket_path = os.fspath(socket_path)
        self.timeout = timeout
        self._mine: list[str] = []  # grant ids this client obtained, oldest first

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        status, payload = await asyncio.wait_for(
            _http(self.socket_path, method, path, data), self.timeout)
        try:
            decoded = json.loads(payload) if payload else None
        except ValueError:
            decoded = {"error": payload.decode(errors="replace")}
        if status >= 400:
            msg = decoded.get("error") if isinstance(decoded, dict) else str(decoded)
            raise WopfsApiError(status, str(msg))
        return decoded

    def _obtained(self, grant_id: str) -> None:
        if grant_id in self._mine:
            self._mine.remove(grant_id)
        self._mine.append(grant_id)

    async def search(self, *, query: str, types: Sequence[FileType] = (),
                     limit: int = 20) -> list[FileMatch]:
        hits = await self._call("POST", "/v1/search", {
            "query": query, "types": [_value(t) for t in _list(types)], "limit": limit})
        return [_file_match(h) for h in hits]

    async def request_access(self, *, files: Sequence[FileMatch | str], mode: WorkspaceMode,
                             reason: str, purpose: str = "",
                             ttl_seconds: int | None = None) -> WorkspaceGrant:
        body: dict[str, Any] = {"files": [_path_of(f) for f in _list(files)], "mode": _value(mode),
                                "reason": reason, "purpose": purpose}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        grant = _grant(await self._call("POST", "/v1/request_access", body))
        self._obtained(grant.grant_id)
        return grant

    async def open_view(self, *, purpose: str, hints: Sequence[str] = (),
                        file_types: Sequence[FileType] = (), max_files: int = 10,
                        mode: WorkspaceMode = WorkspaceMode.READ_ONLY, reason: str | None = None,
                        ttl_seconds: int | None = None,
                        engine: str | None = None) -> WopfsWorkspaceView:
        """`engine`: for a read_write_overlay view, "kernel", "fuse" or
        "auto" (the server's default: kernel where it can run)."""
        body: dict[str, Any] = {"purpose": purpose, "hints": _list(hints),
                                "file_types": [_value(t) for t in _list(file_types)],
                                "max_files": max_files, "mode": _value(mode)}
        if engine is not None:
            body["engine"] = engine
        if reason is not None:
            body["reason"] = reason
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        out = await self._call("POST", "/v1/open_view", body)
        grant = _grant(out["grant"])
        self._obtained(grant.grant_id)
        return WopfsWorkspaceView(grant, out["mount_path"], self)

    async def list_grants(self) -> list[WorkspaceGrant]:
        return [_grant(g) for g in await self._call("GET", "/v1/grants")]

    async def grant_phases(self) -> dict[str, str]:
        """The caller's grants and their phase: open, pending, committed or
        rejected (an addition: the seed's WorkspaceGrant has no phase)."""
        return {g["grant_id"]: g.get("phase", "") for g in await self._call("GET", "/v1/grants")}

    async def delegate(self, *, audience: str, allow_patterns: Sequence[str] = ("**",),
                       deny_patterns: Sequence[str] = (),
                       mode: WorkspaceMode = WorkspaceMode.READ_ONLY,
                       outputs_prefix: str | None = None, ttl_seconds: int = 300,
                       grant_id: str | None = None) -> str:
        """A signed token for a sub-agent (`wopfs mount --token`), narrowed
        from a grant of this caller: `grant_id`, else the most recent grant
        this client obtained, else the caller's only open grant."""
        allow_patterns = _list(allow_patterns)
        deny_patterns = _list(deny_patterns)
        grants = {g["grant_id"]: g for g in await self._call("GET", "/v1/grants")}
        gid = grant_id
        if gid is None:
            gid = next((g for g in reversed(self._mine) if g in grants), None)
        if gid is None:
            live = [g for g, v in grants.items() if v.get("phase") in ("open", "pending")]
            if len(live) != 1:
                raise WorkspaceDenied(
                    f"delegate: this client obtained no grant and the caller has {len(live)} "
                    "open grants; open a view first or pass grant_id=")
            gid = live[0]
        if gid not in grants:
            raise WopfsApiError(404, f"unknown grant {gid}")
        files = [f["path"] for f in grants[gid].get("files", [])]
        allow: list[str] = []
        if "**" not in allow_patterns:
            for pattern in allow_patterns:
                rx = _glob_regex(pattern)
                hits = [f for f in files if rx.fullmatch(f)]
                if not hits:
                    raise WorkspaceDenied(f"allow pattern {pattern!r} matches no file of grant {gid}")
                allow += [_exact_pattern(f) for f in hits if _exact_pattern(f) not in allow]
        out = await self._call("POST", "/v1/delegate", {
            "grant_id": gid, "audience": audience, "allow_patterns": allow,
            "deny_patterns": deny_patterns, "mode": _value(mode),
            "outputs_prefix": outputs_prefix, "ttl_seconds": ttl_seconds})
        return out["token"]

    async def grant_patches(self, grant_id: str) -> tuple[WorkspacePatch, ...]:
        """The grant's patches against the host (contents inline)."""
        gid = urllib.parse.quote(grant_id, safe="")
        raw = await self._call("GET", f"/v1/grants/{gid}/patches")
        inline = {p["path"]: p.get("content") for p in raw}
        return tuple(_patch(p, inline) for p in raw)

    async def commit(
        self,
        grant_id: str,
        *,
        paths: Sequence[str] = (),
        approver: str | None = None,
        git_branch: str | None = None,
        message: str | None = None,
        author: str | None = None,
    ) -> Any:
        """Applies the grant's patches to the host (approvers only); with
        git_branch, commits the whole set onto that branch of the host's git
        repository instead (message, author: of that commit)."""
        body: dict[str, Any] = {"paths": _list(paths)}
        if approver:
            body["approver"] = approver
        if git_branch:
            body["git_branch"] = git_branch
        if message is not None:
            body["message"] = message
        if author is not None:
            body["author"] = author
        gid = urllib.parse.quote(grant_id, safe="")
        return await self._call("POST", f"/v1/grants/{gid}/commit", body)

    async def reject(self, grant_id: str, *, reason: str) -> None:
        """Discards the grant's patches (approvers only)."""
        gid = urllib.parse.quote(grant_id, safe="")
        await self._call("POST", f"/v1/grants/{gid}/reject", {"reason": reason})

    async def revoke(self, grant_id: str, *, reason: str | None = None) -> Any:
        """Ends the grant now: its live view shows nothing within a second,
        no new mount; its changes stay for review (its owner or approvers)."""
        body: dict[str, Any] = {}
        if reason:
            body["reason"] = reason
        gid = urllib.parse.quote(grant_id, safe="")
        return await self._call("POST", f"/v1/grants/{gid}/revoke", body)

    async def denied(self, grant_id: str) -> dict[str, Any]:
        """The grant's denied-access log: what the agent tried that the grant
        refused. A dict: grant_id, cap, attempts, dropped, entries (each: path,
        op, errno, error, detail, reason, count, first, last, pid, comm)."""
        gid = urllib.parse.quote(grant_id, safe="")
        return await self._call("GET", f"/v1/grants/{gid}/denied")

    async def checkpoint(self, grant_id: str, *, label: str | None = None) -> dict[str, Any]:
        """Records the view's current state (before an agent's turn). A dict:
        id ("c1", ...), label, created_at, changed (layer entries changed
        since the previous checkpoint), entries, bytes_copied, live, ms."""
        body: dict[str, Any] = {}
        if label is not None:
            body["label"] = label
        gid = urllib.parse.quote(grant_id, safe="")
        return await self._call("POST", f"/v1/grants/{gid}/checkpoint", body)

    async def checkpoints(self, grant_id: str) -> list[dict[str, Any]]:
        """The view's checkpoints, oldest first (dicts as checkpoint() returns)."""
        gid = urllib.parse.quote(grant_id, safe="")
        return await self._call("GET", f"/v1/grants/{gid}/checkpoints")

    async def undo(self, grant_id: str, *, to: str) -> dict[str, Any]:
        """Puts the view back to checkpoint `to`; a mounted view shows it at
        once. A dict: to, kept, restored, removed, bytes_copied, live, ms.
        On the kernel engine it is refused (409) while a process has its cwd
        or an open directory inside the view."""
        gid = urllib.parse.quote(grant_id, safe="")
        return await self._call("POST", f"/v1/grants/{gid}/undo", {"to": to})


# --- the synchronous wrapper ------------------------------------------------


class WopfsView:
    """WopfsWorkspaceView, synchronously."""

    def __init__(self, view: WopfsWorkspaceView):
        self.aio = view

    @property
    def grant(self) -> Any:
        return self.aio.grant

    @property
    def mount_path(self) -> str:
        return self.aio.mount_path

    @property
    def files(self) -> tuple[Any, ...]:
        return self.aio.files

    def read(self, path: Any) -> bytes:
        return asyncio.run(self.aio.read(path))

    def write(self, path: Any, content: bytes) -> Any:
        return asyncio.run(self.aio.write(path, content))

    def delete(self, path: Any) -> Any:
        return asyncio.run(self.aio.delete(path))

    def patches(self) -> tuple[Any, ...]:
        return asyncio.run(self.aio.patches())

    def delegate(self, **kw: Any) -> str:
        return asyncio.run(self.aio.delegate(**kw))


class WopfsClient:
    """WopfsWorkspaceClient, synchronously: the same keyword arguments;
    `patches(grant_id)` is grant_patches."""

    def __init__(self, socket_path: str | os.PathLike[str], *, timeout: float | None = 300.0):
        self.aio = WopfsWorkspaceClient(socket_path, timeout=timeout)

    @property
    def socket_path(self) -> str:
        return self.aio.socket_path

    def search(self, **kw: Any) -> list[Any]:
        return asyncio.run(self.aio.search(**kw))

    def request_access(self, **kw: Any) -> Any:
        return asyncio.run(self.aio.request_access(**kw))

    def open_view(self, **kw: Any) -> WopfsView:
        return WopfsView(asyncio.run(self.aio.open_view(**kw)))

    def list_grants(self) -> list[Any]:
        return asyncio.run(self.aio.list_grants())

    def grant_phases(self) -> dict[str, str]:
        return asyncio.run(self.aio.grant_phases())

    def delegate(self, **kw: Any) -> str:
        return asyncio.run(self.aio.delegate(**kw))

    def patches(self, grant_id: str) -> tuple[Any, ...]:
        return asyncio.run(self.aio.grant_patches(grant_id))

    def commit(self, grant_id: str, **kw: Any) -> Any:
        return asyncio.run(self.aio.commit(grant_id, **kw))

    def reject(self, grant_id: str, **kw: Any) -> None:
        asyncio.run(self.aio.reject(grant_id, **kw))

    def revoke(self, grant_id: str, **kw: Any) -> Any:
        return asyncio.run(self.aio.revoke(grant_id, **kw))

    def denied(self, grant_id: str) -> dict[str, Any]:
        return asyncio.run(self.aio.denied(grant_id))

    def checkpoint(self, grant_id: str, **kw: Any) -> dict[str, Any]:
        return asyncio.run(self.aio.checkpoint(grant_id, **kw))

    def checkpoints(self, grant_id: str) -> list[dict[str, Any]]:
        return asyncio.run(self.aio.checkpoints(grant_id))

    def undo(self, grant_id: str, **kw: Any) -> dict[str, Any]:
        return asyncio.run(self.aio.undo(grant_id, **kw))
