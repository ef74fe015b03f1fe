//! The analyst dashboard (being built: see issue "Dashboard").
