//! Turns the granule / VA-size cargo features into `config.rs` (Rust constants) and
//! `config.ld` (linker constants), and passes the kernel linker script.

use std::{env, fs, path::PathBuf};

fn feature(name: &str) -> bool {
    env::var_os(format!("CARGO_FEATURE_{}", name.to_uppercase().replace('-', "_"))).is_some()
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let granules: Vec<(u32, &str)> = [(12, "4k"), (14, "16k"), (16, "64k")]
        .into_iter()
        .filter(|(_, n)| feature(&format!("granule-{n}")))
        .collect();
    let vas: Vec<u32> = [36, 39, 42, 47, 48]
        .into_iter()
        .filter(|v| feature(&format!("va-{v}")))
        .collect();

    let mut error = None;
    let (shift, gname) = match granules.as_slice() {
        [] => (12, "4k"),
        [g] => *g,
        _ => {
            error = Some("select exactly one of the features granule-4k, granule-16k, granule-64k".to_string());
            (12, "4k")
        }
    };
    let valid: &[u32] = match shift {
        12 => &[39, 48],
        14 => &[36, 47, 48],
        _ => &[42, 48],
    };
    let va = match vas.as_slice() {
        [] => match shift {
            14 => 47,
            _ => 48,
        },
        [v] if valid.contains(v) => *v,
        [v] => {
            error = Some(format!(
                "va-{v} is not a valid VA size for the {gname} granule (valid: {valid:?})"
            ));
            valid[0]
        }
        _ => {
            error = Some("select at most one va-* feature".to_string());
            valid[0]
        }
    };

    let mut rs = String::new();
    if let Some(e) = &error {
        rs.push_str(&format!("compile_error!({e:?});\n"));
    }
    rs.push_str(&format!(
        "/// Configuration of this build (from cargo features).\n\
         pub type Cfg = mm::geometry::Cfg{}K{};\n\
         pub const CONFIG_NAME: &str = \"{gname}-{va}\";\n\
         pub const KTEST: bool = {};\n",
        1u32 << (shift - 10),
        va,
        feature("ktest"),
    ));
    fs::write(out.join("config.rs"), rs).unwrap();

    // Sections are aligned to the largest granule so the same script works for every build;
    // only PAGE_SIZE (used for the Image header flags) differs.
    let flags = match shift {
        12 => 1 << 1,
        14 => 2 << 1,
        _ => 3 << 1,
    };
    fs::write(
        out.join("config.ld"),
        format!("PAGE_SIZE = {:#x};\nIMAGE_FLAGS = {flags:#x};\n", 1u64 << shift),
    )
    .unwrap();

    let script = root.join("linker/kernel.ld");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=-L{}", out.display());
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
}
