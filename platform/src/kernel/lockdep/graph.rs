//! The lock-order graph: one node per lock class, an edge `a → b` once some CPU took a lock of
//! class `b` while holding one of class `a`. Fixed size and allocation-free: it is updated from
//! inside other locks' acquisition, where the heap may be the lock being taken.

/// Most lock classes the graph holds (one bit each in a row of [`Graph`]).
pub const MAX_CLASSES: usize = 64;

/// Class names by id, and for each class the set of classes taken while holding it.
#[derive(Clone)]
pub struct Graph {
    names: [&'static str; MAX_CLASSES],
    count: usize,
    after: [u64; MAX_CLASSES],
}

/// A path of class ids through the graph, its first and last class included.
pub struct Chain {
    ids: [u8; MAX_CLASSES],
    len: usize,
}

impl Chain {
    /// The class ids from the first class to the last.
    pub fn ids(&self) -> &[u8] {
        &self.ids[..self.len]
    }
}

impl Graph {
    pub const fn new() -> Self {
        Graph {
            names: [""; MAX_CLASSES],
            count: 0,
            after: [0; MAX_CLASSES],
        }
    }

    /// The id of the class called `name`, a new one for a name not seen yet; `None` once
    /// [`MAX_CLASSES`] classes exist.
    pub fn intern(&mut self, name: &'static str) -> Option<u8> {
        if let Some(i) = self.names[..self.count].iter().position(|&n| n == name) {
            return u8::try_from(i).ok();
        }
        if self.count == MAX_CLASSES {
            return None;
        }
        self.names[self.count] = name;
        self.count += 1;
        u8::try_from(self.count - 1).ok()
    }

    pub fn name(&self, id: u8) -> &'static str {
        self.names[usize::from(id)]
    }

    /// The row of `a`: bit `b` set when `a → b` is recorded.
    pub fn row(&self, a: u8) -> u64 {
        self.after[usize::from(a)]
    }

    pub fn add(&mut self, a: u8, b: u8) {
        self.after[usize::from(a)] |= 1 << b;
    }

    /// A shortest chain of recorded edges from `from` to `to` (breadth first), if one exists.
    pub fn path(&self, from: u8, to: u8) -> Option<Chain> {
        let mut parent = [u8::MAX; MAX_CLASSES];
        let mut queue = [0u8; MAX_CLASSES];
        let (mut head, mut tail) = (0, 1);
        let mut seen: u64 = 1 << from;
        queue[0] = from;
        while head < tail {
            let c = queue[head];
            head += 1;
            if c == to {
                return Some(self.chain_to(&parent, from, to));
            }
            let mut next = self.row(c) & !seen;
            seen |= next;
            while next != 0 {
                let n = next.trailing_zeros() as u8;
                next &= next - 1;
                parent[usize::from(n)] = c;
                queue[tail] = n;
                tail += 1;
            }
        }
        None
    }

    /// The chain `from → … → to` read back through the search's `parent` links.
    fn chain_to(&self, parent: &[u8; MAX_CLASSES], from: u8, to: u8) -> Chain {
        let mut rev = Chain {
            ids: [0; MAX_CLASSES],
            len: 0,
        };
        let mut c = to;
        loop {
            rev.ids[rev.len] = c;
            rev.len += 1;
            if c == from || rev.len == MAX_CLASSES {
                break;
            }
            c = parent[usize::from(c)];
        }
        rev.ids[..rev.len].reverse();
        rev
    }

    /// Every recorded edge `(a, b)`, by class id.
    pub fn edges(&self) -> impl Iterator<Item = (u8, u8)> + '_ {
        (0..self.count as u8).flat_map(move |a| {
            let row = self.row(a);
            (0..self.count as u8)
                .filter(move |&b| row & (1 << b) != 0)
                .map(move |b| (a, b))
        })
    }

    /// `a → b → c` for a chain of class ids.
    pub fn write_chain(&self, f: &mut core::fmt::Formatter<'_>, ids: &[u8]) -> core::fmt::Result {
        for (i, &c) in ids.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            f.write_str(self.name(c))?;
        }
        Ok(())
    }
}
