//! The seed's own usage example, unchanged, against a live `wopfs serve`:
//! `examples/python/wopfs_client.py`'s async `WopfsWorkspaceClient` is the
//! `ctx.workspace` of a Python agent run as an unprivileged uid. The agent
//! negotiates a view by intent exactly as the seed's docstring does, reads
//! every file of `view.files`, then uses the rest of the seed's interface
//! (write, delete, patches, search, request_access, list_grants, delegate)
//! and checks what it gets back is the seed's types. It runs twice: with
//! the seed's pydantic models (`wopfs_seed.py`, pydantic 2 importable) and
//! with the client's dataclass fallback (pydantic hidden). An approver then
//! commits the agent's patches over the API.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

/// The agent's uid: not root, not an approver.
const AGENT_UID: &str = "1000";

/// The seed's usage example (a2a_pack/workspace.py's docstring), verbatim.
/// `wopfs_seed.py` must carry the same text, and the agent runs this text.
const SEED_EXAMPLE: &str = r#"view = await ctx.workspace.open_view(
    purpose="Fix failing payment test",
    hints=["payment", "checkout"],
    file_types=["python"],
    max_files=10,
    mode=WorkspaceMode.READ_WRITE_OVERLAY,
)

for path in view.files:
    content = await view.read(path)
"#;

/// The agent. `{EXAMPLE}` becomes SEED_EXAMPLE, indented into `agent`.
const AGENT: &str = r#"
import asyncio
import dataclasses
import inspect
import json
import sys
import types
from datetime import datetime

import wopfs_client
from wopfs_client import WopfsApiError, WopfsWorkspaceClient, WopfsWorkspaceView

# Code written against the seed imports the seed's classes; without
# pydantic, the client's equivalents stand in.
try:
    from wopfs_seed import (FileMatch, FileType, WorkspaceClient, WorkspaceDenied,
                            WorkspaceGrant, WorkspaceMode, WorkspacePatch, WorkspaceView)
    SEED_IMPORTED = True
except ImportError:
    from wopfs_client import (FileMatch, FileType, WorkspaceClient, WorkspaceDenied,
                              WorkspaceGrant, WorkspaceMode, WorkspacePatch, WorkspaceView)
    SEED_IMPORTED = False

PAY = "src/payments/pay.py"


def signature_mismatches():
    """Every seed method is an async method of ours with the same
    parameters and defaults; ours may add keyword-only ones with defaults."""
    out = []
    for base, ours, names in [
        (WorkspaceClient, WopfsWorkspaceClient,
         ["search", "request_access", "open_view", "list_grants", "delegate"]),
        (WorkspaceView, WopfsWorkspaceView, ["read", "write", "delete", "patches"]),
    ]:
        for name in names:
            mine = getattr(ours, name)
            if not inspect.iscoroutinefunction(mine):
                out.append(f"{name} is not async")
            want = inspect.signature(getattr(base, name)).parameters
            have = inspect.signature(mine).parameters
            for p in want.values():
                q = have.get(p.name)
                if q is None or q.kind != p.kind or q.default != p.default:
                    out.append(f"{name}({p}) is {q}")
            for q in have.values():
                if q.name not in want and (q.kind != q.KEYWORD_ONLY or q.default is q.empty):
                    out.append(f"{name} adds a required {q}")
    return out


def fields(model):
    if wopfs_client.MODELS == "pydantic":
        return sorted(type(model).model_fields)
    return sorted(f.name for f in dataclasses.fields(model))


async def denied(coro):
    try:
        await coro
        return "ALLOWED"
    except WorkspaceDenied:
        return "denied"


async def agent(ctx):
    r = {}
    # The seed's usage example, unchanged:
{EXAMPLE}
    # What the example left in its variables.
    r["example_last_path"] = path.path
    r["example_last_content"] = content.decode()
    r["models"] = wopfs_client.MODELS
    r["seed_imported"] = SEED_IMPORTED
    r["model_module"] = type(view.grant).__module__
    r["is_seed_client"] = isinstance(ctx.workspace, WorkspaceClient)
    r["is_seed_view"] = isinstance(view, WorkspaceView)
    r["signature_mismatches"] = signature_mismatches()
    g = view.grant
    gid = g.grant_id
    r["grant_id"] = gid
    r["mount_path"] = view.mount_path
    r["files"] = [f.path for f in view.files]
    r["types_ok"] = (
        type(g) is WorkspaceGrant
        and g.mode is WorkspaceMode.READ_WRITE_OVERLAY
        and (g.expires_at is None or isinstance(g.expires_at, datetime))
        and all(type(f) is FileMatch and type(f.file_type) is FileType for f in view.files)
        and all(f.file_type is FileType.PYTHON for f in view.files)
        and view.files == g.files
    )
    r["grant_fields"] = fields(g)
    r["file_fields"] = fields(g.files[0])
    try:
        setattr(g, "purpose", "changed")
        r["frozen"] = False
    except Exception:
        r["frozen"] = True
    if wopfs_client.MODELS == "pydantic":
        import pydantic
        r["roundtrip"] = WorkspaceGrant.model_validate(g.model_dump()) == g
        try:
            WorkspaceGrant(**g.model_dump(), phase="open")
            r["extra_forbidden"] = False
        except pydantic.ValidationError:
            r["extra_forbidden"] = True

    # Reads, concurrently, by path and by FileMatch.
    paths = [f.path for f in view.files]
    datas = await asyncio.gather(*(view.read(p) for p in paths))
    r["contents"] = {p: d.decode() for p, d in zip(paths, datas)}
    r["read_by_match"] = await view.read(view.files[0]) == datas[0]

    # A fix, and a deletion by FileMatch.
    fixed = r["contents"][PAY].replace("int(amount * 100) / 100", "round(amount, 2)").encode()
    p = await view.write(PAY, fixed)
    r["write"] = [type(p) is WorkspacePatch, p.grant_id == gid, p.path, p.operation, p.content == fixed]
    legacy = next(f for f in view.files if f.path.endswith("legacy_payment.py"))
    d = await view.delete(legacy)
    r["delete"] = [type(d) is WorkspacePatch, d.grant_id == gid, d.path, d.operation, d.content]
    r["after_write"] = (await view.read(PAY)) == fixed

    # What the view does not hold.
    r["denied"] = {
        "read_denied_file": await denied(view.read("src/payments/secrets_payment.py")),
        "read_ungranted": await denied(view.read("src/unrelated.py")),
        "read_deleted": await denied(view.read(legacy)),
        "read_dotdot": await denied(view.read("../host/src/payments/pay.py")),
        "read_absolute": await denied(view.read("/etc/hostname")),
        "write_new_name": await denied(view.write("src/payments/new.py", b"x = 1\n")),
    }

    ps = await view.patches()
    r["patches_types_ok"] = type(ps) is tuple and all(type(x) is WorkspacePatch for x in ps)
    r["patches"] = sorted(
        [x.grant_id == gid, x.path, x.operation, None if x.content is None else x.content.decode()]
        for x in ps)

    hits = await ctx.workspace.search(query="checkout", types=[FileType.PYTHON], limit=5)
    r["search_types_ok"] = type(hits) is list and all(type(h) is FileMatch for h in hits)
    r["search"] = [[h.path, h.file_type.value, h.score, h.summary] for h in hits]

    # Calls run concurrently, each on its own connection.
    found, listed, again = await asyncio.gather(
        ctx.workspace.search(query="payment"), ctx.workspace.list_grants(), view.read(PAY))
    r["concurrent"] = [len(found) > 0, gid in [x.grant_id for x in listed], again == fixed]

    # delegate() as the seed calls it: no grant id; from this view's grant.
    r["token_part"] = await ctx.workspace.delegate(
        audience="reviewer-agent", allow_patterns=["src/payments/*.py"], ttl_seconds=120)
    r["token_all"] = await ctx.workspace.delegate(audience="helper-agent")
    r["delegate_unmatched"] = await denied(
        ctx.workspace.delegate(audience="x", allow_patterns=["docs/**"]))

    # A read-only view refuses writes before they reach the mount.
    ro = await ctx.workspace.open_view(purpose="checkout", file_types=[FileType.PYTHON], max_files=1)
    r["ro_grant_id"] = ro.grant.grant_id
    r["ro_mode"] = ro.grant.mode.value
    r["ro_files"] = [f.path for f in ro.files]
    r["ro_write"] = await denied(ro.write(ro.files[0], b"x"))

    # A grant by explicit files (a FileMatch and a path), without a view.
    acc = await ctx.workspace.request_access(
        files=[hits[0], "docs/payment.md"], mode=WorkspaceMode.READ_ONLY,
        reason="review the checkout", purpose="Review")
    r["access"] = [type(acc) is WorkspaceGrant, acc.grant_id, acc.mode.value, acc.purpose,
                   acc.reason, sorted(f.path for f in acc.files)]
    r["access_denied_file"] = await denied(ctx.workspace.request_access(
        files=["src/payments/secrets_payment.py"], mode=WorkspaceMode.READ_ONLY, reason="r"))
    # Now the latest grant: delegate() follows it.
    r["token_docs"] = await ctx.workspace.delegate(audience="docs-agent", allow_patterns=["docs/"])

    grants = await ctx.workspace.list_grants()
    r["grants_types_ok"] = all(type(x) is WorkspaceGrant for x in grants)
    r["grants"] = sorted(x.grant_id for x in grants)
    r["phases"] = await ctx.workspace.grant_phases()

    try:
        await ctx.workspace.commit(gid)
        r["self_commit"] = "ALLOWED"
    except WopfsApiError as e:
        r["self_commit"] = [e.status, isinstance(e, WorkspaceDenied)]
    return r


def main(sock):
    ctx = types.SimpleNamespace(workspace=WopfsWorkspaceClient(sock))
    print(json.dumps(asyncio.run(agent(ctx))))


if __name__ == "__main__":
    main(sys.argv[1])
"#;

/// Copies pydantic 2 and what it requires (from the interpreter on PATH)
/// into a directory the agent's interpreter can import from: the agent
/// runs as another user, who cannot reach a per-user installation.
const STAGE_PYDANTIC: &str = r#"
import importlib.metadata as md, os, re, shutil, sys
dest, want = sys.argv[1], sys.argv[2]
have = "%d.%d" % sys.version_info[:2]
if have != want:
    sys.exit(f"python {have} here, {want} for the agent")
import pydantic
if int(pydantic.VERSION.split(".")[0]) < 2:
    sys.exit(f"pydantic {pydantic.VERSION}")
todo, seen = ["pydantic"], set()
while todo:
    name = todo.pop()
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        continue
    seen.add(key)
    dist = md.distribution(name)
    for req in dist.requires or []:
        if "extra ==" not in req:
            todo.append(re.match(r"[A-Za-z0-9._-]+", req).group(0))
    for f in dist.files or []:
        if f.parts[0] == ".." or "__pycache__" in f.parts:
            continue
        src = str(dist.locate_file(f))
        if os.path.isfile(src):
            out = os.path.join(dest, *f.parts)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copyfile(src, out)
            os.chmod(out, 0o644)
print(pydantic.VERSION, " ".join(sorted(seen)))
"#;

/// The API's policy: reasons required, `.env` and `secrets_*.py` denied,
/// root approves.
const POLICY: &str = "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000000\n\
     allowed_modes = [\"read_only\", \"read_write_overlay\"]\nrequire_reason = true\n\
     deny_patterns = [\"**/.env\", \"**/secrets_*.py\"]\napprover_uids = [0]\n";

/// Where the server mounts the views it opens (`--views`).
fn views(env: &Env) -> PathBuf {
    env.dir.path().canonicalize().unwrap().join("views")
}

fn start_server(env: &Env) -> Server {
    let views = views(env);
    // Widened on purpose: the agent runs as another uid.
    Server::start(
        env,
        "wopfs.sock",
        POLICY,
        &["--socket-mode", "0666", "--views", views.to_str().unwrap()],
    )
}

/// One raw HTTP request as root (an approver); returns (status, JSON).
fn http_json(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = http(socket, method, path, body.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

const PAY: &str =
    "def charge(amount):\n    # payment rounding bug\n    return int(amount * 100) / 100\n";

fn project(env: &Env) {
    env.write("src/payments/pay.py", PAY);
    env.write(
        "src/payments/checkout.py",
        "from .pay import charge\n\n\ndef checkout(cart):\n    return charge(sum(cart))\n",
    );
    env.write(
        "src/payments/legacy_payment.py",
        "# the old payment flow, unused\n",
    );
    env.write(
        "src/payments/secrets_payment.py",
        "PAYMENT_KEY = 'secret'  # checkout\n",
    );
    env.write(
        "tests/test_payment.py",
        "from src.payments.pay import charge\n\n\ndef test_payment_rounds():\n    assert charge(10.005) == 10.01\n",
    );
    env.write("docs/payment.md", "payment and checkout notes\n");
    env.write("src/payments/.env", "PAYMENT_TOKEN=1\n");
    env.write("src/unrelated.py", "print('hello')\n");
    // Readable by the agent's uid: the server grants a caller only what
    // its own host permissions let it read (tests/serve_security.rs).
    fs::set_permissions(&env.host, fs::Permissions::from_mode(0o755)).unwrap();
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{by}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The client, the seed's models and the agent, readable by the agent.
fn python_dir(env: &Env) -> PathBuf {
    let d = env.dir.path().join("py");
    fs::create_dir_all(&d).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    let seed = fs::read_to_string(examples.join("wopfs_seed.py")).unwrap();
    assert!(
        seed.contains(&indent(SEED_EXAMPLE, "    ")),
        "wopfs_seed.py's docstring is not the seed's example"
    );
    fs::copy(examples.join("wopfs_client.py"), d.join("wopfs_client.py")).unwrap();
    fs::write(d.join("wopfs_seed.py"), &seed).unwrap();
    let agent = AGENT.replace("{EXAMPLE}", &indent(SEED_EXAMPLE, "    "));
    fs::write(d.join("seed_agent.py"), agent).unwrap();
    for p in [env.dir.path(), d.as_path()] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["wopfs_client.py", "wopfs_seed.py", "seed_agent.py"] {
        fs::set_permissions(d.join(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
    d
}

/// A directory whose packages shadow the named ones with an ImportError.
fn hide(env: &Env, name: &str, packages: &[&str]) -> PathBuf {
    let d = env.dir.path().join(name);
    for p in packages {
        fs::create_dir_all(d.join(p)).unwrap();
        fs::write(
            d.join(p).join("__init__.py"),
            format!("raise ImportError('{p} is hidden by the test')\n"),
        )
        .unwrap();
    }
    d
}

fn as_agent(pythonpath: &[&Path], args: &[&str]) -> Output {
    let pp = std::env::join_paths(pythonpath).unwrap();
    Command::new("setpriv")
        .args([
            "--reuid",
            AGENT_UID,
            "--regid",
            AGENT_UID,
            "--clear-groups",
            python(),
        ])
        .args(args)
        .env("PYTHONPATH", pp)
        .env_remove("PYTHONHOME")
        .output()
        .unwrap()
}

/// Where the agent's interpreter finds pydantic 2: Some(None) when it has
/// it already, Some(dir) when staged from the interpreter on PATH, None
/// when neither has it.
fn pydantic_for_agent(env: &Env, hidden: &Path) -> Option<Option<PathBuf>> {
    let check = "import pydantic, sys; sys.exit(int(pydantic.VERSION.split('.')[0]) < 2)";
    if as_agent(&[hidden], &["-c", check]).status.success() {
        return Some(None);
    }
    let v = as_agent(
        &[hidden],
        &["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    );
    let version = String::from_utf8_lossy(&v.stdout).trim().to_string();
    let dest = env.dir.path().join("site");
    let out = Command::new("python3")
        .args(["-c", STAGE_PYDANTIC])
        .arg(&dest)
        .arg(&version)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "no pydantic 2 to stage for the agent: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
        return None;
    }
    eprintln!(
        "staged for the agent: pydantic {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        as_agent(&[hidden, &dest], &["-c", check]).status.success(),
        "the staged pydantic does not import for the agent"
    );
    Some(Some(dest))
}

fn verify(token: &str, audience: &str) -> Value {
    let v = wopfs_command()
        .args(["token", "verify", token, "--audience", audience, "--json"])
        .env("A2A_GRANT_SIGNING_KEY", KEY_B64)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    serde_json::from_slice(&v.stdout).unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Runs the agent with `pythonpath` and checks everything it reports,
/// the patches on the server and the approver's commit.
fn run_the_seed_example(env: &Env, server: &Server, py: &Path, pythonpath: &[&Path], models: &str) {
    let agent = py.join("seed_agent.py");
    let out = as_agent(
        pythonpath,
        &[agent.to_str().unwrap(), server.socket.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The models and interfaces are the seed's.
    assert_eq!(r["models"], models, "{r}");
    let pydantic = models == "pydantic";
    assert_eq!(r["seed_imported"], pydantic);
    assert_eq!(
        r["model_module"],
        if pydantic {
            "wopfs_seed"
        } else {
            "wopfs_client"
        }
    );
    assert_eq!(r["is_seed_client"], true);
    assert_eq!(r["is_seed_view"], true);
    assert_eq!(r["signature_mismatches"], json!([]), "{r}");
    assert_eq!(r["types_ok"], true, "{r}");
    assert_eq!(r["frozen"], true);
    assert_eq!(
        strs(&r["grant_fields"]),
        [
            "expires_at",
            "files",
            "grant_id",
            "mode",
            "purpose",
            "reason",
            "requires_human_approval"
        ]
    );
    assert_eq!(
        strs(&r["file_fields"]),
        ["file_type", "path", "score", "size_bytes", "summary"]
    );
    if pydantic {
        assert_eq!(r["roundtrip"], true);
        assert_eq!(r["extra_forbidden"], true);
    }

    // The example: a view of the matching Python files, each read whole.
    let mut files = strs(&r["files"]);
    files.sort();
    assert_eq!(
        files,
        [
            "src/payments/checkout.py",
            "src/payments/legacy_payment.py",
            "src/payments/pay.py",
            "tests/test_payment.py"
        ],
        "{r}"
    );
    let last = r["example_last_path"].as_str().unwrap();
    assert_eq!(
        r["example_last_content"].as_str().unwrap(),
        fs::read_to_string(env.host.join(last)).unwrap()
    );
    for f in &files {
        assert_eq!(
            r["contents"][f].as_str().unwrap(),
            fs::read_to_string(env.host.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(r["read_by_match"], true);
    let g = r["grant_id"].as_str().unwrap().to_string();
    assert!(
        r["mount_path"]
            .as_str()
            .unwrap()
            .starts_with(views(env).to_str().unwrap()),
        "{r}"
    );

    // Writes are the seed's patches; the view refuses what it does not hold.
    let fixed = PAY.replace("int(amount * 100) / 100", "round(amount, 2)");
    assert_eq!(
        r["write"],
        json!([true, true, "src/payments/pay.py", "update", true])
    );
    assert_eq!(
        r["delete"],
        json!([true, true, "src/payments/legacy_payment.py", "delete", null])
    );
    assert_eq!(r["after_write"], true);
    for (what, v) in r["denied"].as_object().unwrap() {
        assert_eq!(v, "denied", "{what}: {r}");
    }
    assert_eq!(r["patches_types_ok"], true);
    let want_patches = json!([
        [true, "src/payments/legacy_payment.py", "delete", null],
        [true, "src/payments/pay.py", "update", fixed],
    ]);
    assert_eq!(r["patches"], want_patches, "{r}");
    // The same patches as the API gives the approver.
    let (status, api) = http_json(
        &server.socket,
        "GET",
        &format!("/v1/grants/{g}/patches"),
        "",
    );
    assert_eq!(status, 200, "{api}");
    let mut api_patches: Vec<(String, String)> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    api_patches.sort();
    assert_eq!(
        api_patches,
        [
            ("src/payments/legacy_payment.py".into(), "delete".into()),
            ("src/payments/pay.py".into(), "update".into())
        ]
    );

    // search: the seed's FileMatch rows, scored and summarized.
    assert_eq!(r["search_types_ok"], true);
    let hits = r["search"].as_array().unwrap();
    assert_eq!(hits[0][0], "src/payments/checkout.py", "{r}");
    assert!(hits.iter().all(|h| h[1] == "python"
        && h[2].as_f64().unwrap() > 0.0
        && h[3].as_str().is_some_and(|s| !s.is_empty())));
    assert!(!hits
        .iter()
        .any(|h| h[0] == "src/payments/secrets_payment.py"));
    assert_eq!(r["concurrent"], json!([true, true, true]));

    // delegate() without a grant id: from the view's grant, narrowed.
    let part = verify(r["token_part"].as_str().unwrap(), "reviewer-agent");
    assert_eq!(part["parent_grant_id"], g.as_str());
    assert_eq!(part["mode"], "read_only");
    let mut allow = strs(&part["allow_patterns"]);
    allow.sort();
    assert_eq!(
        allow,
        [
            "src/payments/checkout.py",
            "src/payments/legacy_payment.py",
            "src/payments/pay.py"
        ]
    );
    let all = verify(r["token_all"].as_str().unwrap(), "helper-agent");
    assert_eq!(all["parent_grant_id"], g.as_str());
    assert_eq!(all["allow_patterns"].as_array().unwrap().len(), 4);
    assert_eq!(r["delegate_unmatched"], "denied");

    // A read-only view; a grant by explicit files; delegation follows it.
    assert_eq!(r["ro_mode"], "read_only");
    assert_eq!(r["ro_files"], json!(["src/payments/checkout.py"]));
    assert_eq!(r["ro_write"], "denied");
    let access = &r["access"];
    assert_eq!(access[0], true);
    assert_eq!(access[2], "read_only");
    assert_eq!(access[3], "Review");
    assert_eq!(access[4], "review the checkout");
    assert_eq!(
        access[5],
        json!(["docs/payment.md", "src/payments/checkout.py"])
    );
    assert_eq!(r["access_denied_file"], "denied");
    let docs = verify(r["token_docs"].as_str().unwrap(), "docs-agent");
    assert_eq!(docs["parent_grant_id"], access[1]);
    assert_eq!(docs["allow_patterns"], json!(["docs/payment.md"]));
    assert_eq!(r["grants_types_ok"], true);
    let ro = r["ro_grant_id"].as_str().unwrap();
    let acc = access[1].as_str().unwrap();
    let mut want = vec![g.as_str(), ro, acc];
    want.sort();
    assert_eq!(strs(&r["grants"]), want);
    assert_eq!(r["phases"][&g], "open");
    assert_eq!(r["self_commit"], json!([403, true]));

    // The host is untouched until the approver commits, over the API.
    assert_eq!(
        fs::read_to_string(env.host.join("src/payments/pay.py")).unwrap(),
        PAY
    );
    let (status, out) = http_json(
        &server.socket,
        "POST",
        &format!("/v1/grants/{g}/commit"),
        r#"{"approver": "ci-approver"}"#,
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        fs::read_to_string(env.host.join("src/payments/pay.py")).unwrap(),
        fixed
    );
    assert!(!env.host.join("src/payments/legacy_payment.py").exists());
    for other in [ro, acc] {
        let (status, out) = http_json(
            &server.socket,
            "POST",
            &format!("/v1/grants/{other}/reject"),
            r#"{"reason": "done"}"#,
        );
        assert_eq!(status, 200, "{out}");
    }
    for id in [g.as_str(), ro] {
        assert!(no_mount_of_grant(id), "{id} is still mounted");
    }
}

#[test]
fn the_seed_example_runs_unchanged_on_the_seeds_pydantic_models() {
    let env = Env::new();
    project(&env);
    // No a2a_pack either: the client must pick wopfs_seed.
    let hidden = hide(&env, "hide-a2a", &["a2a_pack"]);
    let site = match pydantic_for_agent(&env, &hidden) {
        Some(site) => site,
        None if std::env::var_os("WOPFS_TEST_REQUIRE_PYDANTIC").is_some() => {
            panic!("no pydantic 2 for the agent and WOPFS_TEST_REQUIRE_PYDANTIC is set")
        }
        None => {
            eprintln!("SKIPPED: no pydantic 2 for the agent's interpreter");
            return;
        }
    };
    let server = start_server(&env);
    let py = python_dir(&env);
    let mut path: Vec<&Path> = vec![&hidden, &py];
    if let Some(site) = &site {
        path.push(site);
    }
    run_the_seed_example(&env, &server, &py, &path, "pydantic");
    env.ok(&["audit", "--verify"]);
    drop(server);
}

#[test]
fn the_seed_example_runs_unchanged_on_the_dataclass_fallback() {
    let env = Env::new();
    project(&env);
    let hidden = hide(&env, "hide-pydantic", &["pydantic", "a2a_pack"]);
    let server = start_server(&env);
    let py = python_dir(&env);
    run_the_seed_example(&env, &server, &py, &[&hidden, &py], "dataclasses");
    drop(server);
}
