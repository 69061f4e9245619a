//! What the terminal gets: colour (`--color`, `NO_COLOR`), the pager for
//! long output (`$WOPFS_PAGER`, `$PAGER`, `--no-pager`) and progress bars
//! whose estimate settles before it is shown.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};

/// `--color WHEN`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorWhen {
    /// Colour on a terminal, unless NO_COLOR is set or TERM is dumb.
    #[default]
    Auto,
    /// Always colour, even into a pipe or a file (overrides NO_COLOR).
    Always,
    /// Never colour.
    Never,
}

impl ColorWhen {
    /// The same choice for clap's own help and error messages.
    pub fn clap(self) -> clap::ColorChoice {
        match self {
            ColorWhen::Auto => clap::ColorChoice::Auto,
            ColorWhen::Always => clap::ColorChoice::Always,
            ColorWhen::Never => clap::ColorChoice::Never,
        }
    }
}

/// How the commands that print for people (diff, audit) print: from the
/// global flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Term {
    pub color: ColorWhen,
    pub no_pager: bool,
}

/// Whether to colour: `always` and `never` as said; `auto` only on a
/// terminal, with `NO_COLOR` unset or empty and `TERM` not `dumb`
/// (<https://no-color.org>: a flag overrides the variable).
pub fn use_color(
    when: ColorWhen,
    terminal: bool,
    no_color: Option<&OsStr>,
    term: Option<&OsStr>,
) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
        }
    }
}

impl Term {
    /// Whether what goes to stdout is coloured.
    pub fn color_stdout(&self) -> bool {
        use_color(
            self.color,
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
        )
    }

    /// Prints `text` on stdout, through the pager when one applies (see
    /// [`choose_pager`]). A reader that goes away early (`q` in the pager,
    /// `| head`) ends the output quietly.
    pub fn page(&self, text: &str) -> Result<()> {
        let pager = choose_pager(
            self.no_pager,
            std::io::stdout().is_terminal(),
            std::env::var("WOPFS_PAGER").ok().as_deref(),
            std::env::var("PAGER").ok().as_deref(),
            || on_path("less"),
        );
        match pager {
            Pager::None => write_stdout(text),
            p => run_pager(&p, text),
        }
    }
}

/// The first `--color` value on a command line (before `--`), so that
/// clap's own help and errors follow it too. An unknown value is left
/// for clap to refuse.
pub fn color_from_args<I, T>(args: I) -> Option<ColorWhen>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    use clap::ValueEnum;
    let mut args = args.into_iter().map(Into::into).skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.to_str() {
            Some("--") => return None,
            Some("--color") => args.next(),
            Some(a) => match a.strip_prefix("--color=") {
                Some(v) => Some(OsString::from(v)),
                None => continue,
            },
            None => continue,
        };
        return value.and_then(|v| ColorWhen::from_str(v.to_str()?, false).ok());
    }
    None
}

/// Which pager, if any.
#[derive(Debug, PartialEq, Eq)]
pub enum Pager {
    None,
    /// `less -FRX`: quits at once when the text fits on one screen, keeps
    /// colours, leaves the text on the screen.
    Less,
    /// A command line run by `sh -c`, as git runs `$PAGER`.
    Shell(String),
}

/// Like git: no pager with `--no-pager` or when stdout is not a terminal;
/// else `$WOPFS_PAGER`, else `$PAGER` (empty or `cat`: none), else
/// `less -FRX` when `less` is installed, else none.
pub fn choose_pager(
    no_pager: bool,
    terminal: bool,
    wopfs_pager: Option<&str>,
    pager: Option<&str>,
    less_installed: impl FnOnce() -> bool,
) -> Pager {
    if no_pager || !terminal {
        return Pager::None;
    }
    match wopfs_pager.or(pager).map(str::trim) {
        Some("" | "cat") => Pager::None,
        Some(cmd) => Pager::Shell(cmd.to_string()),
        None if less_installed() => Pager::Less,
        None => Pager::None,
    }
}

fn on_path(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(cmd))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Writes on stdout; a closed reader (EPIPE) ends the output quietly.
pub(super) fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.ctx(|| "writing to stdout"),
    }
}

/// Feeds `text` to the pager and waits for it. The pager may quit before
/// reading everything (`q`): that is the end, not an error. While it runs,
/// SIGINT (Ctrl-C, which the pager handles itself) does not kill us, so the
/// terminal is never handed back to the shell under a running pager. A
/// pager that cannot be started (sh's 126/127) leaves the text on stdout.
fn run_pager(pager: &Pager, text: &str) -> Result<()> {
    let mut cmd = match pager {
        Pager::None => return write_stdout(text),
        Pager::Less => {
            let mut c = Command::new("less");
            c.arg("-FRX");
            c
        }
        Pager::Shell(line) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(line);
            c
        }
    };
    // As git does for a $PAGER of less (or lv) without options of its own.
    if std::env::var_os("LESS").is_none() {
        cmd.env("LESS", "FRX");
    }
    if std::env::var_os("LV").is_none() {
        cmd.env("LV", "-c");
    }
    let Ok(mut child) = cmd.stdin(Stdio::piped()).spawn() else {
        return write_stdout(text);
    };
    // A pager that quits early (q) closes the pipe: that is no error, so
    // the write must see EPIPE rather than die of SIGPIPE (set after the
    // spawn: the pager keeps the default disposition).
    // SAFETY: signal(2) with SIG_IGN and a disposition it returned.
    let old_sigpipe = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sigint = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted).ok();
    let written = match child.stdin.take() {
        Some(mut stdin) => match stdin.write_all(text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(Error::io("writing to the pager", e))
            }
            _ => Ok(()),
        }, // stdin is closed here: the pager sees the end of the text
        None => Ok(()),
    };
    let status = child.wait();
    if let Some(id) = sigint {
        signal_hook::low_level::unregister(id);
    }
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGPIPE, old_sigpipe) };
    if let Ok(s) = status {
        if matches!(s.code(), Some(126 | 127)) {
            return write_stdout(text);
        }
    }
    written
}

/// A progress bar for `len` items on stderr, shown only when stderr is a
/// terminal and there are at least 100 items; hidden otherwise. Its
/// estimate of the time left appears only once it has settled (see
/// [`settled`]) and follows the recent rate ([`RecentRate`]).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = if std::io::stderr().is_terminal() && len >= 100 {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len}{eta}") {
        pb.set_style(style.with_key("eta", RecentRate::default()));
    }
    pb.set_message(what.to_string());
    pb
}

/// Whether an estimate of the time left may be shown: after 2 s and 5 %
/// of the items. Before that it says little (one slow first file of 5,000
/// read as "78m").
pub fn settled(elapsed: Duration, pos: u64, len: u64) -> bool {
    len > 0 && pos < len && elapsed >= Duration::from_secs(2) && pos.saturating_mul(20) >= len
}

/// The time `left` items take at the rate of the last window (`done`
/// items in `span`); `None` without a rate to go by.
pub fn time_left(span: Duration, done: u64, left: u64) -> Option<Duration> {
    if done == 0 || span < Duration::from_millis(500) {
        return None;
    }
    let secs = span.as_secs_f64() * left as f64 / done as f64;
    Some(Duration::from_secs_f64(secs.min(1e9)))
}

/// How far back the rate is measured: long enough to smooth out single
/// large files, short enough to forget a slow start.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The `{eta}` of our progress bars: " ~12s left" once [`settled`], from
/// the rate over the last [`RATE_WINDOW`]. (indicatif's own `{eta}`
/// shows its first guess at once, and its average keeps a slow start for
/// long: 82 s shown where 4 s were left, in a trial of 5,000 items after
/// a 1.5 s stall.)
#[derive(Clone, Default)]
struct RecentRate {
    /// (when, position) at each tick, the oldest at most a window ago
    /// (plus one just before it).
    samples: std::collections::VecDeque<(std::time::Instant, u64)>,
}

impl indicatif::style::ProgressTracker for RecentRate {
    fn clone_box(&self) -> Box<dyn indicatif::style::ProgressTracker> {
        Box::new(self.clone())
    }

    fn tick(&mut self, state: &indicatif::ProgressState, now: std::time::Instant) {
        self.samples.push_back((now, state.pos()));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn reset(&mut self, _: &indicatif::ProgressState, _: std::time::Instant) {
        self.samples.clear();
    }

    fn write(&self, state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
        let len = state.len().unwrap_or(0);
        if !settled(state.elapsed(), state.pos(), len) {
            return;
        }
        let (Some((t0, p0)), Some((t1, p1))) = (self.samples.front(), self.samples.back()) else {
            return;
        };
        let left = len.saturating_sub(state.pos());
        if let Some(eta) = time_left(t1.duration_since(*t0), p1.saturating_sub(*p0), left) {
            let _ = write!(w, " ~{:#} left", indicatif::HumanDuration(eta));
        }
    }
}

/// `wopfs completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = <super::Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "wopfs", &mut buf);
    write_stdout(&String::from_utf8_lossy(&buf))
}

/// `wopfs man`: `wopfs.1` on stdout; with `-o DIR`, `wopfs.1` and one page
/// per subcommand (`wopfs-mount.1`, `wopfs-token-mint.1`, …) in DIR, whose
/// paths are printed.
pub fn man(output: Option<&Path>, json: bool) -> Result<()> {
    let cmd = <super::Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    let Some(dir) = output else {
        return write_stdout(&String::from_utf8_lossy(&main_page(cmd)?));
    };
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut cmd = cmd;
    cmd.build();
    let mut written = Vec::new();
    man_pages(&cmd, true, dir, &mut written)?;
    if json {
        return super::print_json(&serde_json::json!({ "dir": dir, "pages": written }));
    }
    let mut text = String::new();
    for p in &written {
        let _ = writeln!(text, "{}", p.display());
    }
    write_stdout(&text)
}

/// wopfs.1: clap_mangen's sections, with the environment as a roff
/// ENVIRONMENT section instead of the help's plain-text list.
fn main_page(cmd: clap::Command) -> Result<Vec<u8>> {
    let err = |e| Error::io("rendering the man page", e);
    let man = clap_mangen::Man::new(cmd.after_long_help(None::<&str>));
    let mut buf = Vec::new();
    man.render_title(&mut buf).map_err(err)?;
    man.render_name_section(&mut buf).map_err(err)?;
    man.render_synopsis_section(&mut buf).map_err(err)?;
    man.render_description_section(&mut buf).map_err(err)?;
    man.render_options_section(&mut buf).map_err(err)?;
    man.render_subcommands_section(&mut buf).map_err(err)?;
    buf.extend_from_slice(b".SH ENVIRONMENT\n");
    for (name, what) in super::ENV_VARS {
        buf.extend_from_slice(format!(".TP\n\\fB{}\\fR\n{}\n", roff(name), roff(what)).as_bytes());
    }
    buf.extend_from_slice(
        b".SH \"JSON OUTPUT\"\nEvery command that prints data takes \\fB\\-\\-json\\fR \
          and then prints one JSON document on stdout; all but \\fBrun\\fR, \\fBserve\\fR \
          and \\fBcompletions\\fR.\n",
    );
    man.render_version_section(&mut buf).map_err(err)?;
    Ok(buf)
}

/// Plain text as roff: backslashes and hyphens escaped, no line starting
/// with a control character.
fn roff(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with(['.', '\'']) {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The page of `cmd` (`top`: wopfs.1 itself) and of every subcommand.
fn man_pages(cmd: &clap::Command, top: bool, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let buf = if top {
        main_page(cmd.clone())?
    } else {
        let mut buf = Vec::new();
        man.render(&mut buf)
            .map_err(|e| Error::io("rendering a man page", e))?;
        buf
    };
    std::fs::write(&path, buf).ctx(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, false, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_flag_then_no_color_then_the_terminal() {
        let on = |w, tty, nc: Option<&str>, term: Option<&str>| {
            use_color(w, tty, nc.map(OsStr::new), term.map(OsStr::new))
        };
        assert!(on(ColorWhen::Auto, true, None, Some("xterm")));
        assert!(on(ColorWhen::Auto, true, Some(""), Some("xterm")));
        assert!(!on(ColorWhen::Auto, false, None, Some("xterm")));
        assert!(!on(ColorWhen::Auto, true, Some("1"), Some("xterm")));
        assert!(!on(ColorWhen::Auto, true, Some("0"), None));
        assert!(!on(ColorWhen::Auto, true, None, Some("dumb")));
        assert!(on(ColorWhen::Always, false, Some("1"), Some("dumb")));
        assert!(!on(ColorWhen::Never, true, None, Some("xterm")));
    }

    #[test]
    fn color_is_found_on_the_command_line() {
        let f = |args: &[&str]| color_from_args(args.iter().copied());
        assert_eq!(
            f(&["wopfs", "diff", "g", "--color", "never"]),
            Some(ColorWhen::Never)
        );
        assert_eq!(
            f(&["wopfs", "--color=always", "diff"]),
            Some(ColorWhen::Always)
        );
        assert_eq!(f(&["wopfs", "diff"]), None);
        assert_eq!(f(&["wopfs", "--color=rainbow"]), None);
        assert_eq!(f(&["wopfs", "run", "g", "--", "x", "--color=never"]), None);
        assert_eq!(f(&["wopfs", "--color"]), None);
    }

    #[test]
    fn pager_like_git() {
        let yes = || true;
        let no = || false;
        assert_eq!(choose_pager(false, true, None, None, yes), Pager::Less);
        assert_eq!(choose_pager(false, true, None, None, no), Pager::None);
        assert_eq!(choose_pager(true, true, None, None, yes), Pager::None);
        assert_eq!(
            choose_pager(false, false, None, Some("more"), yes),
            Pager::None
        );
        assert_eq!(choose_pager(false, true, None, Some(""), yes), Pager::None);
        assert_eq!(
            choose_pager(false, true, None, Some("cat"), yes),
            Pager::None
        );
        assert_eq!(
            choose_pager(false, true, None, Some("less -R"), no),
            Pager::Shell("less -R".into())
        );
        assert_eq!(
            choose_pager(false, true, Some("most"), Some("less"), yes),
            Pager::Shell("most".into())
        );
        assert_eq!(
            choose_pager(false, true, Some(""), Some("less"), yes),
            Pager::None
        );
    }

    #[test]
    fn the_estimate_waits_until_it_has_settled() {
        let s = Duration::from_secs;
        // The first file of 5,000 after a slow start: nothing yet.
        assert!(!settled(s(1), 1, 5000));
        assert!(!settled(s(30), 249, 5000));
        assert!(!settled(Duration::from_millis(1500), 1000, 5000));
        // 5 % and 2 s.
        assert!(settled(s(2), 250, 5000));
        assert!(settled(s(10), 2500, 5000));
        // Done, or nothing to do: no estimate.
        assert!(!settled(s(10), 5000, 5000));
        assert!(!settled(s(10), 0, 0));
    }

    #[test]
    fn time_left_follows_the_recent_rate() {
        let s = Duration::from_secs;
        assert_eq!(time_left(s(10), 1000, 4000), Some(s(40)));
        assert_eq!(time_left(s(2), 500, 0), Some(s(0)));
        // No progress in the window, or no window yet: no figure.
        assert_eq!(time_left(s(10), 0, 4000), None);
        assert_eq!(time_left(Duration::from_millis(100), 10, 4000), None);
    }
}
