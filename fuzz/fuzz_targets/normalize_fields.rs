#![no_main]
//! The identifier and timestamp parsers on arbitrary text.
//!
//! The input is split on `\n` into up to four strings; every string goes
//! through `Msisdn::parse`, `Imsi::parse`, `Imei::parse` and `parse_timestamp`
//! (without a default offset and with +09:00, as `input.default_timezone`
//! would give).

use cdrvault_model::{parse_timestamp, Imei, Imsi, Msisdn};
use chrono::FixedOffset;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let kst = FixedOffset::east_opt(9 * 3600);
    for s in text.split('\n').take(4) {
        if let Ok(m) = Msisdn::parse(s) {
            // Normalisation is idempotent: an E.164 result parses to itself.
            let again = Msisdn::parse(m.expose_e164()).expect("E.164 output must re-parse");
            assert_eq!(again, m, "Msisdn normalisation is not idempotent");
        }
        let _ = Imsi::parse(s);
        let _ = Imei::parse(s);
        let _ = parse_timestamp(s, None);
        let _ = parse_timestamp(s, kst);
    }
});
