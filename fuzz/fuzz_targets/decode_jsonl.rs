#![no_main]
//! JSON Lines decoding (and normalisation of what decodes) on arbitrary bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdrvault_decode::fuzz::jsonl(data);
});
