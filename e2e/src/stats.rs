//! Statistics of samples (latencies, throughput).

/// The `p`-th percentile (0–100, nearest rank) of a sample.
pub fn percentile(sorted: &[u64], p: u32) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1);
    sorted[usize::try_from(rank)
        .unwrap_or(usize::MAX)
        .min(sorted.len())
        - 1]
}
