//! The ordering window: entries a consumer has already read, handed to its handler in
//! the handler's preferred order across two batches instead of one.
//!
//! A handler that would rather apply entries in some order (the identity merger: event
//! time) says where each delivery belongs ([`crate::Handler::order_key`]). When a read
//! returns a full batch, entries are waiting behind it (a backlog), so the runner does
//! not hand the whole batch over: it merges it with the entries it held back from the
//! previous read, sorts them by key, hands over all but the latest `batch_size` and
//! holds those back again, to be merged with the next read ([`split`]; one entry at most
//! [`MAX_HOLDS`] times). Under a backlog
//! that read returns at once (it is usually already made: read-ahead), so holding costs
//! the held entries one step and gains the next batch's earliest ones one step. A read
//! that is not full (no backlog: a steady rate's small batches), shutdown, or a read that
//! returns nothing hands every held entry over at once, so nothing waits for traffic
//! that is not already there.
//!
//! Held entries are pending on the consumer like any entry read and not yet
//! acknowledged: a consumer killed while holding them leaves them in the pending list,
//! where another replica claims them (or the same consumer re-reads them), and only the
//! step that commits an entry acknowledges it. Entries held for half of the claim
//! timeout or longer are not handed over from memory but re-read from the pending list,
//! like a batch read ahead (module doc of `consumer`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where a delivery belongs in a handler's preferred order: a time, then an id breaking
/// ties (the identity merger's canonical `(occurred_at, event_id)`).
pub type OrderKey = (DateTime<Utc>, Uuid);

/// How many steps one entry may be held back: an entry later in the handler's order
/// than a whole batch of entries read after it (a clock running ahead) goes at its third
/// split, so under a backlog no entry waits more than two steps longer than it would
/// without the window.
pub const MAX_HOLDS: u32 = 2;

/// Splits the entries in hand into those handed over now and those held back.
///
/// `held` are the entries held back by the previous split, each with how many times it
/// was held; `read` the entries just read. When more entries are waiting
/// (`more_waiting`: the read returned a full batch and the consumer may hold), the
/// latest `batch_size` entries by `key` are held back — except those already held
/// [`MAX_HOLDS`] times — and the rest handed over; otherwise everything is handed over.
/// Both parts are sorted by `key` (ties keep the order they came in: held entries
/// first, then the read's).
pub fn split<T, K: Ord>(
    held: Vec<(u32, T)>,
    read: Vec<T>,
    batch_size: usize,
    more_waiting: bool,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Vec<(u32, T)>) {
    let mut all = held;
    all.extend(read.into_iter().map(|t| (0, t)));
    all.sort_by_cached_key(|(_, t)| key(t));
    if !more_waiting {
        return (all.into_iter().map(|(_, t)| t).collect(), Vec::new());
    }
    let cut = all.len().saturating_sub(batch_size);
    let mut now = Vec::with_capacity(cut);
    let mut later = Vec::with_capacity(all.len() - cut);
    for (i, (holds, t)) in all.into_iter().enumerate() {
        if i < cut || holds >= MAX_HOLDS {
            now.push(t);
        } else {
            later.push((holds + 1, t));
        }
    }
    (now, later)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(t: &u32) -> u32 {
        *t
    }

    fn items(held: &[(u32, u32)]) -> Vec<u32> {
        held.iter().map(|(_, t)| *t).collect()
    }

    #[test]
    fn a_full_read_holds_back_the_latest_batch_of_what_is_in_hand() {
        // The first full read of a backlog is held back whole ...
        let (now, held) = split(Vec::new(), vec![9, 3, 7, 1], 4, true, k);
        assert!(now.is_empty());
        assert_eq!(held, vec![(1, 1), (1, 3), (1, 7), (1, 9)]);
        // ... and merged with the next one: the earliest four go, the latest four wait.
        let (now, held) = split(held, vec![2, 8, 0, 10], 4, true, k);
        assert_eq!(now, vec![0, 1, 2, 3]);
        assert_eq!(held, vec![(2, 7), (1, 8), (2, 9), (1, 10)]);
        // Held twice, 9 goes even though 20 and 21 came after it; 7 is simply earliest.
        let (now, held) = split(held, vec![20, 21, 5, 6], 4, true, k);
        assert_eq!(now, vec![5, 6, 7, 8, 9]);
        assert_eq!(items(&held), vec![10, 20, 21]);
    }

    #[test]
    fn nothing_is_held_without_a_backlog() {
        // A read that is not full: everything goes, held entries too.
        let (now, held) = split(vec![(1, 5), (1, 6)], vec![4, 1], 4, false, k);
        assert_eq!(now, vec![1, 4, 5, 6]);
        assert!(held.is_empty());
        // Nothing read (the backlog ended exactly at a batch): the held entries go.
        let (now, held) = split(vec![(1, 5), (1, 6)], Vec::new(), 4, false, k);
        assert_eq!(now, vec![5, 6]);
        assert!(held.is_empty());
    }

    #[test]
    fn ties_keep_the_order_they_came_in() {
        let (now, _) = split(
            vec![(1, (1, 'h'))],
            vec![(1, 'r'), (0, 'r')],
            4,
            false,
            |t| t.0,
        );
        assert_eq!(now, vec![(0, 'r'), (1, 'h'), (1, 'r')]);
    }
}
