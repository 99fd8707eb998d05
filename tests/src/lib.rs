//! Helpers shared by carboy's integration tests.
