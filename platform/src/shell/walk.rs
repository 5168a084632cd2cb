//! `pt <va>`: walk the live page tables the way the MMU does and print every level.

use crate::{boot::layout::G, kernel::mem::memory, println};

fn level_name(level: u32) -> &'static str {
    match level {
        0 => "pgd",
        1 => "pud",
        2 => "pmd",
        _ => "pte",
    }
}

pub fn print_walk(va: u64) {
    if va < G.ttbr1_base() {
        if va >> G.va_bits == 0 {
            println!("pt: va={va:#x} is in the TTBR0 half; TTBR0 walks are disabled after boot (the identity map only serves the MMU switch)");
        } else {
            println!(
                "pt: va={va:#x} is outside both halves (bits above {} must be all 0 or all 1)",
                G.va_bits
            );
        }
        return;
    }
    memory::with_kernel_pt(|pt, tables| {
        let w = pt.walk(tables, va);
        println!(
            "pt: va={:#x} ttbr=1 root={:#x} granule={} va_bits={} levels={}",
            va,
            pt.root(),
            G.granule_name(),
            G.va_bits,
            G.levels()
        );
        for s in &w.steps[..w.n] {
            println!(
                "pt: L{} ({}) idx={} table={:#x} desc={}",
                s.level,
                level_name(s.level),
                s.index,
                s.table_pa,
                s.desc.display(s.level == 3)
            );
        }
        match w.leaf {
            Some(l) => println!(
                "pt: -> pa={:#x} level={} size={} contiguous={}",
                l.pa,
                l.level,
                crate::boot::layout::Size(l.size),
                l.contiguous
            ),
            None => println!("pt: -> not mapped"),
        }
    });
}
