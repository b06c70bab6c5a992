//! Decoding arbitrary bytes as a frame body must return a message or a typed error, never
//! panic or allocate beyond the frame limit. Run: `cargo fuzz run wire_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = common::wire::decode(data) {
        // Whatever decodes must encode again.
        let _ = common::wire::encode(&msg);
    }
});
