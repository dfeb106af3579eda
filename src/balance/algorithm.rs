//! Which usable backend gets the next request.
//!
//! The pool hands each algorithm the backends that are up and not draining,
//! with their effective weight (after slow start) and requests in flight.

/// How [`crate::balance::Pool::pick`] chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Each usable backend in turn, weights ignored.
    RoundRobin,
    /// nginx's smooth weighted round-robin. Every pick adds each backend's
    /// weight to its `current` score, takes the highest, and subtracts the
    /// total weight from the winner. Over one cycle of `total` picks each
    /// backend wins exactly `weight` times, but a heavy backend's score drops
    /// by the whole total when it wins, so its wins are spread through the
    /// cycle (weights 5,1,1 give `a a b a c a a`) instead of coming as a
    /// burst (`a a a a a b c`) that sends it five requests back to back.
    Weighted,
    /// The fewest requests in flight per unit of weight; ties go round-robin
    /// so equal backends share the load instead of the first taking it all.
    LeastConnections,
    /// Two distinct random usable backends; the one with fewer in flight per
    /// unit of weight. Nearly as good as least-connections and needs no scan
    /// (Mitzenmacher's "power of two choices").
    PowerOfTwo,
}

/// A usable backend as an algorithm sees it.
pub(crate) struct Candidate {
    /// Index in the pool.
    pub index: usize,
    /// Effective weight, at least 1.
    pub weight: u64,
    pub in_flight: u64,
}

/// What an algorithm keeps between picks.
pub(crate) struct PickState {
    /// Next index round-robin starts from.
    pub cursor: usize,
    /// Smooth WRR's `current` score, one per backend of the pool.
    pub current: Vec<i64>,
    pub rng: fastrand::Rng,
}

/// Whether `a` carries less load than `b`: `in_flight / weight` compared
/// by cross-multiplying, so no float and no rounding.
fn lighter(a: &Candidate, b: &Candidate) -> bool {
    a.in_flight * b.weight < b.in_flight * a.weight
}

impl Algorithm {
    /// The chosen candidate's pool index; `None` if `usable` is empty.
    /// `usable` is in pool order.
    pub(crate) fn choose(&self, usable: &[Candidate], state: &mut PickState) -> Option<usize> {
        if usable.is_empty() {
            return None;
        }
        // The first usable backend at or after the cursor, so round-robin
        // skips a down backend without giving its turn to its neighbour twice.
        let start = usable
            .iter()
            .position(|c| c.index >= state.cursor)
            .unwrap_or(0);
        let chosen = match self {
            Algorithm::RoundRobin => usable[start].index,
            Algorithm::Weighted => {
                let total: i64 = usable.iter().map(|c| c.weight as i64).sum();
                let mut best = &usable[0];
                for c in usable {
                    state.current[c.index] += c.weight as i64;
                    if state.current[c.index] > state.current[best.index] {
                        best = c;
                    }
                }
                state.current[best.index] -= total;
                best.index
            }
            Algorithm::LeastConnections => {
                let mut best = &usable[start];
                for k in 1..usable.len() {
                    let c = &usable[(start + k) % usable.len()];
                    if lighter(c, best) {
                        best = c;
                    }
                }
                best.index
            }
            Algorithm::PowerOfTwo => {
                if usable.len() == 1 {
                    usable[0].index
                } else {
                    let a = state.rng.usize(..usable.len());
                    // A second index distinct from the first.
                    let b = (a + 1 + state.rng.usize(..usable.len() - 1)) % usable.len();
                    let (a, b) = (&usable[a], &usable[b]);
                    if lighter(b, a) {
                        b.index
                    } else {
                        a.index
                    }
                }
            }
        };
        state.cursor = chosen + 1;
        Some(chosen)
    }
}
