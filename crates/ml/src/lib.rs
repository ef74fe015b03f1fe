//! Features, training, metrics and scoring.
//!
//! (Being built: see issue "ML".)
