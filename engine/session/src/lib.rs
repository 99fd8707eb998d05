//! carboy-session: Beaker's web sessions on carboy's cache backends.
//!
//! This is scaffolding: only the [`b64`] module (Beaker's base64
//! utilities, with Python's `base64` semantics) lives here so far.

pub mod b64;
