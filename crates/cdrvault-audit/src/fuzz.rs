//! Entry points for the fuzz targets (`fuzz/`) and the property tests that
//! run the same code in CI: the access-log line reader, which decodes
//! outside bytes (a log file anyone with write access may have edited),
//! including the operator signature.

use crate::log::parse_line;
use crate::SignatureCheck;

/// Parses `data` as one log line. Must never panic; a signer is reported
/// only for a signature that verified.
pub fn line(data: &[u8]) {
    if let Ok(p) = parse_line(data) {
        if let Some(s) = &p.entry.signature {
            assert_eq!(p.entry.signer().is_some(), s.check == SignatureCheck::Valid);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cdrvault_crypto::AuditKey;
    use cdrvault_identity::KeyFileSigner;
    use proptest::prelude::*;
    use serde_json::json;

    use crate::log::parse_line;
    use crate::{AuditLog, AuditPaths, Event};

    /// One real signed line (without its newline).
    fn signed_line() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let paths = AuditPaths {
            log_file: dir.path().join("a.log"),
            head_file: dir.path().join("h.json"),
        };
        let signer = Arc::new(KeyFileSigner::generate_ed25519().unwrap());
        AuditLog::open(paths.clone(), Some(AuditKey::generate()))
            .unwrap()
            .with_signer(Box::new(signer))
            .append(Event::new(
                "request.approved",
                "lee",
                "KR-1",
                json!({"k": 1}),
            ))
            .unwrap();
        let mut bytes = std::fs::read(&paths.log_file).unwrap();
        bytes.pop();
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::line(&data);
        }

        /// Any changed byte of the signed body loses the signer (or the
        /// whole line): a signature never vouches for other bytes.
        #[test]
        fn a_changed_body_byte_never_keeps_a_valid_signature(i in any::<prop::sample::Index>(), x in 1u8..=255) {
            let line = signed_line();
            prop_assert!(parse_line(&line).unwrap().entry.signer().is_some());
            let body = String::from_utf8_lossy(&line).find("\"body\":").unwrap() + 7;
            let at = body + i.index(line.len() - body);
            let mut bad = line.clone();
            bad[at] ^= x;
            super::line(&bad);
            if let Ok(p) = parse_line(&bad) {
                prop_assert!(p.entry.signer().is_none());
            }
        }
    }
}
