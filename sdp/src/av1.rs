//! AV1 levels: AV1 Bitstream & Decoding Process Specification, Annex A.3 ("Levels"),
//! and the `level-idx` of the AOM "RTP Payload Format For AV1" §7.2.
//!
//! `seq_level_idx` is `4 * (X - 2) + Y` for level X.Y. A level bounds the picture size
//! (`MaxPicSize`, samples), each side (`MaxHSize`, `MaxVSize`), the luma sample rate
//! shown (`MaxDisplayRate`) and, for the main tier, the bit rate (`MainMbps`).
//! Levels not defined by Annex A (2.2, 2.3, 3.2, 3.3, 4.2, 4.3, 7.x) are not listed.
//! Every row was checked against the specification's own text (`annex.a.levels.md` of
//! AOMediaCodec/av1-spec, the Annex A.3 tables).

/// One row of AV1 Annex A.3 (the columns this crate uses).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Level {
    /// `seq_level_idx`, the `level-idx` fmtp value.
    pub seq_level_idx: u8,
    /// `MaxPicSize`: luma samples per picture.
    pub max_pic_size: u64,
    /// `MaxHSize`: picture width in samples.
    pub max_h_size: u16,
    /// `MaxVSize`: picture height in samples.
    pub max_v_size: u16,
    /// `MaxDisplayRate`: luma samples per second.
    pub max_display_rate: u64,
    /// `MainMbps` (main tier) in kbit/s (the table gives Mbit/s).
    pub main_kbps: u32,
}

const fn row(idx: u8, pic: u64, h: u16, v: u16, display: u64, kbps: u32) -> Level {
    Level {
        seq_level_idx: idx,
        max_pic_size: pic,
        max_h_size: h,
        max_v_size: v,
        max_display_rate: display,
        main_kbps: kbps,
    }
}

/// AV1 Annex A.3, the defined levels, lowest first.
pub const LEVELS: [Level; 14] = [
    row(0, 147_456, 2048, 1152, 4_423_680, 1_500),  // 2.0
    row(1, 278_784, 2816, 1584, 8_363_520, 3_000),  // 2.1
    row(4, 665_856, 4352, 2448, 19_975_680, 6_000), // 3.0
    row(5, 1_065_024, 5504, 3096, 31_950_720, 10_000), // 3.1
    row(8, 2_359_296, 6144, 3456, 70_778_880, 12_000), // 4.0
    row(9, 2_359_296, 6144, 3456, 141_557_760, 20_000), // 4.1
    row(12, 8_912_896, 8192, 4352, 267_386_880, 30_000), // 5.0
    row(13, 8_912_896, 8192, 4352, 534_773_760, 40_000), // 5.1
    row(14, 8_912_896, 8192, 4352, 1_069_547_520, 60_000), // 5.2
    row(15, 8_912_896, 8192, 4352, 1_069_547_520, 60_000), // 5.3
    row(16, 35_651_584, 16384, 8704, 1_069_547_520, 60_000), // 6.0
    row(17, 35_651_584, 16384, 8704, 2_139_095_040, 100_000), // 6.1
    row(18, 35_651_584, 16384, 8704, 4_278_190_080, 160_000), // 6.2
    row(19, 35_651_584, 16384, 8704, 4_278_190_080, 160_000), // 6.3
];

/// `seq_level_idx` 31: "maximum parameters", no level constraint (Annex A.3), used when
/// no defined level holds the stream.
pub const MAX_PARAMETERS: u8 = 31;

/// The lowest level that holds `width` × `height` at `fps` and `bitrate_kbps` (main
/// tier), or [`MAX_PARAMETERS`].
pub fn level_idx_for(width: u16, height: u16, fps: u16, bitrate_kbps: u32) -> u8 {
    let pic = u64::from(width) * u64::from(height);
    let rate = pic * u64::from(fps);
    LEVELS
        .iter()
        .find(|l| {
            pic <= l.max_pic_size
                && width <= l.max_h_size
                && height <= l.max_v_size
                && rate <= l.max_display_rate
                && bitrate_kbps <= l.main_kbps
        })
        .map_or(MAX_PARAMETERS, |l| l.seq_level_idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_from_annex_a3() {
        // 640×360@30: 230 400 samples > 2.0's 147 456, ≤ 2.1's 278 784; 6 912 000
        // samples/s ≤ 8 363 520; 380 kbit/s ≤ 3000: level 2.1, idx 1.
        assert_eq!(level_idx_for(640, 360, 30, 380), 1);
        // 1280×720@30: 921 600 samples > 3.0's 665 856, ≤ 3.1's 1 065 024;
        // 27 648 000/s ≤ 31 950 720: level 3.1, idx 5.
        assert_eq!(level_idx_for(1280, 720, 30, 1_382), 5);
        // 1280×720@60: 55 296 000/s > 3.1's 31 950 720: 4.0 (70 778 880), idx 8.
        assert_eq!(level_idx_for(1280, 720, 60, 2_764), 8);
        // 1920×1080@30: 2 073 600 samples ≤ 4.0's 2 359 296; 62 208 000/s ≤ 70 778 880.
        assert_eq!(level_idx_for(1920, 1080, 30, 3_110), 8);
        // 320×180@15: 57 600 samples, 864 000/s: level 2.0, idx 0.
        assert_eq!(level_idx_for(320, 180, 15, 43), 0);
        // The bit rate alone: 640×360@30 at 4000 kbit/s exceeds 2.1's 3 Mbit/s: 3.0.
        assert_eq!(level_idx_for(640, 360, 30, 4_000), 4);
        assert_eq!(level_idx_for(16_384, 16_384, 240, 1), MAX_PARAMETERS);
    }
}
