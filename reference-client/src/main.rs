//! `precall-client`: the reference client binary. Not built yet: the tokio client around
//! `precall_protocol` lands with issue 4. Until then this binary says so and fails.

fn main() {
    eprintln!(
        "precall-client {}: not implemented yet; run `cargo run -p precall-protocol --example walkthrough` for the in-memory walkthrough",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
