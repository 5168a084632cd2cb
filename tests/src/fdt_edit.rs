//! A flattened device tree (DTB) as an editable tree: decoded from the blob, changed (a
//! property set or removed, a node removed), and encoded again, compact (no free space, no
//! NOP tokens). The tests use it to hand the kernel device trees QEMU cannot produce. Only
//! what a QEMU `virt` dump holds is supported: version 17 blobs, one memory reservation block.

use std::fmt;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
const HEADER_LEN: usize = 40;

/// Why a blob could not be decoded, or an edit names nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdtError(pub String);

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FdtError {}

fn err<T>(what: impl Into<String>) -> Result<T, FdtError> {
    Err(FdtError(what.into()))
}

/// One node: its name (`cpu@1`; the root's is empty), properties in order, children in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub props: Vec<(String, Vec<u8>)>,
    pub children: Vec<Node>,
}

/// A decoded device tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fdt {
    pub boot_cpuid: u32,
    /// The memory reservation block's entries (address, size), without the terminator.
    pub reserved: Vec<(u64, u64)>,
    pub root: Node,
}

fn be32(b: &[u8], at: usize) -> Result<u32, FdtError> {
    match b.get(at..at + 4) {
        Some(w) => Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]])),
        None => err(format!("truncated at byte {at:#x}")),
    }
}

fn be64(b: &[u8], at: usize) -> Result<u64, FdtError> {
    Ok((u64::from(be32(b, at)?) << 32) | u64::from(be32(b, at + 4)?))
}

fn c_string(b: &[u8], at: usize) -> Result<(String, usize), FdtError> {
    let tail = b.get(at..).unwrap_or(&[]);
    let Some(len) = tail.iter().position(|&c| c == 0) else {
        return err(format!("unterminated string at byte {at:#x}"));
    };
    Ok((String::from_utf8_lossy(&tail[..len]).into_owned(), len))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Fdt {
    /// Decodes a DTB (NOP tokens are dropped).
    pub fn decode(blob: &[u8]) -> Result<Fdt, FdtError> {
        if be32(blob, 0)? != MAGIC {
            return err("not a device tree blob (bad magic)");
        }
        let field = |i: usize| be32(blob, 4 * i).map(|v| v as usize);
        let (total, off_struct, off_strings, off_rsv) = (field(1)?, field(2)?, field(3)?, field(4)?);
        if total > blob.len() {
            return err(format!("totalsize {total} exceeds the blob's {} bytes", blob.len()));
        }
        let mut reserved = Vec::new();
        let mut at = off_rsv;
        loop {
            let (addr, size) = (be64(blob, at)?, be64(blob, at + 8)?);
            at += 16;
            if addr == 0 && size == 0 {
                break;
            }
            reserved.push((addr, size));
        }
        let mut stack: Vec<Node> = Vec::new();
        let mut root = None;
        let mut at = off_struct;
        loop {
            let token = be32(blob, at)?;
            at += 4;
            match token {
                BEGIN_NODE => {
                    let (name, len) = c_string(blob, at)?;
                    at = align4(at + len + 1);
                    stack.push(Node {
                        name,
                        ..Node::default()
                    });
                }
                END_NODE => {
                    let Some(node) = stack.pop() else {
                        return err(format!("END_NODE without a node at byte {:#x}", at - 4));
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => root = Some(node),
                    }
                }
                PROP => {
                    let (len, nameoff) = (be32(blob, at)? as usize, be32(blob, at + 4)? as usize);
                    let (name, _) = c_string(blob, off_strings + nameoff)?;
                    let Some(value) = blob.get(at + 8..at + 8 + len) else {
                        return err(format!("property {name} runs past the blob"));
                    };
                    let Some(node) = stack.last_mut() else {
                        return err(format!("property {name} outside a node"));
                    };
                    node.props.push((name, value.to_vec()));
                    at = align4(at + 8 + len);
                }
                NOP => {}
                END => break,
                t => return err(format!("unknown token {t:#x} at byte {:#x}", at - 4)),
            }
        }
        let Some(root) = root.filter(|_| stack.is_empty()) else {
            return err("the structure block does not close its root node");
        };
        Ok(Fdt {
            boot_cpuid: be32(blob, 28)?,
            reserved,
            root,
        })
    }

    /// Encodes the tree as a version 17 blob with no free space.
    pub fn encode(&self) -> Vec<u8> {
        let mut strings: Vec<u8> = Vec::new();
        let mut structure: Vec<u8> = Vec::new();
        fn put(out: &mut Vec<u8>, v: u32) {
            out.extend_from_slice(&v.to_be_bytes());
        }
        fn pad(out: &mut Vec<u8>) {
            out.resize(align4(out.len()), 0);
        }
        fn node(n: &Node, out: &mut Vec<u8>, strings: &mut Vec<u8>) {
            put(out, BEGIN_NODE);
            out.extend_from_slice(n.name.as_bytes());
            out.push(0);
            pad(out);
            for (name, value) in &n.props {
                let off = find_string(strings, name);
                put(out, PROP);
                put(out, value.len() as u32);
                put(out, off as u32);
                out.extend_from_slice(value);
                pad(out);
            }
            for c in &n.children {
                node(c, out, strings);
            }
            put(out, END_NODE);
        }
        fn find_string(strings: &mut Vec<u8>, name: &str) -> usize {
            let mut at = 0;
            while at < strings.len() {
                let end = at + strings[at..].iter().position(|&c| c == 0).unwrap_or(0);
                if &strings[at..end] == name.as_bytes() {
                    return at;
                }
                at = end + 1;
            }
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            at
        }
        node(&self.root, &mut structure, &mut strings);
        put(&mut structure, END);
        let off_rsv = HEADER_LEN.next_multiple_of(8);
        let off_struct = off_rsv + 16 * (self.reserved.len() + 1);
        let off_strings = off_struct + structure.len();
        let total = off_strings + strings.len();
        let mut out = Vec::with_capacity(total);
        for v in [
            MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            self.boot_cpuid,
            strings.len() as u32,
            structure.len() as u32,
        ] {
            put(&mut out, v);
        }
        out.resize(off_rsv, 0);
        for &(a, s) in self.reserved.iter().chain([(0, 0)].iter()) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&structure);
        out.extend_from_slice(&strings);
        out
    }

    /// The node at `path` (`/cpus/cpu@1`; `/` is the root).
    pub fn node_mut(&mut self, path: &str) -> Result<&mut Node, FdtError> {
        let mut n = &mut self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let Some(c) = n.children.iter_mut().find(|c| c.name == part) else {
                return err(format!("no node {path} (no {part})"));
            };
            n = c;
        }
        Ok(n)
    }

    /// The value of `path`'s property `name`.
    pub fn prop(&mut self, path: &str, name: &str) -> Result<Vec<u8>, FdtError> {
        let n = self.node_mut(path)?;
        match n.props.iter().find(|(p, _)| p == name) {
            Some((_, v)) => Ok(v.clone()),
            None => err(format!("no property {name} in {path}")),
        }
    }

    /// Sets (replaces or adds) `path`'s property `name`.
    pub fn set_prop(&mut self, path: &str, name: &str, value: Vec<u8>) -> Result<(), FdtError> {
        let n = self.node_mut(path)?;
        match n.props.iter_mut().find(|(p, _)| p == name) {
            Some((_, v)) => *v = value,
            None => n.props.push((name.into(), value)),
        }
        Ok(())
    }

    /// Sets `path`'s property `name` to one u32 cell.
    pub fn set_u32(&mut self, path: &str, name: &str, value: u32) -> Result<(), FdtError> {
        self.set_prop(path, name, value.to_be_bytes().to_vec())
    }

    /// Removes `path`'s property `name` (an error when it has none).
    pub fn remove_prop(&mut self, path: &str, name: &str) -> Result<(), FdtError> {
        let n = self.node_mut(path)?;
        let before = n.props.len();
        n.props.retain(|(p, _)| p != name);
        match n.props.len() < before {
            true => Ok(()),
            false => err(format!("no property {name} in {path}")),
        }
    }

    /// Removes the root's children whose name starts with `prefix`; how many went.
    pub fn remove_root_children(&mut self, prefix: &str) -> usize {
        let before = self.root.children.len();
        self.root.children.retain(|c| !c.name.starts_with(prefix));
        before - self.root.children.len()
    }
}

/// A property value of u32 cells.
pub fn cells(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// A property value as u32 cells (a trailing partial cell is dropped).
pub fn to_cells(v: &[u8]) -> Vec<u32> {
    v.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fdt {
        Fdt {
            boot_cpuid: 0,
            reserved: vec![(0x1000, 0x2000)],
            root: Node {
                name: String::new(),
                props: vec![("#address-cells".into(), cells(&[2]))],
                children: vec![
                    Node {
                        name: "memory@40000000".into(),
                        props: vec![("device_type".into(), b"memory\0".to_vec())],
                        children: vec![],
                    },
                    Node {
                        name: "cpus".into(),
                        props: vec![],
                        children: vec![Node {
                            name: "cpu@0".into(),
                            props: vec![
                                ("device_type".into(), b"cpu\0".to_vec()),
                                ("numa-node-id".into(), cells(&[0])),
                            ],
                            children: vec![],
                        }],
                    },
                ],
            },
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let f = sample();
        let blob = f.encode();
        assert_eq!(be32(&blob, 4).unwrap() as usize, blob.len());
        assert_eq!(Fdt::decode(&blob).unwrap(), f);
    }

    #[test]
    fn nops_are_dropped() {
        let blob = sample().encode();
        let off_struct = be32(&blob, 8).unwrap() as usize;
        let mut with_nops = blob[..off_struct + 4 + 4].to_vec();
        with_nops.extend_from_slice(&NOP.to_be_bytes());
        with_nops.extend_from_slice(&blob[off_struct + 8..]);
        let delta = 4u32;
        let bump = |b: &mut Vec<u8>, i: usize| {
            let v = be32(b, 4 * i).unwrap() + delta;
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
        };
        for i in [1, 3, 9] {
            bump(&mut with_nops, i);
        }
        assert_eq!(Fdt::decode(&with_nops).unwrap(), sample());
    }

    #[test]
    fn edits() {
        let mut f = sample();
        f.set_u32("/cpus/cpu@0", "numa-node-id", 9).unwrap();
        assert_eq!(to_cells(&f.prop("/cpus/cpu@0", "numa-node-id").unwrap()), [9]);
        f.remove_prop("/cpus/cpu@0", "numa-node-id").unwrap();
        assert!(f.prop("/cpus/cpu@0", "numa-node-id").is_err());
        assert_eq!(
            f.remove_prop("/cpus/cpu@0", "numa-node-id").unwrap_err().to_string(),
            "no property numa-node-id in /cpus/cpu@0"
        );
        assert_eq!(
            f.node_mut("/cpus/cpu@7").unwrap_err().to_string(),
            "no node /cpus/cpu@7 (no cpu@7)"
        );
        assert_eq!(f.remove_root_children("memory@"), 1);
        let again = Fdt::decode(&f.encode()).unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Fdt::decode(&[0; 8]).is_err());
        let blob = sample().encode();
        assert!(Fdt::decode(&blob[..blob.len() / 2]).is_err());
    }
}
