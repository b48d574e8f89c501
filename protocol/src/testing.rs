//! Helpers for the crate's unit tests.

pub(crate) use crate::sim::sample_caps as caps;
