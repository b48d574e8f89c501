//! `uniffi-bindgen`, built from the same uniffi version as `precall-ffi`, so that the
//! generated bindings and the library's scaffolding always agree (uniffi checks a
//! checksum per function at load time). Used by `bindings/uniffi/generate.sh`:
//!
//! ```sh
//! cargo run -p precall-ffi-bindgen -- generate --library target/debug/libprecall_ffi.so \
//!     --language kotlin --out-dir target/uniffi/kotlin
//! ```

fn main() {
    uniffi::uniffi_bindgen_main()
}
