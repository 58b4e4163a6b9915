//! Python's `random.Random(seed)`: MT19937 seeded with `init_by_array` over the seed's 32-bit
//! words, and `choice`'s `_randbelow` (rejection sampling on `getrandbits(bit_length(n))`).
//! Fooocus draws wildcards and "Random Style" from it, so the same seed must give the same picks.

const N: usize = 624;
const M: usize = 397;

#[derive(Clone)]
pub struct PyRandom {
    mt: Box<[u32; N]>,
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        let key: Vec<u32> = if seed >> 32 == 0 { vec![seed as u32] } else { vec![seed as u32, (seed >> 32) as u32] };
        let mut r = Self { mt: Box::new([0; N]), index: N };
        r.init_genrand(19_650_218);
        let mt = &mut r.mt;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_664_525)).wrapping_add(key[j]).wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1] ^ (self.mt[i - 1] >> 30);
            self.mt[i] = 1_812_433_253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for k in 0..N {
            let y = (self.mt[k] & UPPER) | (self.mt[(k + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `genrand_uint32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
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
