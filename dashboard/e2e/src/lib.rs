//! The harness of the dashboard's browser tests.
//!
//! Each test starts its own fleet ([`Fleet`]): ingest, normalizer, identity merger,
//! ml-inference and the api-gateway, in this process on random ports, against a fresh
//! database and stream prefix (`test_support::TestEnv`), with the gateway serving the
//! built dashboard. Data goes in only through the front door ([`brand`]): users and
//! integrations through the API, customer events as signed webhooks, POS bills and
//! tracking calls to ingest — so what the browser sees is what the pipeline made of
//! them. The browser side ([`browser`]) runs the specs in `specs/` with Node's test
//! runner and playwright-core driving Debian's Chromium, and saves the screenshots.

pub mod brand;
pub mod browser;
pub mod fleet;

pub use fleet::{Fleet, Session};
