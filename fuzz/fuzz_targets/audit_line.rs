#![no_main]
//! One access-log line (entry, hash, MAC, operator signature) on arbitrary bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdrvault_audit::fuzz::line(data);
});
