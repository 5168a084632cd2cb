//! The boot rows of the bench: the kernel's `boot: time_to_prompt_us=N cycles=N stages_us
//! name=N ...` line read from a console, and the median of each stage over the repetitions, so
//! a slow stage shows in the records, the generated table and `--compare`.

use super::plan::median;
use std::fmt::Write;

/// One boot's figures, guest µs.
#[derive(Clone, Debug, PartialEq)]
pub struct BootLine {
    pub time_to_prompt_us: f64,
    /// Each stage in boot order (the kernel's names).
    pub stages_us: Vec<(String, f64)>,
}

/// The `boot: time_to_prompt_us=` line of a console, if there is one that parses.
pub fn parse(console: &str) -> Option<BootLine> {
    let rest = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("boot: time_to_prompt_us="))?;
    let mut words = rest.split_whitespace();
    let time_to_prompt_us = words.next()?.parse().ok()?;
    let stages_us = words
        .skip_while(|w| *w != "stages_us")
        .skip(1)
        .filter_map(|w| {
            let (name, us) = w.split_once('=')?;
            Some((name.to_string(), us.parse().ok()?))
        })
        .collect();
    Some(BootLine {
        time_to_prompt_us,
        stages_us,
    })
}

/// The median of each stage over `boots`, in the order of the first boot (a stage some boot
/// lacks is the median of the boots that have it).
pub fn median_stages(boots: &[BootLine]) -> Vec<(String, f64)> {
    let Some(first) = boots.first() else {
        return Vec::new();
    };
    first
        .stages_us
        .iter()
        .map(|(name, _)| {
            let v: Vec<f64> = boots
                .iter()
                .filter_map(|b| b.stages_us.iter().find(|(n, _)| n == name).map(|s| s.1))
                .collect();
            (name.clone(), median(&v).unwrap_or(0.0))
        })
        .collect()
}

/// `name=N` words, as the kernel prints them (`–` when there are none).
pub fn stages_text(stages: &[(String, f64)]) -> String {
    if stages.is_empty() {
        return "–".into();
    }
    let mut s = String::new();
    for (i, (name, us)) in stages.iter().enumerate() {
        let _ = write!(s, "{}{name}={us:.0}", if i > 0 { " " } else { "" });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "hotmem> \nboot: time_to_prompt_us=9123 cycles=9123000 stages_us early=250 dtb=900 smp=1200\nType 'help'";

    #[test]
    fn the_boot_line_parses_to_its_total_and_stages() {
        let b = parse(LINE).unwrap();
        assert_eq!(b.time_to_prompt_us, 9123.0);
        let names: Vec<&str> = b.stages_us.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["early", "dtb", "smp"]);
        assert_eq!(b.stages_us[2].1, 1200.0);
        assert_eq!(parse("boot: granule=4k"), None);
        // A line without stages still gives the total.
        let b = parse("boot: time_to_prompt_us=5 cycles=5").unwrap();
        assert_eq!((b.time_to_prompt_us, b.stages_us.len()), (5.0, 0));
    }

    #[test]
    fn stages_are_medians_in_boot_order() {
        let boots: Vec<BootLine> = [(1.0, 10.0), (3.0, 30.0), (2.0, 20.0)]
            .iter()
            .map(|&(a, b)| BootLine {
                time_to_prompt_us: a + b,
                stages_us: vec![("early".into(), a), ("dtb".into(), b)],
            })
            .collect();
        let m = median_stages(&boots);
        assert_eq!(m, [("early".to_string(), 2.0), ("dtb".to_string(), 20.0)]);
        assert_eq!(stages_text(&m), "early=2 dtb=20");
        assert_eq!(stages_text(&[]), "–");
    }
}
