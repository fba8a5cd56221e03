//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI'16, section 3.4).
//!
//! The lookup table has a prime number `M` of slots. Every backend derives a
//! permutation of the slots from its name:
//!
//! ```text
//! offset = h(name, SEED_OFFSET) mod M
//! skip   = h(name, SEED_SKIP) mod (M - 1) + 1
//! permutation[j] = (offset + j * skip) mod M
//! ```
//!
//! Because `M` is prime and `1 <= skip < M`, each permutation visits every
//! slot exactly once. Backends then take turns, each claiming the next slot
//! of its own permutation that is still free, until the table is full. Every
//! backend claims exactly one slot per round, so with equal weights the slot
//! counts of any two backends differ by at most one, and removing a backend
//! mostly moves only the slots it owned.
//!
//! # Determinism
//!
//! The hash ([`lb_common::hash::hash_bytes64`]) and its seeds are fixed, and
//! backends take their turns in a canonical order (sorted by key, byte-wise)
//! rather than in the order the caller lists them. Two gateways with the same
//! set of backend keys therefore build the same table, whatever order their
//! configuration lists the backends in; only the indices written into the
//! table follow the caller's order.

use lb_common::hash::hash_bytes64;

/// Seed of the hash that gives a backend's starting slot (`offset`).
pub const SEED_OFFSET: u64 = 0x6d61_676c_6576_6f66; // "maglevof"

/// Seed of the hash that gives a backend's stride (`skip`).
pub const SEED_SKIP: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// Why a Maglev table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The table size is not a prime number (permutations would not cover
    /// every slot).
    #[error("Maglev table size {0} is not prime")]
    SizeNotPrime(u32),
    /// There are at least as many backends as slots.
    #[error("{backends} backends do not fit a Maglev table of {size} slots (need fewer backends than slots)")]
    TooManyBackends {
        /// Number of backend keys given.
        backends: usize,
        /// Table size asked for.
        size: u32,
    },
    /// The same key was given twice; keys must identify backends uniquely.
    #[error("duplicate Maglev backend key {0:?}")]
    DuplicateKey(String),
}

/// Whether `n` is a prime number (deterministic trial division by 2 and the
/// odd numbers; at most about 33 000 divisions for any `u32`).
pub fn is_prime(n: u32) -> bool {
    let n = u64::from(n);
    if n < 2 {
        return false;
    }
    // Divisors 2, 3, 5, 7, 9, ... up to the square root.
    let mut d: u64 = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += if d == 2 { 1 } else { 2 };
    }
    true
}

/// One backend's walk through its permutation of the slots.
struct Walker {
    /// Slot the permutation is at now: `(offset + next * skip) mod M`.
    pos: u32,
    /// Stride of the permutation, in `1..M`.
    skip: u32,
    /// Index of this backend in the caller's `keys`.
    index: u32,
}

/// Marks a slot nobody has claimed yet.
const EMPTY: u32 = u32::MAX;

/// Builds a Maglev lookup table of `size` slots for backends identified by
/// stable string keys.
///
/// Returns, for each slot, the index into `keys` of the backend owning it, or
/// `Ok(None)` if `keys` is empty (there is nothing to balance to). The table
/// depends only on the *set* of keys and on `size`, not on the order of
/// `keys` (see the [module documentation](self)); with equal weights every
/// backend owns `size / keys.len()` slots, rounded up or down.
///
/// # Errors
///
/// Never panics on bad input; instead returns
/// - [`MaglevError::SizeNotPrime`] if `size` is not prime (checked first, so
///   even for empty `keys`),
/// - [`MaglevError::TooManyBackends`] if `keys.len() >= size`,
/// - [`MaglevError::DuplicateKey`] if a key appears more than once.
///
/// # Cost
///
/// `O(N log N + M log M)` expected for `N` backends and `M` slots, one
/// `M`-sized allocation plus one `N`-sized one; a 65537-slot table for 1000
/// backends takes a few milliseconds in a release build.
pub fn build_table(keys: &[&str], size: u32) -> Result<Option<Vec<u32>>, MaglevError> {
    if !is_prime(size) {
        return Err(MaglevError::SizeNotPrime(size));
    }
    if keys.len() >= size as usize {
        return Err(MaglevError::TooManyBackends {
            backends: keys.len(),
            size,
        });
    }
    if keys.is_empty() {
        return Ok(None);
    }

    // Canonical turn order: sorted by key. `keys.len() < size <= u32::MAX`,
    // so every index fits a u32 (and never equals EMPTY).
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| keys[a as usize].cmp(keys[b as usize]));
    if let Some(w) = order
        .windows(2)
        .find(|w| keys[w[0] as usize] == keys[w[1] as usize])
    {
        return Err(MaglevError::DuplicateKey(keys[w[0] as usize].to_owned()));
    }

    let m = u64::from(size);
    let mut walkers: Vec<Walker> = order
        .iter()
        .map(|&index| {
            let key = keys[index as usize].as_bytes();
            // Both results are < size, so they fit a u32.
            let offset = (hash_bytes64(key, SEED_OFFSET) % m) as u32;
            let skip = (hash_bytes64(key, SEED_SKIP) % (m - 1) + 1) as u32;
            Walker {
                pos: offset,
                skip,
                index,
            }
        })
        .collect();

    let mut table = vec![EMPTY; size as usize];
    let mut filled: u32 = 0;
    'rounds: loop {
        for w in walkers.iter_mut() {
            // The table is not full, so this finds a free slot within at
            // most `size` steps: the permutation visits every slot.
            while table[w.pos as usize] != EMPTY {
                w.advance(size);
            }
            table[w.pos as usize] = w.index;
            w.advance(size);
            filled += 1;
            if filled == size {
                break 'rounds;
            }
        }
    }
    Ok(Some(table))
}

impl Walker {
    /// Moves to the next slot of the permutation: `pos = (pos + skip) mod m`
    /// without a division (`pos, skip < m`, so the sum is below `2m`).
    #[inline(always)]
    fn advance(&mut self, m: u32) {
        let next = u64::from(self.pos) + u64::from(self.skip);
        let m = u64::from(m);
        self.pos = if next >= m { next - m } else { next } as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::MAGLEV_TABLE_SIZE;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cp-{i:02}.example:6443")).collect()
    }

    fn build(keys: &[String], size: u32) -> Vec<u32> {
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        build_table(&refs, size).unwrap().unwrap()
    }

    fn counts(table: &[u32], n: usize) -> Vec<u32> {
        let mut c = vec![0u32; n];
        for &i in table {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn is_prime_small_and_large() {
        let primes: Vec<u32> = (0..50).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            primes,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]
        );
        assert!(is_prime(65_537));
        assert!(is_prime(655_373));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(65_536));
        assert!(!is_prime(65_535));
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65_521 * 65_519)); // product of two large primes
    }

    #[test]
    fn every_slot_is_owned_by_a_given_backend() {
        let keys = names(7);
        let table = build(&keys, MAGLEV_TABLE_SIZE);
        assert_eq!(table.len(), MAGLEV_TABLE_SIZE as usize);
        assert!(table.iter().all(|&i| (i as usize) < keys.len()));
    }

    #[test]
    fn balanced_within_two_percent_and_within_one_slot() {
        let size = MAGLEV_TABLE_SIZE;
        for n in [1usize, 2, 3, 5, 7, 10, 100] {
            let table = build(&names(n), size);
            let c = counts(&table, n);
            let fair = f64::from(size) / n as f64;
            for &k in &c {
                assert!(
                    (f64::from(k) - fair).abs() / fair <= 0.02,
                    "n={n} counts={c:?}"
                );
            }
            // Round-robin claiming: counts differ by at most one.
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= 1, "n={n} min={lo} max={hi}");
            assert_eq!(c.iter().sum::<u32>(), size);
        }
    }

    #[test]
    fn removing_a_backend_moves_little_else() {
        let size = MAGLEV_TABLE_SIZE;
        for n in [3usize, 5, 10, 50] {
            let keys = names(n);
            let before = build(&keys, size);
            for removed in [0, n / 2, n - 1] {
                let rest: Vec<String> = keys
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != removed)
                    .map(|(_, k)| k.clone())
                    .collect();
                let after = build(&rest, size);
                let mut changed = 0u32;
                let mut collateral = 0u32;
                for (&b, &a) in before.iter().zip(&after) {
                    let (old, new) = (&keys[b as usize], &rest[a as usize]);
                    if old != new {
                        changed += 1;
                        if b as usize != removed {
                            collateral += 1;
                        }
                    }
                }
                let collateral_frac = f64::from(collateral) / f64::from(size);
                let changed_frac = f64::from(changed) / f64::from(size);
                let ideal = 1.0 / n as f64;
                assert!(
                    collateral_frac <= 0.02,
                    "n={n} removed={removed}: {collateral} slots of surviving backends moved"
                );
                assert!(
                    changed_frac >= ideal * 0.98 && changed_frac <= ideal + 0.02,
                    "n={n} removed={removed}: {changed_frac:.4} of slots moved, ideal {ideal:.4}"
                );
            }
        }
    }

    #[test]
    fn independent_of_input_order() {
        let keys = names(10);
        let forward = build(&keys, MAGLEV_TABLE_SIZE);
        let mut shuffled = keys.clone();
        shuffled.reverse();
        shuffled.swap(2, 7);
        let other = build(&shuffled, MAGLEV_TABLE_SIZE);
        for (&f, &o) in forward.iter().zip(&other) {
            assert_eq!(keys[f as usize], shuffled[o as usize]);
        }
        // And stable across calls.
        assert_eq!(forward, build(&keys, MAGLEV_TABLE_SIZE));
    }

    #[test]
    fn pinned_small_table() {
        // Changing the hash, the seeds or the walk changes every gateway's
        // choices (and moves connections on upgrade); this pins the result.
        let keys = names(3);
        assert_eq!(
            build(&keys, 13),
            [1, 0, 1, 0, 1, 2, 0, 2, 1, 2, 0, 2, 0],
            "Maglev table construction changed"
        );
    }

    #[test]
    fn empty_keys_give_none() {
        assert_eq!(build_table(&[], MAGLEV_TABLE_SIZE), Ok(None));
        assert_eq!(build_table(&[], 13), Ok(None));
    }

    #[test]
    fn bad_sizes_and_keys_are_rejected() {
        assert_eq!(
            build_table(&["a", "b"], 65_536),
            Err(MaglevError::SizeNotPrime(65_536))
        );
        assert_eq!(build_table(&[], 1), Err(MaglevError::SizeNotPrime(1)));
        assert_eq!(build_table(&["a"], 0), Err(MaglevError::SizeNotPrime(0)));
        assert_eq!(
            build_table(&["a", "b", "c"], 3),
            Err(MaglevError::TooManyBackends {
                backends: 3,
                size: 3
            })
        );
        assert_eq!(
            build_table(&["a", "b", "a"], 13),
            Err(MaglevError::DuplicateKey("a".into()))
        );
    }

    #[test]
    fn small_table_exhaustive() {
        // 13 slots, 3 backends: every slot filled, counts 5/4/4.
        let keys = ["alpha", "bravo", "charlie"];
        let table = build_table(&keys, 13).unwrap().unwrap();
        assert_eq!(table.len(), 13);
        let c = counts(&table, 3);
        let mut sorted = c.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [4, 4, 5], "{table:?}");
        // The extra slot goes to the first backend in canonical (sorted) order.
        assert_eq!(c[0], 5);

        // Every backend count and slot-filling holds for all sizes up to 64 slots.
        for size in (2..64u32).filter(|&s| is_prime(s)) {
            for n in 1..(size as usize).min(8) {
                let keys = names(n);
                let table = build(&keys, size);
                let c = counts(&table, n);
                let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
                assert!(hi - lo <= 1, "size={size} n={n} {c:?}");
                assert_eq!(c.iter().sum::<u32>(), size);
            }
        }
    }

    #[test]
    fn single_backend_owns_everything() {
        let table = build_table(&["only"], 13).unwrap().unwrap();
        assert_eq!(table, vec![0; 13]);
    }

    /// Run with `cargo test --release -p lb-userspace --lib maglev::tests::build_time -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; run in release"]
    fn build_time_1000_backends() {
        let keys = names(1000);
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let start = std::time::Instant::now();
        let runs = 20;
        for _ in 0..runs {
            let t = build_table(&refs, MAGLEV_TABLE_SIZE).unwrap().unwrap();
            std::hint::black_box(t);
        }
        let per = start.elapsed() / runs;
        println!("65537 slots, 1000 backends: {per:?} per table");
        assert!(per < std::time::Duration::from_millis(100));
    }
}
