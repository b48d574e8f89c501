//! Negotiation benchmarks: one direction (`negotiate/<pair>`, first terminal sending to
//! the second), both directions as a client computes them for its table
//! (`negotiate_pair/<pair>`), and the capability fingerprint
//! (`fingerprint/<terminal>`).
//!
//! The pairs cover the rule's paths: two HD desktops (the first rung that fits), a
//! phone and a desktop (CPU, screen and uplink limits), no common codec and no camera
//! (early exits), and a starved link (the ladder walked down to its last rungs).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use precall_protocol::caps::{Bandwidth, Camera, CpuClass, NoVideo, Size};
use precall_protocol::sim::sample_caps;
use precall_protocol::{negotiate, negotiate_pair, Capabilities, Codec, Direction};

fn codecs(list: &[&str]) -> Vec<Codec> {
    list.iter().map(|c| Codec::new(*c).unwrap()).collect()
}

fn size(width: u16, height: u16) -> Size {
    Size { width, height }
}

/// A mid-range phone on a mobile link, portrait screen.
fn phone() -> Capabilities {
    Capabilities::new(
        codecs(&["h264", "vp8"]),
        codecs(&["h264", "vp8", "vp9", "av1"]),
        size(1080, 2340),
        Some(Camera {
            max: size(1920, 1080),
            max_fps: 30,
        }),
        CpuClass::Mid,
        Bandwidth {
            up_kbps: 1_500,
            down_kbps: 4_000,
        },
    )
    .unwrap()
}

/// A desktop preferring vp9, with a 60 fps camera.
fn desktop() -> Capabilities {
    sample_caps(&["vp9", "h264", "vp8"], 1920, 60)
}

/// A receive-only terminal (no camera), e.g. a wall display.
fn no_camera() -> Capabilities {
    let base = sample_caps(&["h264", "vp8"], 1920, 30);
    Capabilities::new(
        base.encode().to_vec(),
        base.decode().to_vec(),
        base.screen(),
        None,
        base.cpu(),
        base.bandwidth(),
    )
    .unwrap()
}

/// An HD desktop behind a 256/512 kbit/s link.
fn starved() -> Capabilities {
    let base = sample_caps(&["h264", "vp8"], 1920, 30);
    Capabilities::new(
        base.encode().to_vec(),
        base.decode().to_vec(),
        base.screen(),
        base.camera(),
        base.cpu(),
        Bandwidth {
            up_kbps: 256,
            down_kbps: 512,
        },
    )
    .unwrap()
}

/// The representative pairs, with the first direction's expected outcome checked in
/// setup so that a pair cannot silently stop exercising its path.
fn pairs() -> Vec<(&'static str, Capabilities, Capabilities)> {
    let hd = sample_caps(&["h264", "vp8"], 1920, 30);
    let pairs = vec![
        ("hd_desktops", hd.clone(), hd.clone()),
        ("phone_to_desktop", phone(), desktop()),
        ("desktop_to_phone", desktop(), phone()),
        (
            "no_common_codec",
            sample_caps(&["vp8"], 1280, 30),
            sample_caps(&["h264"], 1280, 30),
        ),
        ("no_camera", no_camera(), hd.clone()),
        ("low_bandwidth", starved(), hd),
    ];
    for (name, a, b) in &pairs {
        let d = negotiate(a, b);
        let ok = match *name {
            "hd_desktops" => d.video().is_some_and(|p| (p.width, p.fps) == (1920, 30)),
            "phone_to_desktop" | "desktop_to_phone" => d.video().is_some(),
            "no_common_codec" => d == Direction::Off(NoVideo::NoCommonCodec),
            "no_camera" => d == Direction::Off(NoVideo::NoCamera),
            "low_bandwidth" => d.video().is_some_and(|p| p.width < 960),
            _ => false,
        };
        assert!(ok, "{name}: unexpected outcome {d:?}");
    }
    pairs
}

fn bench_negotiate(c: &mut Criterion) {
    let pairs = pairs();
    let mut group = c.benchmark_group("negotiate");
    for (name, a, b) in &pairs {
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            &(a, b),
            |bench, (a, b)| bench.iter(|| negotiate(black_box(a), black_box(b))),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("negotiate_pair");
    for (name, a, b) in &pairs {
        group.bench_with_input(
            BenchmarkId::from_parameter(name),
            &(a, b),
            |bench, (a, b)| bench.iter(|| negotiate_pair(black_box(a), black_box(b))),
        );
    }
    group.finish();
}

fn bench_fingerprint(c: &mut Criterion) {
    let many: Vec<String> = (0..16).map(|i| format!("x-codec-{i:02}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let terminals = [
        ("desktop", desktop()),
        ("phone", phone()),
        ("no_camera", no_camera()),
        // The longest codec lists the spec allows.
        ("16_codecs", sample_caps(&many, 1920, 30)),
    ];
    let mut group = c.benchmark_group("fingerprint");
    for (name, caps) in &terminals {
        group.bench_with_input(BenchmarkId::from_parameter(name), caps, |b, caps| {
            b.iter(|| black_box(caps).fingerprint())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_negotiate, bench_fingerprint);
criterion_main!(benches);
