//! How fuzzer bytes become values: the sample pools and the hand-written
//! [`Arbitrary`] implementations of the validated types.
//!
//! Validated types ([`Capabilities`], identifiers) are built through their checking
//! constructors, so every generated value is one the wire could carry. Invalid values
//! reach the state machines as bytes instead (the targets' raw-byte steps).

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::caps::{
    Bandwidth, Camera, Capabilities, CpuClass, Fingerprint, Size, MAX_CAMERA_FPS, MAX_CODECS,
    MAX_DIMENSION, MAX_KBPS,
};
use crate::ids::Codec;
use crate::message::PROTOCOL_VERSION;

/// The password every sample account has (the other sample, `wrong`, is refused).
pub const PASSWORD: &str = "pw";

/// A token: mostly one of `samples`, sometimes any `1..=max` bytes of the alphabet
/// `allowed` admits.
pub fn token(
    u: &mut Unstructured<'_>,
    samples: &[&str],
    max: usize,
    allowed: fn(u8) -> bool,
) -> Result<String> {
    if !samples.is_empty() && !u.ratio(1u8, 8u8)? {
        return Ok((*u.choose(samples)?).to_owned());
    }
    let alphabet: Vec<u8> = (0u8..=127).filter(|b| allowed(*b)).collect();
    let len = u.int_in_range(1..=max.min(80))?;
    (0..len)
        .map(|_| u.choose(&alphabet).map(|b| char::from(*b)))
        .collect()
}

/// A number: mostly `0..=8` (the server numbers sessions and calls from 1, the
/// client its requests), sometimes any.
pub fn small<T: From<u8> + for<'a> Arbitrary<'a>>(u: &mut Unstructured<'_>) -> Result<T> {
    if u.ratio(3u8, 4u8)? {
        Ok(T::from(u.int_in_range(0u8..=8)?))
    } else {
        T::arbitrary(u)
    }
}

/// A protocol version: mostly the one this crate speaks.
pub fn version(u: &mut Unstructured<'_>) -> Result<u32> {
    if u.ratio(7u8, 8u8)? {
        Ok(PROTOCOL_VERSION)
    } else {
        u32::arbitrary(u)
    }
}

fn size(u: &mut Unstructured<'_>) -> Result<Size> {
    const COMMON: [(u16, u16); 6] = [
        (1920, 1080),
        (1280, 720),
        (640, 360),
        (1080, 1920),
        (320, 240),
        (3840, 2160),
    ];
    let (width, height) = if u.ratio(3u8, 4u8)? {
        *u.choose(&COMMON)?
    } else {
        (
            u.int_in_range(1..=MAX_DIMENSION)?,
            u.int_in_range(1..=MAX_DIMENSION)?,
        )
    };
    Ok(Size { width, height })
}

fn kbps(u: &mut Unstructured<'_>) -> Result<u32> {
    if u.ratio(3u8, 4u8)? {
        Ok(*u.choose(&[0, 100, 300, 1_000, 2_500, 8_000, 50_000])?)
    } else {
        u.int_in_range(0..=MAX_KBPS)
    }
}

fn codecs(u: &mut Unstructured<'_>) -> Result<Vec<Codec>> {
    let n = if u.ratio(7u8, 8u8)? {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=MAX_CODECS)?
    };
    let mut list: Vec<Codec> = Vec::with_capacity(n);
    for _ in 0..n {
        let c = Codec::arbitrary(u)?;
        if !list.contains(&c) {
            list.push(c);
        }
    }
    Ok(list)
}

impl<'a> Arbitrary<'a> for Capabilities {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let encode = codecs(u)?;
        let decode = codecs(u)?;
        let screen = size(u)?;
        let camera = if u.ratio(5u8, 6u8)? {
            let max_fps = if u.ratio(3u8, 4u8)? {
                *u.choose(&[15, 24, 30, 60])?
            } else {
                u.int_in_range(1..=MAX_CAMERA_FPS)?
            };
            Some(Camera {
                max: size(u)?,
                max_fps,
            })
        } else {
            None
        };
        let cpu = *u.choose(&CpuClass::ALL)?;
        let bandwidth = Bandwidth {
            up_kbps: kbps(u)?,
            down_kbps: kbps(u)?,
        };
        Capabilities::new(encode, decode, screen, camera, cpu, bandwidth)
            .map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

impl<'a> Arbitrary<'a> for Fingerprint {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1u8, 4u8)? {
            Ok(Fingerprint::NONE)
        } else {
            Ok(Fingerprint(<[u8; 16]>::arbitrary(u)?))
        }
    }
}
