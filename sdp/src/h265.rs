//! H.265 levels: ITU-T H.265 Table A.8 ("General tier and level limits") and Table A.9
//! (main tier `MaxBR`), and the `level-id` of RFC 7798 §7.1.
//!
//! `general_level_idc` is thirty times the level number (level 3.1 is 93). A level
//! bounds the picture size in luma samples (`MaxLumaPs`), each side
//! (`sqrt(8 * MaxLumaPs)`, A.4.1), the luma sample rate (`MaxLumaSr`) and, in the
//! main tier, the bit rate (`MaxBR`, 1000 bit/s for the Main profile's
//! `CpbVclFactor`).
//! The rows were checked against FFmpeg's transcription of Tables A.8 and A.9
//! (`libavcodec/h265_profile_level.c`), not against the ITU-T document itself.

/// One level of ITU-T H.265 Tables A.8 and A.9 (the columns this crate uses).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Level {
    /// `general_level_idc`, the `level-id` fmtp value.
    pub level_idc: u8,
    /// `MaxLumaPs`: luma samples per picture.
    pub max_luma_ps: u64,
    /// `MaxLumaSr`: luma samples per second.
    pub max_luma_sr: u64,
    /// `MaxBR`, main tier, in 1000 bit/s.
    pub max_br_kbps: u32,
}

const fn row(level_idc: u8, max_luma_ps: u64, max_luma_sr: u64, max_br_kbps: u32) -> Level {
    Level {
        level_idc,
        max_luma_ps,
        max_luma_sr,
        max_br_kbps,
    }
}

/// ITU-T H.265 Tables A.8/A.9, lowest level first.
pub const LEVELS: [Level; 13] = [
    row(30, 36_864, 552_960, 128),                // 1
    row(60, 122_880, 3_686_400, 1_500),           // 2
    row(63, 245_760, 7_372_800, 3_000),           // 2.1
    row(90, 552_960, 16_588_800, 6_000),          // 3
    row(93, 983_040, 33_177_600, 10_000),         // 3.1
    row(120, 2_228_224, 66_846_720, 12_000),      // 4
    row(123, 2_228_224, 133_693_440, 20_000),     // 4.1
    row(150, 8_912_896, 267_386_880, 25_000),     // 5
    row(153, 8_912_896, 534_773_760, 40_000),     // 5.1
    row(156, 8_912_896, 1_069_547_520, 60_000),   // 5.2
    row(180, 35_651_584, 1_069_547_520, 60_000),  // 6
    row(183, 35_651_584, 2_139_095_040, 120_000), // 6.1
    row(186, 35_651_584, 4_278_190_080, 240_000), // 6.2
];

/// `general_profile_idc` of the Main profile (RFC 7798 `profile-id`).
pub const MAIN_PROFILE: u8 = 1;

/// The lowest level that holds `width` × `height` at `fps` and `bitrate_kbps` (main
/// tier), or `None`.
pub fn level_for(width: u16, height: u16, fps: u16, bitrate_kbps: u32) -> Option<Level> {
    let pic = u64::from(width) * u64::from(height);
    let long = u64::from(width.max(height));
    LEVELS.iter().copied().find(|l| {
        pic <= l.max_luma_ps
            && long * long <= 8 * l.max_luma_ps
            && pic * u64::from(fps) <= l.max_luma_sr
            && bitrate_kbps <= l.max_br_kbps
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(w: u16, h: u16, fps: u16, kbps: u32) -> Option<u8> {
        level_for(w, h, fps, kbps).map(|l| l.level_idc)
    }

    #[test]
    fn levels_from_table_a8() {
        // 1280×720@30: 921 600 samples > 3's 552 960, ≤ 3.1's 983 040; 27 648 000/s
        // ≤ 33 177 600; 1797 kbit/s ≤ 10 000: level 3.1, level-id 93.
        assert_eq!(id(1280, 720, 30, 1_797), Some(93));
        // 1920×1080@30: 2 073 600 ≤ 4's 2 228 224; 62 208 000/s ≤ 66 846 720: 120.
        assert_eq!(id(1920, 1080, 30, 4_043), Some(120));
        // 640×360@30: 230 400 > 2's 122 880, ≤ 2.1's 245 760; 6 912 000/s ≤
        // 7 372 800: level 2.1, 63.
        assert_eq!(id(640, 360, 30, 449), Some(63));
        assert_eq!(id(16_384, 16_384, 240, 1), None);
    }
}
