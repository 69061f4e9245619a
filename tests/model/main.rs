//! Model-based tests of the overlay core, without a mount.
//!
//! Random sequences of operations (create, write, truncate, rename with
//! NOREPLACE and EXCHANGE, unlink, mkdir, rmdir, symlink, hard link, chmod,
//! setxattr, reopen) over a small host tree with hidden and read-only
//! names run against:
//!
//! - `core_matches_model`: the view core (`view.rs`) and an in-memory
//!   reference model (`reference.rs`). After every step the answers (ok or
//!   errno) are equal, the whole view equals the model (listing, kinds,
//!   modes, sizes, link counts, contents, user xattrs; not times), and
//!   every name of the alphabet looked up in every directory is found iff
//!   the model has it (hidden names answer ENOENT). Hard links are
//!   generated too (`ops::HARD_LINKS`).
//!   After each reopen and at the end (reopened
//!   twice: the journal replayed, then its compacted form replayed) the
//!   view still equals the model, and the session's patch set equals the
//!   model's diff from the host tree (`patches.rs`).
//! - `core_errnos_match_linux`: the same sequences on the core and on a
//!   plain directory of the real filesystem (`real.rs`); every errno must
//!   be Linux's, except where the view refuses on purpose (write scope,
//!   xattr namespaces: the model marks those and the step is not made on
//!   the directory). The directory must also equal the model after every
//!   step, which holds the model to Linux.
//!
//! Budget: [`CI_CASES`] cases from the fixed seed [`CI_SEED`], so CI runs
//! the same cases every time (some 15 s in debug on 2 cores, with the temp
//! dirs on tmpfs: see `fixture::temp_dir`). A failure prints the seed, the shrunk case
//! and how to replay it. Locally:
//!
//! ```text
//! cargo test --features fault-injection --test model               # the CI run
//! PROPTEST_RNG_SEED=$RANDOM cargo test ... --test model            # new cases
//! PROPTEST_CASES=2000 PROPTEST_RNG_SEED=7 cargo test ... --test model
//! ```
//!
//! Replaying: `PROPTEST_RNG_SEED=<seed>` with the same `PROPTEST_CASES`
//! runs the failing case again (cases follow from the seed); the shrunk
//! case printed can also become a plain test.

mod fixture;
mod ops;
mod patches;
mod picture;
mod real;
mod reference;
mod view;
mod walk;

use std::fmt::Write;
use std::sync::Once;

use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use crate::fixture::Fixture;
use crate::ops::{Case, Op};
use crate::real::Real;
use crate::reference::Model;
use crate::view::Core;

/// Cases per test in CI.
const CI_CASES: u32 = 256;
/// The seed of CI's cases.
const CI_SEED: u64 = 0x5eed_0f11;
/// Operations per case, at most.
const MAX_OPS: usize = 40;

/// The budget and seed: CI's, unless `PROPTEST_CASES` or
/// `PROPTEST_RNG_SEED` say otherwise.
fn config() -> (Config, u64) {
    let from_env = Config::default(); // reads the PROPTEST_* variables
    let seed = match (std::env::var_os("PROPTEST_RNG_SEED"), from_env.rng_seed) {
        (Some(_), RngSeed::Fixed(s)) => s,
        _ => CI_SEED,
    };
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => from_env.cases,
        None => CI_CASES,
    };
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..from_env
    };
    (config, seed)
}

/// New entries get exactly the modes asked for (the kernel applies the
/// caller's umask before a FUSE request; the tests' callers have none).
fn no_umask() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        rustix::process::umask(rustix::fs::Mode::empty());
    });
}

/// A failure at the last of the steps `ran`, with all of them as run.
fn failed(ran: &[Op], what: String) -> String {
    let mut s = format!(
        "step {}: {what}\nsteps as run:\n",
        ran.len().saturating_sub(1)
    );
    for (i, op) in ran.iter().enumerate() {
        let _ = writeln!(s, "  {i:>2}: {op:?}");
    }
    s
}

fn run(test: &str, body: fn(&Case) -> Result<(), String>) {
    no_umask();
    let (config, seed) = config();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&ops::case(MAX_OPS), |c| {
        body(&c).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        let detail = match e {
            TestError::Fail(why, c) => {
                format!("shrunk case, write prefixes {:?}: {why}", c.prefixes)
            }
            TestError::Abort(why) => format!("aborted: {why}"),
        };
        panic!(
            "{test} failed; seed {seed}, {cases} cases. Replay: PROPTEST_RNG_SEED={seed} \
             PROPTEST_CASES={cases} cargo test --features fault-injection --test model {test}\n{detail}"
        );
    }
}

/// The view equals the model, and hides what it must.
fn same_state(core: &Core<'_>, model: &Model) -> Result<(), String> {
    let seen = core.picture()?;
    if let Some(d) = model.picture().diff(&seen, "model", "view") {
        return Err(format!("the view differs from the model:\n{d}"));
    }
    core.check_lookups(model)
}

fn core_matches_model_case(case: &Case) -> Result<(), String> {
    let fx = Fixture::new(case.prefixes);
    let mut model = fixture::model(case.prefixes);
    let host = model.picture();
    let host_tree = Real::new(fx.host.clone()).picture();
    let mut core = Core::open(&fx);
    let mut ran = Vec::new();
    for op in &case.ops {
        let op = op.resolve(&model);
        ran.push(op.clone());
        let want = model.apply(&op).map_err(|r| r.errno);
        let got = core.apply(&op);
        if got != want {
            return Err(failed(&ran, format!("core {got:?}, model {want:?}")));
        }
        same_state(&core, &model).map_err(|e| failed(&ran, e))?;
        if matches!(op, Op::Reopen) {
            patches::check(&fx, &host, &model.picture()).map_err(|e| failed(&ran, e))?;
        }
    }
    // The journal as written, replayed; then its compacted form, replayed.
    let at_end = |what: &str, e: String| failed(&ran, format!("{what} at the end: {e}"));
    for n in 1..=2 {
        core.reopen().map_err(|e| at_end("reopening", e))?;
        same_state(&core, &model).map_err(|e| at_end(&format!("after reopen {n}"), e))?;
    }
    patches::check(&fx, &host, &model.picture()).map_err(|e| at_end("patches", e))?;
    match host_tree.diff(&Real::new(fx.host.clone()).picture(), "before", "after") {
        None => Ok(()),
        Some(d) => Err(at_end("the host tree changed", d)),
    }
}

fn core_errnos_match_linux_case(case: &Case) -> Result<(), String> {
    let fx = Fixture::new(case.prefixes);
    let mut model = fixture::model(case.prefixes);
    let mut core = Core::open(&fx);
    let real = Real::new(fx.plain_copy());
    let mut ran = Vec::new();
    for op in &case.ops {
        let op = op.resolve(&model);
        ran.push(op.clone());
        let want = model.apply(&op);
        let got = core.apply(&op);
        match want {
            // The view refuses on purpose; the directory is left as is.
            Err(r) if r.view_only => {
                if got != Err(r.errno) {
                    let e = format!("core {got:?}, model {r:?} (a refusal of the view's own)");
                    return Err(failed(&ran, e));
                }
            }
            _ => {
                let linux = real.apply(&op);
                if got != linux {
                    return Err(failed(&ran, format!("core {got:?}, Linux {linux:?}")));
                }
                let model_says = want.map_err(|r| r.errno);
                if model_says != linux {
                    let e = format!("model {model_says:?}, Linux {linux:?} (the model is wrong)");
                    return Err(failed(&ran, e));
                }
            }
        }
        if let Some(d) = model.picture().diff(&real.picture(), "model", "Linux") {
            return Err(failed(&ran, format!("the model differs from Linux:\n{d}")));
        }
    }
    Ok(())
}

#[test]
fn core_matches_model() {
    run("core_matches_model", core_matches_model_case);
}

#[test]
fn core_errnos_match_linux() {
    run("core_errnos_match_linux", core_errnos_match_linux_case);
}
