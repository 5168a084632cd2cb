//! The runner's NUMA machine: `--numa` (nodes, their boot memory and CPUs) and `--numa-dist`
//! (distances), checked against what QEMU and the kernel accept and turned into QEMU's
//! `-object memory-backend-ram` / `-numa node` / `-numa dist` arguments.
//!
//! Grammar: `--numa NODE[,NODE...]`, node `n` being the `n`-th item, `SIZE[:cpus=LIST]`; `SIZE`
//! is its boot memory (`0`: none, a memory-less node, e.g. a hotplug target); `LIST` is CPU
//! numbers and ranges joined by `+` (`0-1+4`). Without any `cpus=`, CPU `i` goes to the `i`-th
//! node with memory, round-robin; with some, every CPU is listed exactly once.
//! `--numa-dist A-B=D[,A-B=D...]`: symmetric distances; a pair not given is 20 (QEMU wants
//! every pair once one is given), a node's own distance is 10.

use std::collections::BTreeMap;

use mm::size::Size;

use crate::config::{kernel_max_numnodes, Granule};

/// Distance of a pair `--numa-dist` does not name (Linux's `REMOTE_DISTANCE`).
pub const DEFAULT_DISTANCE: u8 = 20;
/// A node's distance to itself (Linux's `LOCAL_DISTANCE`).
pub const LOCAL_DISTANCE: u8 = 10;

/// One node of `--numa`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// Boot memory in bytes (0: memory-less).
    pub mem: u64,
    /// `cpus=` as given, in order; `None`: CPUs are spread over the nodes with memory.
    pub cpus: Option<Vec<u32>>,
}

/// `--numa` and `--numa-dist`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Numa {
    /// `--numa` as given (for messages).
    pub spec: String,
    pub nodes: Vec<NumaNode>,
    /// `--numa-dist` pairs, `(a, b)` with `a < b`, and the distance.
    pub distances: BTreeMap<(u32, u32), u8>,
}

impl Numa {
    /// Parses a `--numa` value; checks what needs no other option (node count, CPUs in two
    /// nodes, no memory at all).
    pub fn parse(spec: &str) -> Result<Numa, String> {
        let bad = |e: String| format!("--numa {spec}: {e}");
        let mut nodes = Vec::new();
        for (n, item) in spec.split(',').enumerate() {
            nodes.push(parse_node(item).map_err(|e| bad(format!("node {n}: {e}")))?);
        }
        let max = kernel_max_numnodes();
        if nodes.len() > max as usize {
            return Err(bad(format!(
                "{} nodes, but the kernel supports at most {max} (MAX_NUMNODES in platform/parse/src/numa.rs)",
                nodes.len()
            )));
        }
        if nodes.iter().all(|n| n.mem == 0) {
            return Err(bad(
                "no node has memory: give at least one a size, e.g. --numa 1G,0".into()
            ));
        }
        let mut owner: BTreeMap<u32, usize> = BTreeMap::new();
        for (n, node) in nodes.iter().enumerate() {
            for &c in node.cpus.iter().flatten() {
                if let Some(first) = owner.insert(c, n).filter(|&f| f != n) {
                    return Err(bad(format!(
                        "cpu {c} is in node {first} and in node {n}: a CPU belongs to one node"
                    )));
                }
            }
        }
        Ok(Numa {
            spec: spec.to_string(),
            nodes,
            distances: BTreeMap::new(),
        })
    }

    /// Adds a `--numa-dist` value: `A-B=D` pairs of existing nodes, symmetric.
    pub fn set_distances(&mut self, spec: &str) -> Result<(), String> {
        let bad = |e: String| format!("--numa-dist {spec}: {e}");
        let count = self.node_count();
        for item in spec.split(',') {
            let (a, b, d) =
                parse_distance(item).ok_or_else(|| bad(format!("`{item}` is not A-B=DISTANCE (e.g. 0-1=20)")))?;
            if let Some(n) = [a, b].into_iter().find(|&n| n >= count) {
                return Err(bad(format!(
                    "node {n} does not exist: --numa {} gives nodes 0-{}",
                    self.spec,
                    count - 1
                )));
            }
            if a == b {
                if d != u32::from(LOCAL_DISTANCE) {
                    return Err(bad(format!(
                        "`{item}`: a node's distance to itself is {LOCAL_DISTANCE}"
                    )));
                }
                continue;
            }
            let d = u8::try_from(d).ok().filter(|&d| d > LOCAL_DISTANCE).ok_or_else(|| {
                bad(format!(
                    "`{item}`: distances between different nodes are {} to 255 ({LOCAL_DISTANCE} is a node's own)",
                    LOCAL_DISTANCE + 1
                ))
            })?;
            let key = (a.min(b), a.max(b));
            if let Some(first) = self.distances.insert(key, d).filter(|&f| f != d) {
                return Err(bad(format!(
                    "{}-{} given as {first} and as {d}: distances are symmetric, give each pair once",
                    key.0, key.1
                )));
            }
        }
        Ok(())
    }

    /// Checks the nodes against `--smp` and the granule's memory block, before anything is
    /// built. One line naming the value and what would be accepted.
    pub fn check(&self, granule: Granule, smp: u32) -> Result<(), String> {
        let bad = |e: String| format!("--numa {}: {e}", self.spec);
        let block = granule.memory_block_size();
        for (n, node) in self.nodes.iter().enumerate() {
            if !node.mem.is_multiple_of(block) {
                return Err(bad(format!(
                    "node {n}'s {} is not a multiple of {} (the {granule} granule's memory block: a block belongs to one node), e.g. {}",
                    Size(node.mem),
                    Size(block),
                    Size(node.mem.next_multiple_of(block))
                )));
            }
            if let Some(&c) = node.cpus.iter().flatten().find(|&&c| c >= smp) {
                return Err(bad(format!(
                    "cpu {c} of node {n} does not exist: --smp {smp} gives cpus 0-{}",
                    smp - 1
                )));
            }
        }
        if self.explicit_cpus() {
            if let Some(c) = (0..smp).find(|c| !self.nodes.iter().any(|n| n.cpus.iter().flatten().any(|x| x == c))) {
                return Err(bad(format!(
                    "cpu {c} is in no node: with cpus= given, list each of the cpus 0-{} (--smp {smp}) once",
                    smp - 1
                )));
            }
        }
        Ok(())
    }

    /// How many nodes the machine has.
    pub fn node_count(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// Boot memory of all nodes (QEMU's `-m` must equal it).
    pub fn total_mem(&self) -> u64 {
        self.nodes.iter().map(|n| n.mem).sum()
    }

    fn explicit_cpus(&self) -> bool {
        self.nodes.iter().any(|n| n.cpus.is_some())
    }

    /// Each node's CPUs for `smp` CPUs: as given, or round-robin over the nodes with memory.
    pub fn node_cpus(&self, smp: u32) -> Vec<Vec<u32>> {
        if self.explicit_cpus() {
            return self.nodes.iter().map(|n| n.cpus.clone().unwrap_or_default()).collect();
        }
        let with_mem: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.nodes[n].mem > 0).collect();
        let mut out = vec![Vec::new(); self.nodes.len()];
        for c in 0..smp {
            out[with_mem[c as usize % with_mem.len()]].push(c);
        }
        out
    }

    /// The distance between two different nodes: `--numa-dist`'s, else 20.
    pub fn distance(&self, a: u32, b: u32) -> u8 {
        if a == b {
            return LOCAL_DISTANCE;
        }
        self.distances
            .get(&(a.min(b), a.max(b)))
            .copied()
            .unwrap_or(DEFAULT_DISTANCE)
    }

    /// QEMU's arguments for the nodes: a `memory-backend-ram` `node<N>` per node with memory,
    /// `-numa node,...` per node, and, when `--numa-dist` is given, `-numa dist` for every pair.
    pub fn qemu_args(&self, smp: u32) -> Vec<String> {
        let mut a = Vec::new();
        for (n, node) in self.nodes.iter().enumerate() {
            if node.mem > 0 {
                a.extend([
                    "-object".to_string(),
                    format!("memory-backend-ram,id=node{n},size={}", node.mem),
                ]);
            }
        }
        for (n, cpus) in self.node_cpus(smp).iter().enumerate() {
            let mut v = format!("node,nodeid={n}");
            for (first, last) in runs(cpus) {
                match first == last {
                    true => v.push_str(&format!(",cpus={first}")),
                    false => v.push_str(&format!(",cpus={first}-{last}")),
                }
            }
            if self.nodes[n].mem > 0 {
                v.push_str(&format!(",memdev=node{n}"));
            }
            a.extend(["-numa".to_string(), v]);
        }
        if !self.distances.is_empty() {
            let count = self.node_count();
            for src in 0..count {
                for dst in src + 1..count {
                    a.extend([
                        "-numa".to_string(),
                        format!("dist,src={src},dst={dst},val={}", self.distance(src, dst)),
                    ]);
                }
            }
        }
        a
    }
}

/// `SIZE[:cpus=LIST]`.
fn parse_node(item: &str) -> Result<NumaNode, String> {
    let mut parts = item.split(':');
    let size = parts.next().unwrap_or("").trim();
    if size.is_empty() {
        return Err("empty (each node is SIZE or SIZE:cpus=LIST, e.g. 1G:cpus=0-1)".into());
    }
    let mem = mm::size::parse_size(size).map_err(|_| format!("`{size}` is not a size (examples: 1G, 512M, 0)"))?;
    let mut cpus: Option<Vec<u32>> = None;
    for opt in parts {
        match opt.split_once('=') {
            Some(("cpus", list)) => {
                let l = parse_cpu_list(list).ok_or_else(|| {
                    format!("`{list}` is not a CPU list (numbers and ranges joined by +, e.g. 0-1+4)")
                })?;
                cpus.get_or_insert_with(Vec::new).extend(l);
            }
            _ => return Err(format!("unknown `{opt}` (expected cpus=LIST, e.g. cpus=0-1+4)")),
        }
    }
    Ok(NumaNode { mem, cpus })
}

/// `0-1+4` → `[0, 1, 4]`; `None` when not of that grammar (or a range runs backwards).
fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.split('+') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let c = part.trim().parse::<u32>().ok()?;
                (c, c)
            }
        };
        if last < first || last - first > 4096 {
            return None;
        }
        out.extend(first..=last);
    }
    Some(out)
}

/// `A-B=D`.
fn parse_distance(item: &str) -> Option<(u32, u32, u32)> {
    let (pair, d) = item.split_once('=')?;
    let (a, b) = pair.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, d.trim().parse().ok()?))
}

/// Sorted runs of consecutive numbers, each number once: `[0, 1, 2, 5]` → `[(0, 2), (5, 5)]`.
fn runs(cpus: &[u32]) -> Vec<(u32, u32)> {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for c in sorted {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == c => *last = c,
            _ => out.push((c, c)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn args(spec: &str, dist: Option<&str>, smp: u32) -> String {
        let mut n = Numa::parse(spec).unwrap();
        if let Some(d) = dist {
            n.set_distances(d).unwrap();
        }
        n.check(Granule::K4, smp).unwrap();
        n.qemu_args(smp).join(" ")
    }

    #[test]
    fn nodes_become_backends_and_numa_nodes() {
        assert_eq!(
            args("1G,1G,0", None, 4),
            "-object memory-backend-ram,id=node0,size=1073741824 -object memory-backend-ram,id=node1,size=1073741824 \
             -numa node,nodeid=0,cpus=0,cpus=2,memdev=node0 -numa node,nodeid=1,cpus=1,cpus=3,memdev=node1 \
             -numa node,nodeid=2"
        );
        assert_eq!(
            args("1G:cpus=0-2+5,0:cpus=3-4", None, 6),
            "-object memory-backend-ram,id=node0,size=1073741824 -numa node,nodeid=0,cpus=0-2,cpus=5,memdev=node0 \
             -numa node,nodeid=1,cpus=3-4"
        );
        let n = Numa::parse("512M,0,1536M").unwrap();
        assert_eq!((n.node_count(), n.total_mem()), (3, 2 * GIB));
        assert_eq!(n.node_cpus(3), [vec![0, 2], vec![], vec![1]]);
    }

    #[test]
    fn distances_fill_every_pair() {
        assert_eq!(
            args("1G,1G,0", Some("0-2=30,1-1=10,2-1=25"), 2)
                .split(" -numa dist")
                .skip(1)
                .collect::<Vec<_>>(),
            [",src=0,dst=1,val=20", ",src=0,dst=2,val=30", ",src=1,dst=2,val=25"]
        );
        assert!(!args("1G,1G", None, 2).contains("dist"), "no map unless asked for");
        let mut n = Numa::parse("1G,1G").unwrap();
        n.set_distances("0-1=20").unwrap();
        n.set_distances("1-0=20").unwrap();
        assert_eq!(n.distance(1, 0), 20);
    }

    /// Every value QEMU or the kernel would refuse is refused here, with one line naming it.
    #[test]
    fn bad_values_name_what_is_wrong() {
        let parse = |s: &str| Numa::parse(s).unwrap_err();
        let cases = [
            (
                parse("1G,,0"),
                "--numa 1G,,0: node 1: empty (each node is SIZE or SIZE:cpus=LIST",
            ),
            (parse("1X"), "node 0: `1X` is not a size"),
            (parse("1G:cpu=0"), "node 0: unknown `cpu=0` (expected cpus=LIST"),
            (parse("1G:cpus=2-1"), "node 0: `2-1` is not a CPU list"),
            (parse("1G:cpus=a"), "`a` is not a CPU list"),
            (
                parse("1G,1G,1G,1G,1G,1G,1G,1G,1G"),
                "9 nodes, but the kernel supports at most 8",
            ),
            (parse("0,0"), "no node has memory"),
            (
                parse("1G:cpus=0-1,1G:cpus=1"),
                "cpu 1 is in node 0 and in node 1: a CPU belongs to one node",
            ),
        ];
        for (e, want) in cases {
            assert!(e.contains(want) && !e.contains('\n'), "{e}\nwant: {want}");
        }
        let check = |s: &str, g: Granule, smp: u32| Numa::parse(s).unwrap().check(g, smp).unwrap_err();
        for (e, want) in [
            (
                check("1G,100M", Granule::K4, 2),
                "node 1's 100M is not a multiple of 128M (the 4k granule's memory block",
            ),
            (
                check("1G,256M", Granule::K64, 2),
                "node 1's 256M is not a multiple of 512M",
            ),
            (
                check("1G:cpus=0-4", Granule::K4, 4),
                "cpu 4 of node 0 does not exist: --smp 4 gives cpus 0-3",
            ),
            (
                check("1G:cpus=0,1G:cpus=2", Granule::K4, 3),
                "cpu 1 is in no node: with cpus= given, list each of the cpus 0-2 (--smp 3) once",
            ),
        ] {
            assert!(e.contains(want) && !e.contains('\n'), "{e}\nwant: {want}");
        }
        let dist = |d: &str| Numa::parse("1G,1G,0").unwrap().set_distances(d).unwrap_err();
        for (e, want) in [
            (dist("0-1"), "--numa-dist 0-1: `0-1` is not A-B=DISTANCE (e.g. 0-1=20)"),
            (dist("0-3=20"), "node 3 does not exist: --numa 1G,1G,0 gives nodes 0-2"),
            (dist("1-1=20"), "`1-1=20`: a node's distance to itself is 10"),
            (
                dist("0-1=10"),
                "`0-1=10`: distances between different nodes are 11 to 255",
            ),
            (dist("0-1=256"), "are 11 to 255"),
            (
                dist("0-1=20,1-0=30"),
                "0-1 given as 20 and as 30: distances are symmetric",
            ),
        ] {
            assert!(e.contains(want) && !e.contains('\n'), "{e}\nwant: {want}");
        }
    }

    #[test]
    fn cpu_lists_and_runs() {
        assert_eq!(parse_cpu_list("0-1+4"), Some(vec![0, 1, 4]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("0-99999"), None);
        assert_eq!(runs(&[5, 0, 1, 2]), [(0, 2), (5, 5)]);
        assert_eq!(runs(&[1, 0, 1]), [(0, 1)], "a CPU named twice in its node");
    }
}
