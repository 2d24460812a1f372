//! Deadlines by key: the transaction table's timers, and the B2BUA's (registration expiries,
//! call guards, session timers). The earliest is known without looking at every entry, so
//! `poll_timeout` and `handle_timeout` cost O(log n) per change instead of a scan of every
//! transaction, registration and call after every message (which took a quarter of the
//! signalling thread at 200 call set-ups a second, and which a gateway with tens of thousands
//! of registered browsers cannot afford).
//!
//! A heap with lazy deletion: changing or clearing a key's deadline leaves its old entry in
//! the heap, recognised as stale (the key's current deadline differs) and dropped when it
//! reaches the top. The top is kept current after every change, so [`Deadlines::next`] is a
//! peek. When stale entries outnumber the live ones the heap is rebuilt.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

struct Entry<K> {
    at: Instant,
    seq: u64,
    key: K,
}

impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reversed, the earliest deadline is on top.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<K> Eq for Entry<K> {}

/// See the module documentation.
pub struct Deadlines<K> {
    current: HashMap<K, Instant>,
    heap: BinaryHeap<Entry<K>>,
    seq: u64,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines { current: HashMap::new(), heap: BinaryHeap::new(), seq: 0 }
    }
}

impl<K: Clone + Eq + Hash> Deadlines<K> {
    /// Sets (or, with `None`, clears) `key`'s deadline; the key is cloned only when its
    /// deadline changes.
    pub fn set(&mut self, key: &K, at: Option<Instant>) {
        match (self.current.get_mut(key), at) {
            (Some(t), Some(at)) if *t == at => {}
            (Some(t), Some(at)) => {
                *t = at;
                self.push(key, at);
            }
            (None, Some(at)) => {
                self.current.insert(key.clone(), at);
                self.push(key, at);
            }
            (_, None) => {
                self.current.remove(key);
            }
        }
        if self.heap.len() > 64 && self.heap.len() > 2 * self.current.len() {
            self.rebuild();
        }
        self.settle();
    }

    fn push(&mut self, key: &K, at: Instant) {
        self.seq += 1;
        self.heap.push(Entry { at, seq: self.seq, key: key.clone() });
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// A key whose deadline is at or before `now`, earliest first; its deadline is cleared.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        if self.heap.peek().is_none_or(|e| e.at > now) {
            return None;
        }
        let e = self.heap.pop()?;
        // The top is current (settle), so this is the key's deadline.
        self.current.remove(&e.key);
        self.settle();
        Some(e.key)
    }

    fn is_current(&self, e: &Entry<K>) -> bool {
        self.current.get(&e.key) == Some(&e.at)
    }

    /// Drops stale entries from the top.
    fn settle(&mut self) {
        while self.heap.peek().is_some_and(|e| !self.is_current(e)) {
            self.heap.pop();
        }
    }

    fn rebuild(&mut self) {
        let heap = std::mem::take(&mut self.heap);
        let mut live: Vec<Entry<K>> = heap.into_vec();
        live.retain(|e| self.current.get(&e.key) == Some(&e.at));
        // A key set to the same deadline twice (t, t2, t again) has two current entries.
        live.sort_by(|a, b| b.cmp(a));
        live.dedup_by(|a, b| a.at == b.at && a.key == b.key);
        self.heap = BinaryHeap::from(live);
    }

    /// Entries in the heap, stale ones included.
    #[cfg(test)]
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Against a plain map scanned for its minimum, through sets, changes, clears and pops
    /// from a fixed pseudo-random sequence.
    #[test]
    fn the_next_deadline_is_the_earliest_set() {
        let t0 = Instant::now();
        let mut d: Deadlines<u32> = Deadlines::default();
        let mut model: HashMap<u32, Instant> = HashMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut now = t0;
        for step in 0..20_000 {
            let key = rand(500) as u32;
            match rand(10) {
                0..=5 => {
                    let at = now + Duration::from_millis(rand(10_000));
                    d.set(&key, Some(at));
                    model.insert(key, at);
                }
                6 => {
                    d.set(&key, None);
                    model.remove(&key);
                }
                _ => {
                    now += Duration::from_millis(rand(300));
                    while let Some(k) = d.pop_due(now) {
                        let at = model.remove(&k).unwrap_or_else(|| panic!("step {step}: {k} popped but not set"));
                        assert!(at <= now, "step {step}: {k} popped before its deadline");
                    }
                    assert!(model.values().all(|at| *at > now), "step {step}: a due key was not popped");
                }
            }
            assert_eq!(d.next(), model.values().min().copied(), "step {step}");
            assert!(d.heap_len() <= 2 * model.len() + 65, "step {step}: stale entries pile up ({} for {})", d.heap_len(), model.len());
        }
    }
}
