//! H.264 levels: ITU-T H.264 Table A-1 ("Level limits") and the `profile-level-id` of
//! RFC 6184 §8.1.
//!
//! A level bounds, among other things, the frame size in macroblocks (`MaxFS`), the
//! macroblock rate (`MaxMBPS`) and the video bit rate (`MaxBR`, in units of
//! `cpbBrVclFactor` = 1000 bit/s for the Baseline, Constrained Baseline, Main and
//! Extended profiles, Table A-1 and A.3.1). A.3.1 also bounds each side of the frame to
//! `sqrt(8 * MaxFS)` macroblocks. [`level_for`] picks the lowest level whose limits
//! hold a stream.

/// One row of ITU-T H.264 Table A-1 (the columns this crate uses).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Level {
    /// `level_idc` as coded in the bitstream and in `profile-level-id`: ten times the
    /// level number (level 3.1 is 31).
    pub level_idc: u8,
    /// `MaxMBPS`: macroblocks per second.
    pub max_mbps: u32,
    /// `MaxFS`: macroblocks per frame.
    pub max_fs: u32,
    /// `MaxBR`: video bit rate, in 1000 bit/s (the VCL factor of the baseline family).
    pub max_br_kbps: u32,
}

const fn row(level_idc: u8, max_mbps: u32, max_fs: u32, max_br_kbps: u32) -> Level {
    Level {
        level_idc,
        max_mbps,
        max_fs,
        max_br_kbps,
    }
}

/// ITU-T H.264 (08/2021) Table A-1, lowest level first. Level 1b is left out: in the
/// constrained baseline profile it is coded as `level_idc` 11 with
/// `constraint_set3_flag`, which this crate never needs (level 1.1 is picked instead).
pub const LEVELS: [Level; 19] = [
    row(10, 1_485, 99, 64),
    row(11, 3_000, 396, 192),
    row(12, 6_000, 396, 384),
    row(13, 11_880, 396, 768),
    row(20, 11_880, 396, 2_000),
    row(21, 19_800, 792, 4_000),
    row(22, 20_250, 1_620, 4_000),
    row(30, 40_500, 1_620, 10_000),
    row(31, 108_000, 3_600, 14_000),
    row(32, 216_000, 5_120, 20_000),
    row(40, 245_760, 8_192, 20_000),
    row(41, 245_760, 8_192, 50_000),
    row(42, 522_240, 8_704, 50_000),
    row(50, 589_824, 22_080, 135_000),
    row(51, 983_040, 36_864, 240_000),
    row(52, 2_073_600, 36_864, 240_000),
    row(60, 4_177_920, 139_264, 240_000),
    row(61, 8_355_840, 139_264, 480_000),
    row(62, 16_711_680, 139_264, 800_000),
];

/// `profile_idc` 66 (Baseline) with `constraint_set0_flag` and `constraint_set1_flag`
/// set: the Constrained Baseline profile (RFC 6184 Table 5, `profile-iop` `e0`), which
/// RFC 7742 §6.2 makes mandatory to support for WebRTC.
pub const CONSTRAINED_BASELINE: u16 = 0x42e0;

/// Macroblocks (16×16) needed to cover `width` × `height`: each side rounded up.
pub fn macroblocks(width: u16, height: u16) -> u32 {
    u32::from(width).div_ceil(16) * u32::from(height).div_ceil(16)
}

/// The lowest level of [`LEVELS`] that holds `width` × `height` at `fps` and
/// `bitrate_kbps`: frame size ≤ `MaxFS`, each side ≤ `sqrt(8 * MaxFS)` macroblocks,
/// macroblocks per second ≤ `MaxMBPS`, bit rate ≤ `MaxBR`. `None` when even the
/// highest level does not.
pub fn level_for(width: u16, height: u16, fps: u16, bitrate_kbps: u32) -> Option<Level> {
    let fs = u64::from(macroblocks(width, height));
    let mbps = fs * u64::from(fps);
    let long_mbs = u64::from(width.max(height).div_ceil(16));
    LEVELS.iter().copied().find(|l| {
        fs <= u64::from(l.max_fs)
            && long_mbs * long_mbs <= 8 * u64::from(l.max_fs)
            && mbps <= u64::from(l.max_mbps)
            && u64::from(bitrate_kbps) <= u64::from(l.max_br_kbps)
    })
}

/// The `profile-level-id` value (six hex digits, RFC 6184 §8.1) of the constrained
/// baseline profile at `level`, as a number: `0x42e0_00 | level_idc`.
pub fn profile_level_id(level: Level) -> u32 {
    u32::from(CONSTRAINED_BASELINE) << 8 | u32::from(level.level_idc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plid(w: u16, h: u16, fps: u16, kbps: u32) -> String {
        let level = level_for(w, h, fps, kbps).expect("a level holds it");
        format!("{:06x}", profile_level_id(level))
    }

    /// Each case from Table A-1 by hand (MB = 16×16 macroblocks, each side rounded up):
    #[test]
    fn levels_from_table_a1() {
        // 1280×720@30: 80×45 = 3600 MB, 108 000 MB/s. 3.0 has MaxFS 1620 < 3600;
        // 3.1 has MaxFS 3600, MaxMBPS 108 000: fits exactly. 2764 kbit/s ≤ 14 000.
        assert_eq!(plid(1280, 720, 30, 2_764), "42e01f");
        // 1920×1080@30: 120×68 (1080/16 = 67.5) = 8160 MB, 244 800 MB/s. 3.2 has
        // MaxFS 5120 < 8160; 4.0 has MaxFS 8192, MaxMBPS 245 760. 6220 ≤ 20 000.
        assert_eq!(plid(1920, 1080, 30, 6_220), "42e028");
        // 640×360@30: 40×23 (360/16 = 22.5) = 920 MB, 27 600 MB/s. 2.1 has MaxFS
        // 792 < 920; 2.2 has MaxFS 1620 but MaxMBPS 20 250 < 27 600; 3.0 has 1620
        // and 40 500. 691 kbit/s ≤ 10 000.
        assert_eq!(plid(640, 360, 30, 691), "42e01e");
        // 320×180@15: 20×12 (180/16 = 11.25) = 240 MB, 3600 MB/s. 1.0 has MaxFS
        // 99 < 240; 1.1 has MaxFS 396 but MaxMBPS 3000 < 3600; 1.2 has 396 and 6000.
        // 86 kbit/s ≤ 384.
        assert_eq!(plid(320, 180, 15, 86), "42e00c");
        // 320×180@30: 240 MB, 7200 MB/s: 1.2's 6000 is short, 1.3 has 11 880.
        assert_eq!(plid(320, 180, 30, 172), "42e00d");
        // 160×90@15: 10×6 = 60 MB ≤ 99, 900 MB/s ≤ 1485, 21 kbit/s ≤ 64: level 1.0.
        assert_eq!(plid(160, 90, 15, 21), "42e00a");
        // 3840×2160@60: 240×135 = 32 400 MB (5.0's MaxFS 22 080 is short; 5.1 has
        // 36 864), 1 944 000 MB/s: 5.1's MaxMBPS 983 040 is short, 5.2 has 2 073 600.
        assert_eq!(plid(3840, 2160, 60, 49_766), "42e034");
    }

    /// The bit rate can raise the level on its own: 640×360@30 fits 3.0 by size and
    /// rate, but 12 000 kbit/s exceeds 3.0's MaxBR of 10 000; 3.1 allows 14 000.
    #[test]
    fn the_bit_rate_alone_can_raise_the_level() {
        assert_eq!(plid(640, 360, 30, 10_000), "42e01e");
        assert_eq!(plid(640, 360, 30, 12_000), "42e01f");
    }

    /// A.3.1: a side may not exceed sqrt(8 × MaxFS) macroblocks. 1920×64 is 120×4 =
    /// 480 MB: over MaxFS 396 of levels 1.0–2.0; 2.1 (792), 2.2 and 3.0 (1620) hold
    /// 480 MB but allow a side of only sqrt(8 × 1620) ≈ 113.8 < 120 MB; 3.1
    /// (sqrt(8 × 3600) ≈ 169.7) is the first that fits.
    #[test]
    fn a_long_thin_frame_needs_the_level_its_long_side_needs() {
        assert_eq!(plid(1920, 64, 15, 100), "42e01f");
    }

    #[test]
    fn beyond_the_highest_level_there_is_none() {
        assert_eq!(level_for(16_384, 16_384, 240, 1), None);
        assert_eq!(level_for(160, 90, 15, 800_001), None);
    }
}
