//! The up/down state machine of HAProxy's `check inter <i> rise <r> fall <f>`.
//!
//! A backend does not flip on one result: it goes down after `fall`
//! consecutive failures and comes back after `rise` consecutive successes,
//! so one lost packet does not empty a pool and one lucky answer does not
//! send traffic to a server still starting. HAProxy's defaults are
//! `inter 2s rise 2 fall 3`, and a server starts *up* (HAProxy then marks it
//! down after its first failed check only if it was configured to start
//! down); [`HealthRule::default`] uses the same numbers, and the pool starts
//! every backend up.
//!
//! Passive checks (HAProxy's `observe layer7` with `error-limit` and
//! `on-error mark-down`) feed live traffic's errors and timeouts into the
//! same failure count: `fall` of them in a row mark the backend down. As in
//! HAProxy, only active checks bring it back: a down backend gets no live
//! traffic, so live traffic cannot show it has recovered. A pool with no
//! checker therefore keeps a passively marked backend down until
//! [`crate::balance::Pool::mark_up`] is called.

/// How many results in a row change the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRule {
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

impl Default for HealthRule {
    /// HAProxy's defaults: `rise 2 fall 3`.
    fn default() -> Self {
        HealthRule { rise: 2, fall: 3 }
    }
}

/// One backend's health: its state and the streak of results against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    up: bool,
    /// Results in a row that disagree with the state (failures while up,
    /// successes while down); a result that agrees resets it.
    streak: u32,
}

/// A change of state caused by one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentDown,
    WentUp,
}

impl Health {
    /// A backend that starts up (HAProxy's default) or down.
    pub fn new(up: bool) -> Self {
        Health { up, streak: 0 }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Record an active check's result.
    pub fn check(&mut self, ok: bool, rule: HealthRule) -> Option<Transition> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { rule.fall } else { rule.rise };
        if self.streak < needed.max(1) {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok {
            Transition::WentUp
        } else {
            Transition::WentDown
        })
    }

    /// Record a live request's result. A failure counts towards `fall`; a
    /// success ends a failure streak but never counts towards `rise` (see
    /// the module's documentation).
    pub fn observe(&mut self, ok: bool, rule: HealthRule) -> Option<Transition> {
        if !self.up {
            return None;
        }
        self.check(ok, rule)
    }
}
