//! Numbers from the command line: every numeric flag is parsed by
//! [`number`], which accepts a whole number within the flag's range and
//! otherwise fails with a usage error naming the flag and the range
//! (`-1`, `2^64`, `1e99` and the empty string included; never a panic).
//! Durations go through `grant::parse_duration_in`, with the same rule.

use std::ffi::OsStr;
use std::marker::PhantomData;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// The range of `--uid` and `--gid`: (uid_t)-1 means "no owner" to chown.
pub const MAX_ID: u64 = u32::MAX as u64 - 1;
/// The range of `--threads`.
pub const MAX_THREADS: u64 = 256;
/// The range of `--quota-bytes`: what a file offset can hold.
pub const MAX_BYTES: u64 = i64::MAX as u64;
/// The range of file counts: `--quota-files`, `--max-files`.
pub const MAX_FILES: u64 = 1_000_000_000;
/// The range of `wopfs search --limit`.
pub const MAX_LIMIT: u64 = 1_000_000;

/// A clap value parser for a whole number in `min..=max`, as `T`.
pub fn number<T>(min: u64, max: u64) -> Number<T> {
    Number {
        min,
        max,
        _t: PhantomData,
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Number<T> {
    min: u64,
    max: u64,
    _t: PhantomData<T>,
}

impl<T> Number<T> {
    /// Checks `text` as a value of the flag `flag`.
    pub fn check(&self, flag: &str, text: &str) -> Result<u64, String> {
        let (min, max) = (self.min, self.max);
        let bad = || {
            format!(
                "invalid value {text:?} for {flag}: it must be a whole number from {min} to {max}"
            )
        };
        let t = text.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // Digits only: the one failure left is a number too large for u64.
        match t.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(bad()),
        }
    }
}

impl<T> TypedValueParser for Number<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let flag = arg
            .and_then(|a| a.get_long().map(|l| format!("--{l}")))
            .or_else(|| arg.map(|a| a.get_id().to_string()))
            .unwrap_or_else(|| "a number".into());
        let text = value.to_string_lossy();
        self.check(&flag, &text)
            .and_then(|n| {
                T::try_from(n).map_err(|_| format!("invalid value {text:?} for {flag}: too large"))
            })
            .map_err(|msg| clap::Error::raw(ErrorKind::ValueValidation, msg + "\n").with_cmd(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_range_checked_by_name() {
        let n = number::<u32>(1, 10);
        assert_eq!(n.check("--x", "1"), Ok(1));
        assert_eq!(n.check("--x", "10"), Ok(10));
        for bad in [
            "0",
            "11",
            "-1",
            "",
            " ",
            "1e99",
            "1.5",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999",
            "+3",
            "0x10",
        ] {
            let e = n.check("--x", bad).unwrap_err();
            assert!(
                e.contains("--x") && e.contains("from 1 to 10"),
                "{bad}: {e}"
            );
        }
    }
}
