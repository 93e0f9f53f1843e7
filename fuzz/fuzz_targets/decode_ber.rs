#![no_main]
//! 3GPP BER decoding on arbitrary bytes: as a TS 32.297 CDR file (header,
//! CDR framing, every frame through the BER decoder and `normalize`) and as
//! one lone CDR.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cdrvault_decode::fuzz::ber(data);
});
