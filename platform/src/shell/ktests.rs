//! In-guest cases of the shell (the `ktest` build): its parser rejects bad input.

use super::{execute, ShellError};
use crate::boot::dtb::Platform;
use alloc::string::String;
use parse::shell::parse_u64;

fn shell_rejects_bad_input(_: &Platform) -> Result<(), String> {
    kassert!(
        execute("no-such-command") == Err(ShellError::Unknown),
        "unknown command accepted"
    );
    kassert!(
        execute("pt") == Err(ShellError::Missing),
        "pt without argument accepted"
    );
    kassert!(
        execute("pt 1 2") == Err(ShellError::Extra("2".into())),
        "pt with two arguments accepted"
    );
    kassert!(
        execute("online 1 bogus")
            == Err(ShellError::BadWord {
                word: "bogus".into(),
                want: "a zone (kernel, movable or auto)"
            }),
        "online with a bad zone accepted"
    );
    kassert!(
        matches!(execute("pt zz"), Err(ShellError::BadNumber(_))),
        "pt zz accepted"
    );
    kassert!(
        execute("meminfo check extra") == Err(ShellError::Extra("extra".into())),
        "meminfo with an extra argument accepted"
    );
    kassert!(
        matches!(execute("meminfo extra"), Err(ShellError::BadWord { .. })),
        "meminfo with a bad word accepted"
    );
    kassert!(execute("") == Ok(()), "empty line rejected");
    kassert!(parse_u64("0x4000_0000") == Ok(0x4000_0000), "hex with separators");
    kassert!(parse_u64("128M") == Ok(128 << 20), "size suffix");
    kassert!(parse_u64("99999999999999999999").is_err(), "overflow accepted");
    kassert!(parse_u64("0x10G").is_err(), "hex with suffix accepted");
    kassert!(parse_u64("-1").is_err(), "negative accepted");
    Ok(())
}
ktest!(shell_rejects_bad_input);
