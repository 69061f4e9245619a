"""An agent using the seed's interface against a live `wopfs serve`.

    python3 agent_example.py SOCKET

It negotiates a view by intent, reads and fixes a file through the mount,
delegates a read-only token for part of the view to a sub-agent, and
prints a JSON report (the grant, the token, the patches). It uses
`WopfsClient`, the synchronous wrapper; an async agent written against the
seed's interface uses `WopfsWorkspaceClient` (see wopfs_client.py and
tests/python_seed_client.rs, which runs the seed's own example).
"""

import json
import sys

from wopfs_client import FileType, WopfsClient, WorkspaceDenied, WorkspaceMode


def main(sock: str) -> None:
    client = WopfsClient(sock)
    hits = client.search(query="discount rounding", types=[FileType.PYTHON])
    view = client.open_view(purpose="Fix the discount rounding bug", hints=["discount"],
                            file_types=[FileType.PYTHON], max_files=3,
                            mode=WorkspaceMode.READ_WRITE_OVERLAY, reason="failing test")
    paths = [f.path for f in view.files]
    pay = next(p for p in paths if p.endswith("pay.py"))
    src = view.read(pay).decode()
    fixed = src.replace("return int(amount * 100) / 100", "return round(amount, 2)")
    view.write(pay, fixed.encode())
    try:
        view.read(".env")
        secret = "READ"
    except WorkspaceDenied:
        secret = "denied"
    token = client.delegate(grant_id=view.grant.grant_id, audience="reviewer-agent",
                            allow_patterns=[pay], mode=WorkspaceMode.READ_ONLY, ttl_seconds=120)
    try:
        client.commit(view.grant.grant_id)
        self_commit = "ALLOWED"
    except WorkspaceDenied as e:
        self_commit = str(e)
    print(json.dumps({
        "search": [h.path for h in hits],
        "grant_id": view.grant.grant_id,
        "mount_path": view.mount_path,
        "files": paths,
        "secret": secret,
        "token": token,
        "patches": [(p.path, p.operation) for p in view.patches()],
        "grants": [g.grant_id for g in client.list_grants()],
        "self_commit": self_commit,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
