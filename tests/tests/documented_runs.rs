//! The runner commands the README and `docs/` show with `--exec` (`cargo run -- ... --exec
//! '...'`, fenced or inline) run through the runner's own option parsing and end with exit
//! status 0, or, when the sentence after an inline one says it shows a refusal, with the guest's
//! `refused` line and exit status 1 (a host command that failed). A fenced block after `<!-- docs-test: no-run (reason) -->` is left out (too long
//! for a test; the docs test still parses it). The same command written twice runs once.

use hotmem_tests::docs::{code_mentions, documented_commands, words};
use hotmem_tests::CliRun;
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn documented_exec_commands_exit_0() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let inline = code_mentions(root)
        .into_iter()
        .filter(|m| m.3)
        .map(|(page, line, after, _)| (page, line, after.contains("refus")));
    let mut runs = BTreeSet::new();
    let fenced = documented_commands(root)
        .into_iter()
        .map(|(page, line, may_run)| (page, line, may_run, false));
    let inline = inline.map(|(page, line, refused)| (page, line, true, refused));
    for (page, line, may_run, refused) in fenced.chain(inline) {
        let w = words(&line);
        if !may_run || w.get(1).map(String::as_str) != Some("run") || line.contains(" -p ") {
            continue;
        }
        let args: Vec<String> = w.iter().skip_while(|a| *a != "--").skip(1).cloned().collect();
        if args.iter().any(|a| a == "--exec") {
            runs.insert((args, page, refused));
        }
    }
    let mut seen = BTreeSet::new();
    let runs: Vec<_> = runs.into_iter().filter(|(a, _, _)| seen.insert(a.clone())).collect();
    assert!(
        runs.len() >= 3,
        "found only {} documented --exec commands: {runs:?}",
        runs.len()
    );
    for (args, page, refused) in &runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = std::time::Instant::now();
        let r = CliRun::run(&args);
        if !refused {
            r.expect_ok(&[]);
        } else if r.out.failure.is_some() || r.out.host_exit_code() != 1 || !r.out.console.contains(" refused") {
            r.fail(&format!(
                "{page} says it shows a refusal: expected a `refused` line and exit status 1"
            ));
        }
        let code = r.out.host_exit_code();
        eprintln!("{page}: {args:?}: exit {code} in {:.1?}", start.elapsed());
    }
}
