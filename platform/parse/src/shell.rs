//! The shell's argument grammar (docs/shell.md): a command's words after its name, checked
//! and turned into values before the command touches anything. Numbers are
//! [`crate::num::parse_u64`]'s; a word the grammar refuses comes back in the error as typed.

use crate::{cmdline::parse_online_state, num};
use alloc::{string::String, vec::Vec};
use core::fmt;
use mm::hotplug::{OnlinePolicy, OnlineType};

/// Why a command did not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShellError {
    /// No command of that name (the shell reports the name it looked up).
    Unknown,
    /// The arguments fit none of the command's forms: its usage line is the report.
    Usage,
    BadNumber(String),
    /// A word that is not one of the accepted ones (`online 16 bogus`).
    BadWord {
        word: String,
        want: &'static str,
    },
    /// More arguments than the command takes; the first extra one.
    Extra(String),
    /// Fewer arguments than the command takes.
    Missing,
}

impl ShellError {
    /// The word of the input the error is about, if it is about one.
    pub fn word(&self) -> Option<&str> {
        match self {
            ShellError::BadNumber(w) | ShellError::BadWord { word: w, .. } | ShellError::Extra(w) => Some(w),
            ShellError::Unknown | ShellError::Usage | ShellError::Missing => None,
        }
    }
}

/// The line the shell prints after `error: ` (the usage line follows it).
impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShellError::Unknown => write!(f, "unknown command"),
            ShellError::Usage => write!(f, "wrong arguments"),
            ShellError::BadNumber(s) => {
                write!(f, "'{s}' is not a number (use decimal, 0x-hex, or a K/M/G suffix)")
            }
            ShellError::BadWord { word, want } => write!(f, "'{word}' is not {want}"),
            ShellError::Extra(w) => write!(f, "unexpected argument '{w}'"),
            ShellError::Missing => write!(f, "missing argument(s)"),
        }
    }
}

/// Parse a number ([`num::parse_u64`]); a bad one is [`ShellError::BadNumber`].
pub fn parse_u64(s: &str) -> Result<u64, ShellError> {
    num::parse_u64(s).map_err(|_| ShellError::BadNumber(String::from(s)))
}

/// No arguments, or the first extra one.
pub fn no_args(args: &[&str]) -> Result<(), ShellError> {
    exactly::<0>(args).map(|_| ())
}

/// Exactly `N` arguments, or which one is extra / that some are missing.
pub fn exactly<'a, const N: usize>(args: &[&'a str]) -> Result<[&'a str; N], ShellError> {
    match args.get(N) {
        Some(extra) => Err(ShellError::Extra(String::from(*extra))),
        None => args.try_into().map_err(|_| ShellError::Missing),
    }
}

/// `<number>`: `pt`, `page`, `touch`, `offline`.
pub fn one_number(args: &[&str]) -> Result<u64, ShellError> {
    let [n] = exactly(args)?;
    parse_u64(n)
}

/// `<addr> <size>`: `probe`, `remove`, `pin`.
pub fn addr_size(args: &[&str]) -> Result<(u64, u64), ShellError> {
    let [addr, size] = exactly(args)?;
    Ok((parse_u64(addr)?, parse_u64(size)?))
}

/// `probe <addr> <size> [node=N]`: the range and the node named, if any.
pub fn probe_args(args: &[&str]) -> Result<(u64, u64, Option<u8>), ShellError> {
    let is_node = |w: &str| w.starts_with("node=");
    match args {
        [addr, size] => Ok((parse_u64(addr)?, parse_u64(size)?, None)),
        [addr, size, node] if is_node(node) => Ok((parse_u64(addr)?, parse_u64(size)?, Some(node_arg(node)?))),
        [_, _, node, extra, ..] if is_node(node) => Err(ShellError::Extra(String::from(*extra))),
        [_, _, extra, ..] => Err(ShellError::Extra(String::from(*extra))),
        _ => Err(ShellError::Missing),
    }
}

/// `online <block> [kernel|movable|auto]` (the zone word is checked before the block number).
pub fn online_args(args: &[&str]) -> Result<(u64, OnlineType), ShellError> {
    let (id, t) = match args {
        [id] => (id, OnlineType::Auto),
        [id, "kernel"] => (id, OnlineType::Kernel),
        [id, "movable"] => (id, OnlineType::Movable),
        [id, "auto"] => (id, OnlineType::Auto),
        [_, zone] => {
            return Err(ShellError::BadWord {
                word: String::from(*zone),
                want: "a zone (kernel, movable or auto)",
            })
        }
        [_, _, extra, ..] => return Err(ShellError::Extra(String::from(*extra))),
        [] => return Err(ShellError::Missing),
    };
    Ok((parse_u64(id)?, t))
}

/// What `meminfo` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeminfoMode {
    Show,
    Check,
    Settle,
}

/// `meminfo [check|settle]`.
pub fn meminfo_args(args: &[&str]) -> Result<MeminfoMode, ShellError> {
    match args {
        [] => Ok(MeminfoMode::Show),
        ["check"] => Ok(MeminfoMode::Check),
        ["settle"] => Ok(MeminfoMode::Settle),
        [word] => Err(ShellError::BadWord {
            word: String::from(*word),
            want: "a meminfo mode ('check' or 'settle')",
        }),
        [_, extra, ..] => Err(ShellError::Extra(String::from(*extra))),
    }
}

/// What `policy` changes before it shows the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyChange {
    /// `policy`: nothing.
    Show,
    /// `policy default offline|online|online_kernel|online_movable`.
    Default(Option<OnlineType>),
    /// `policy online_policy contig-zones|auto-movable`.
    Policy(OnlinePolicy),
    /// `policy ratio <percent>`.
    Ratio(u64),
}

/// `policy [default <state> | online_policy <policy> | ratio <percent>]`.
pub fn policy_args(args: &[&str]) -> Result<PolicyChange, ShellError> {
    Ok(match args {
        [] => PolicyChange::Show,
        ["default", v] => PolicyChange::Default(parse_online_state(v).ok_or(ShellError::Usage)?),
        ["online_policy", "contig-zones"] => PolicyChange::Policy(OnlinePolicy::ContigZones),
        ["online_policy", "auto-movable"] => PolicyChange::Policy(OnlinePolicy::AutoMovable),
        ["ratio", v] => PolicyChange::Ratio(parse_u64(v)?),
        _ => return Err(ShellError::Usage),
    })
}

/// What `stress` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stress {
    /// `stress <size> [node=N]`: the size, and the node to allocate from first (default: the
    /// calling CPU's).
    Fill(u64, Option<u8>),
    /// `stress verify`.
    Verify,
    /// `stress free`.
    Free,
}

/// `stress <size> [node=N] | stress verify | stress free`.
pub fn stress_args(args: &[&str]) -> Result<Stress, ShellError> {
    match args {
        ["verify"] => Ok(Stress::Verify),
        ["free"] => Ok(Stress::Free),
        [size] => Ok(Stress::Fill(parse_u64(size)?, None)),
        [size, node] => Ok(Stress::Fill(parse_u64(size)?, Some(node_arg(node)?))),
        _ => Err(ShellError::Usage),
    }
}

// The text of `node_arg`'s error names the node ids.
const _: () = assert!(crate::numa::MAX_NUMNODES == 8);

/// `node=N`, a node id below [`crate::numa::MAX_NUMNODES`].
pub fn node_arg(word: &str) -> Result<u8, ShellError> {
    word.strip_prefix("node=")
        .and_then(|n| num::parse_u64(n).ok())
        .filter(|&n| n < crate::numa::MAX_NUMNODES as u64)
        .map(|n| n as u8)
        .ok_or(ShellError::BadWord {
            word: String::from(word),
            want: "node=N with N a node id (0-7)",
        })
}

/// Repetitions of `bench` without `reps=`.
pub const BENCH_DEFAULT_REPS: usize = 5;

/// `bench [reps=N] <size>...`: the repetitions (not yet bounded: the caller knows the limit)
/// and the size words, at least one, checked by [`bench_sizes`].
pub fn bench_args<'a, 'b>(args: &'b [&'a str]) -> Result<(usize, &'b [&'a str]), ShellError> {
    let (reps, sizes) = match args {
        [] => return Err(ShellError::Usage),
        [first, rest @ ..] => match first.strip_prefix("reps=") {
            Some(n) => (parse_u64(n)? as usize, rest),
            None => (BENCH_DEFAULT_REPS, args),
        },
    };
    if sizes.is_empty() || reps == 0 {
        return Err(ShellError::Usage);
    }
    Ok((reps, sizes))
}

/// The sizes of `bench`, each a number.
pub fn bench_sizes(sizes: &[&str]) -> Result<Vec<u64>, ShellError> {
    sizes.iter().map(|s| parse_u64(s)).collect()
}
