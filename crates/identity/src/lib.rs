//! Identity resolution: which events belong to the same person.
//!
//! (Being built: see issue "Identity merger".)
