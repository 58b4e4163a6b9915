//! Python's `random.Random(seed)`: MT19937 seeded with `init_by_array` over the seed's 32-bit
//! words, and `choice`'s `_randbelow` (rejection sampling on `getrandbits(bit_length(n))`).
//! Fooocus draws wildcards and "Random Style" from it, so the same seed must give the same picks.

use focal_mt19937::Mt19937;

#[derive(Clone)]
pub struct PyRandom {
    mt: Mt19937,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed: `init_by_array` over its 32-bit
    /// words, low word first.
    pub fn new(seed: u64) -> Self {
        let key: Vec<u32> = if seed >> 32 == 0 { vec![seed as u32] } else { vec![seed as u32, (seed >> 32) as u32] };
        Self { mt: Mt19937::from_key(&key) }
    }

    /// `genrand_uint32`.
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// `getrandbits(k)` for `1 <= k <= 32`.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)`: the index `random.choice` picks from `n` items (0 when `n` is 0).
    pub fn below(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PyRandom;

    /// Expected values printed by CPython 3:
    /// `r = random.Random(12345); [r.getrandbits(32) for _ in range(3)]`, etc.
    #[test]
    fn matches_cpython() {
        let mut r = PyRandom::new(12345);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [1789368711, 3146859322, 43676229]);
        let mut r = PyRandom::new((1 << 40) + 7);
        assert_eq!([r.next_u32(), r.next_u32()], [2635837658, 3209733218]);
        // `r = random.Random(0); [r.choice(range(277)) for _ in range(5)]`
        let mut r = PyRandom::new(0);
        assert_eq!((0..5).map(|_| r.below(277)).collect::<Vec<_>>(), [197, 215, 20, 132, 261]);
        // `r = random.Random(2**63 - 1); [r.choice(range(17)) for _ in range(5)]`
        let mut r = PyRandom::new(i64::MAX as u64);
        assert_eq!((0..5).map(|_| r.below(17)).collect::<Vec<_>>(), [10, 4, 15, 14, 3]);
    }
}
