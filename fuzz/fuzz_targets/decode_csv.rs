#![no_main]
//! CSV decoding on arbitrary bytes: the first line is the header, the rest are
//! records; every record that decodes is normalised.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdrvault_decode::fuzz::csv(data);
});
