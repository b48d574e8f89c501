//! The negotiation rule: a pure, deterministic function from two capability sets to the
//! parameters of a call between them (spec section "Negotiation").
//!
//! Both ends of a future call run [`negotiate_pair`] on the same two capability sets and
//! reach the same parameters without exchanging a message. The rule uses integer
//! arithmetic only, so every platform computes the same result.
//!
//! For one direction, sender `S` to receiver `R`:
//!
//! 1. `S` has no camera: [`NoVideo::NoCamera`].
//! 2. The codec is the first entry of `S.encode` that is also in `R.decode`; none:
//!    [`NoVideo::NoCommonCodec`].
//! 3. For each rung of [`LADDER`], largest first, skip the rung when it exceeds the
//!    camera or the receiver's screen (long side against long side, short against
//!    short). Otherwise the frame rate is
//!    `min(camera fps, MAX_FPS, budget / (width * height))` with
//!    `budget = min(encode_budget(S.cpu), decode_budget(R.cpu))`; skip the rung if that
//!    is below `min(MIN_FPS, camera fps)`. The target bit rate is
//!    `max(1, width * height * fps * milli_bits_per_pixel(codec) / 1_000_000)` kbit/s
//!    and the link is `min(S.up_kbps, R.down_kbps)`; skip the rung if
//!    `2 * link < target`. The first rung not skipped gives the parameters, with bit
//!    rate `min(target, link)`.
//! 4. No rung fits: [`NoVideo::InsufficientResources`].

use crate::caps::{CallParams, Capabilities, CpuClass, Direction, NoVideo, StreamParams};
use crate::ids::Codec;

/// The resolution ladder, largest first (16:9, long side first).
pub const LADDER: [(u16, u16); 9] = [
    (3840, 2160),
    (2560, 1440),
    (1920, 1080),
    (1280, 720),
    (960, 540),
    (640, 360),
    (480, 270),
    (320, 180),
    (160, 90),
];

/// Highest frame rate negotiation ever picks.
pub const MAX_FPS: u16 = 60;
/// Lowest acceptable frame rate on a rung, unless the camera itself is slower.
pub const MIN_FPS: u16 = 15;

/// Pixels per second a terminal of this class can encode.
pub fn encode_budget(cpu: CpuClass) -> u64 {
    match cpu {
        CpuClass::Low => 640 * 360 * 15,
        CpuClass::Mid => 1280 * 720 * 30,
        CpuClass::High => 1920 * 1080 * 60,
        CpuClass::Ultra => 3840 * 2160 * 60,
    }
}

/// Pixels per second a terminal of this class can decode: twice what it encodes.
pub fn decode_budget(cpu: CpuClass) -> u64 {
    2 * encode_budget(cpu)
}

/// Thousandths of a bit per pixel the codec needs for good quality. Tokens this table
/// does not list use 100, the same as `h264`.
pub fn milli_bits_per_pixel(codec: &Codec) -> u64 {
    match codec.as_str() {
        "av1" => 50,
        "h265" | "hevc" | "vp9" => 65,
        "vp8" => 110,
        _ => 100,
    }
}

/// Negotiates one direction: what `sender` sends to `receiver`.
pub fn negotiate(sender: &Capabilities, receiver: &Capabilities) -> Direction {
    let Some(camera) = sender.camera() else {
        return Direction::Off(NoVideo::NoCamera);
    };
    let Some(codec) = sender
        .encode()
        .iter()
        .find(|c| receiver.decode().contains(c))
    else {
        return Direction::Off(NoVideo::NoCommonCodec);
    };
    let budget = encode_budget(sender.cpu()).min(decode_budget(receiver.cpu()));
    let link = u64::from(
        sender
            .bandwidth()
            .up_kbps
            .min(receiver.bandwidth().down_kbps),
    );
    let screen = receiver.screen();
    let min_fps = MIN_FPS.min(camera.max_fps);
    let bpp = milli_bits_per_pixel(codec);
    for (w, h) in LADDER {
        if w > camera.max.long()
            || h > camera.max.short()
            || w > screen.long()
            || h > screen.short()
        {
            continue;
        }
        let pixels = u64::from(w) * u64::from(h);
        let fps = u64::from(camera.max_fps.min(MAX_FPS)).min(budget / pixels);
        if fps < u64::from(min_fps) {
            continue;
        }
        let target = (pixels * fps * bpp / 1_000_000).max(1);
        if 2 * link < target {
            continue;
        }
        return Direction::Video(StreamParams {
            codec: codec.clone(),
            width: w,
            height: h,
            // Both bounded above by u16/u32 inputs: fps <= camera fps, bitrate <= link.
            fps: fps as u16,
            bitrate_kbps: target.min(link) as u32,
        });
    }
    Direction::Off(NoVideo::InsufficientResources)
}

/// Negotiates both directions of a call between `me` and `them`, from `me`'s side.
pub fn negotiate_pair(me: &Capabilities, them: &Capabilities) -> CallParams {
    CallParams {
        send: negotiate(me, them),
        recv: negotiate(them, me),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::{Bandwidth, Camera, Size};
    use crate::testing::caps;

    #[test]
    fn two_hd_desktops_get_1080p30_h264() {
        let a = caps(&["h264"], 1920, 30);
        let b = caps(&["h264"], 1920, 30);
        let Direction::Video(p) = negotiate(&a, &b) else {
            panic!("no video")
        };
        assert_eq!((p.width, p.height, p.fps), (1920, 1080, 30));
        assert_eq!(p.codec.as_str(), "h264");
        // 1920*1080*30*100/1e6 = 6220 kbit/s, link 8000
        assert_eq!(p.bitrate_kbps, 6220);
    }

    /// Section 6.4: the bits-per-pixel table, token by token.
    #[test]
    fn bits_per_pixel_follow_the_table() {
        let bpp = |t: &str| milli_bits_per_pixel(&Codec::new(t).unwrap());
        assert_eq!(bpp("av1"), 50);
        assert_eq!([bpp("h265"), bpp("hevc"), bpp("vp9")], [65; 3]);
        assert_eq!(bpp("vp8"), 110);
        assert_eq!([bpp("h264"), bpp("h266"), bpp("mjpeg")], [100; 3]);
        // And negotiation uses it: vp9 at 720p30 is 921_600*30*65/1e6 = 1797 kbit/s.
        let a = caps(&["vp9"], 1280, 30);
        assert_eq!(
            negotiate(&a, &a.clone()).video().unwrap().bitrate_kbps,
            1797
        );
    }

    #[test]
    fn sender_preference_picks_the_codec() {
        let a = caps(&["vp8", "h264"], 1280, 30);
        let b = caps(&["h264", "vp8"], 1280, 30);
        assert_eq!(negotiate(&a, &b).video().unwrap().codec.as_str(), "vp8");
        assert_eq!(negotiate(&b, &a).video().unwrap().codec.as_str(), "h264");
    }

    #[test]
    fn no_common_codec_is_a_typed_outcome() {
        let a = caps(&["vp8"], 1280, 30);
        let b = caps(&["h264"], 1280, 30);
        assert_eq!(negotiate(&a, &b), Direction::Off(NoVideo::NoCommonCodec));
    }

    #[test]
    fn no_camera_and_starved_links_switch_video_off() {
        let mut a = caps(&["h264"], 1280, 30);
        let b = caps(&["h264"], 1280, 30);
        let no_cam = Capabilities::new(
            a.encode().to_vec(),
            a.decode().to_vec(),
            a.screen(),
            None,
            a.cpu(),
            a.bandwidth(),
        )
        .unwrap();
        assert_eq!(negotiate(&no_cam, &b), Direction::Off(NoVideo::NoCamera));
        a = Capabilities::new(
            a.encode().to_vec(),
            a.decode().to_vec(),
            a.screen(),
            a.camera(),
            a.cpu(),
            Bandwidth {
                up_kbps: 0,
                down_kbps: 0,
            },
        )
        .unwrap();
        assert_eq!(
            negotiate(&a, &b),
            Direction::Off(NoVideo::InsufficientResources)
        );
    }

    #[test]
    fn low_cpu_receiver_scales_the_stream_down() {
        let a = caps(&["h264"], 1920, 30);
        let low = Capabilities::new(
            vec![Codec::new("h264").unwrap()],
            vec![Codec::new("h264").unwrap()],
            Size {
                width: 1920,
                height: 1080,
            },
            Some(Camera {
                max: Size {
                    width: 1920,
                    height: 1080,
                },
                max_fps: 30,
            }),
            CpuClass::Low,
            Bandwidth {
                up_kbps: 8000,
                down_kbps: 8000,
            },
        )
        .unwrap();
        let p = negotiate(&a, &low);
        let p = p.video().unwrap();
        // decode budget of Low is 6_912_000 px/s: 960x540 at 13 fps is too slow,
        // 640x360 at 30 fps fits.
        assert_eq!((p.width, p.height, p.fps), (640, 360, 30));
    }
}
