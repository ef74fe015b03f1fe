//! The ordering window: entries a consumer group has already read, handed to handlers
//! in the handlers' preferred order across two batches instead of one — fleet-wide, so
//! several replicas apply a backlog in that order as one would.
//!
//! A handler that would rather apply entries in some order (the identity merger: event
//! time) says where each delivery belongs ([`crate::Handler::order_key`]). When a read
//! returns a full batch, entries are waiting behind it (a backlog), so the runner does
//! not hand the whole batch over: it takes the entries the group holds back, merges them
//! with its read, sorts them by key, hands over all but the latest `batch_size` and
//! gives those back to be held, to be merged with the next read of *any* replica
//! ([`split`]; one entry at most [`MAX_HOLDS`] times). Under a backlog that read returns
//! at once (it is usually already made: read-ahead), so holding costs the held entries
//! one step and gains the next batch's earliest ones one step. A read that is not full
//! (no backlog: a steady rate's small batches), shutdown, or a read that returns nothing
//! hands every held entry over at once, so nothing waits for traffic that is not already
//! there.
//!
//! **Held where.** Held entries stay in the group's pending list, unacknowledged, owned
//! by a *holder*: a consumer name no process runs ([`holder`]: one per hold count, so
//! the count survives the hand-off). Giving back is `XCLAIM … JUSTID` to the holder (no
//! delivery counted); taking is one script (`TAKE_HELD_SCRIPT`) moving every held entry
//! onto the taking consumer and returning it with its body and delivery count. Both are
//! atomic in Redis, so an entry is always pending on exactly one owner: the replica
//! stepping through it (killed, it leaves the entry pending, and another replica claims it
//! after the claim timeout) or a holder (the next step of any replica takes it; if no
//! replica steps for a claim timeout, housekeeping claims it like any idle entry). Only
//! the step that commits an entry acknowledges it. Two replicas stepping at once may
//! both take before either gives back: the holders then hold two batches, and the next
//! step hands over all but the latest batch of everything — order is only ever traded
//! for progress, never an entry for order.
//!
//! **Why it orders several replicas.** Each replica's reads are consecutive batches of
//! the group's, so without a shared window replica A merges batches k and k+3 while the
//! events that belong with batch k are in replica B's batch k+1. With one window for the
//! group, every step hands over the earliest batch of everything read and not yet handed
//! over, in the order steps begin; a step takes its identifiers' locks (the merger's
//! advisory locks, ascending) before it applies anything, so steps begun in that order
//! mostly apply shared identifiers in it (a later step that still locks first only
//! makes the earlier step's events late, which the handler must resolve anyway). A fleet-wide *watermark* (hand over only what is
//! earlier than every other replica's earliest held key) was considered and not built:
//! consecutive batches interleave in time, so every replica's earliest key is about the
//! others', and replicas would alternate steps of a few entries each.
//!
//! (Before, each consumer held its entries back in memory: a replica's window merged
//! only its own reads.)

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where a delivery belongs in a handler's preferred order: a time, then an id breaking
/// ties (the identity merger's canonical `(occurred_at, event_id)`).
pub type OrderKey = (DateTime<Utc>, Uuid);

/// How many steps one entry may be held back with one replica: an entry later in the
/// handler's order than a whole batch of entries read after it (a clock running ahead)
/// goes at its third split, so under a backlog no entry waits more than two steps longer
/// than it would without the window. With `n` replicas the window holds `n` batches
/// ([`window_batches`]) and an entry may be held `n + 1` times ([`max_holds`]).
pub const MAX_HOLDS: u32 = 2;

/// The most batches the window holds back, however many replicas step.
pub const MAX_WINDOW_BATCHES: usize = 4;

/// How many batches the group's window holds back with `replicas` consumers stepping
/// through a backlog: one per replica (capped at [`MAX_WINDOW_BATCHES`]). Each replica
/// has a batch in its handler and one read ahead, outside the window; steps of several
/// replicas are in flight at once and take their reads in about, not exactly, the order
/// read; holding a batch per replica keeps what is handed over earlier than what a
/// replica still has in hand.
pub fn window_batches(replicas: usize) -> usize {
    replicas.clamp(1, MAX_WINDOW_BATCHES)
}

/// How many times one entry may be held with a window of `batches` batches.
pub fn max_holds(batches: usize) -> u32 {
    u32::try_from(batches).unwrap_or(u32::MAX).saturating_add(1)
}

/// The consumer name holding entries held back `holds` times (1 ..= [`MAX_HOLDS`]). No
/// process consumes under it; `ctl streams` counts it among the group's consumers while
/// it holds entries.
pub fn holder(holds: u32) -> String {
    format!("{HOLDER_PREFIX}{holds}")
}

/// How every holder's name begins.
pub const HOLDER_PREFIX: &str = "~window-held-";

/// Moves every entry the holders hold onto the caller and returns them.
/// `KEYS[1]` the stream; `ARGV[1]` the group, `ARGV[2]` the taking consumer, `ARGV[3]` the
/// most entries to take, `ARGV[4..]` the holders in hold-count order. Returns
/// `[holds, delivery count, id, fields or nil]` per entry (nil: trimmed away).
/// `XCLAIM … JUSTID` counts no delivery and resets the idle time.
pub(crate) const TAKE_HELD_SCRIPT: &str = r"
local out = {}
local limit = tonumber(ARGV[3])
for i = 4, #ARGV do
  if limit <= 0 then break end
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', limit, ARGV[i])
  for s = 1, #pending, 500 do
    local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], '0'}
    for j = s, math.min(s + 499, #pending) do claim[#claim + 1] = pending[j][1] end
    claim[#claim + 1] = 'JUSTID'
    redis.call(unpack(claim))
  end
  for _, p in ipairs(pending) do
    local e = redis.call('XRANGE', KEYS[1], p[1], p[1])
    out[#out + 1] = {i - 3, p[4], p[1], e[1] and e[1][2] or false}
  end
  limit = limit - #pending
end
return out
";

/// Splits the entries in hand into those handed over now and those held back.
///
/// `held` are the entries held back by the previous split, each with how many times it
/// was held; `read` the entries just read. When more entries are waiting
/// (`more_waiting`: the read returned a full batch and the consumer may hold), the
/// latest `hold` entries by `key` are held back — except those already held `max_holds`
/// times — and the rest handed over; otherwise everything is handed over.
/// Both parts are sorted by `key` (ties keep the order they came in: held entries
/// first, then the read's).
pub fn split<T, K: Ord>(
    held: Vec<(u32, T)>,
    read: Vec<T>,
    hold: usize,
    max_holds: u32,
    more_waiting: bool,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Vec<(u32, T)>) {
    let mut all = held;
    all.extend(read.into_iter().map(|t| (0, t)));
    all.sort_by_cached_key(|(_, t)| key(t));
    if !more_waiting {
        return (all.into_iter().map(|(_, t)| t).collect(), Vec::new());
    }
    let cut = all.len().saturating_sub(hold);
    let mut now = Vec::with_capacity(cut);
    let mut later = Vec::with_capacity(all.len() - cut);
    for (i, (holds, t)) in all.into_iter().enumerate() {
        if i < cut || holds >= max_holds {
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
        let (now, held) = split(Vec::new(), vec![9, 3, 7, 1], 4, MAX_HOLDS, true, k);
        assert!(now.is_empty());
        assert_eq!(held, vec![(1, 1), (1, 3), (1, 7), (1, 9)]);
        // ... and merged with the next one: the earliest four go, the latest four wait.
        let (now, held) = split(held, vec![2, 8, 0, 10], 4, MAX_HOLDS, true, k);
        assert_eq!(now, vec![0, 1, 2, 3]);
        assert_eq!(held, vec![(2, 7), (1, 8), (2, 9), (1, 10)]);
        // Held twice, 9 goes even though 20 and 21 came after it; 7 is simply earliest.
        let (now, held) = split(held, vec![20, 21, 5, 6], 4, MAX_HOLDS, true, k);
        assert_eq!(now, vec![5, 6, 7, 8, 9]);
        assert_eq!(items(&held), vec![10, 20, 21]);
    }

    #[test]
    fn nothing_is_held_without_a_backlog() {
        // A read that is not full: everything goes, held entries too.
        let (now, held) = split(vec![(1, 5), (1, 6)], vec![4, 1], 4, MAX_HOLDS, false, k);
        assert_eq!(now, vec![1, 4, 5, 6]);
        assert!(held.is_empty());
        // Nothing read (the backlog ended exactly at a batch): the held entries go.
        let (now, held) = split(vec![(1, 5), (1, 6)], Vec::new(), 4, MAX_HOLDS, false, k);
        assert_eq!(now, vec![5, 6]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_window_of_several_batches_holds_them_and_lets_entries_wait_longer() {
        // Three replicas: three batches of two held; each entry may be held four times.
        assert_eq!(window_batches(3), 3);
        assert_eq!(max_holds(window_batches(3)), 4);
        assert_eq!(window_batches(0), 1);
        assert_eq!(window_batches(50), MAX_WINDOW_BATCHES);
        let (now, held) = split(Vec::new(), vec![9, 3], 6, 4, true, k);
        assert!(now.is_empty());
        let (now, held) = split(held, vec![8, 1], 6, 4, true, k);
        assert!(now.is_empty());
        let (now, held) = split(held, vec![7, 0], 6, 4, true, k);
        assert!(now.is_empty());
        // The fourth read: the earliest two of everything go.
        let (now, held) = split(held, vec![5, 2], 6, 4, true, k);
        assert_eq!(now, vec![0, 1]);
        assert_eq!(items(&held), vec![2, 3, 5, 7, 8, 9]);
    }

    #[test]
    fn ties_keep_the_order_they_came_in() {
        let (now, _) = split(
            vec![(1, (1, 'h'))],
            vec![(1, 'r'), (0, 'r')],
            4,
            MAX_HOLDS,
            false,
            |t| t.0,
        );
        assert_eq!(now, vec![(0, 'r'), (1, 'h'), (1, 'r')]);
    }
}
