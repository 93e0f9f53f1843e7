//! Hold targets: the identifier a legal hold protects.

use std::fmt;

use cdrvault_crypto::{Pseudonym, Pseudonymizer};
use cdrvault_model::{IdentifierKind, Target};
use cdrvault_store::schema::col;
use zeroize::Zeroizing;

use crate::PurgeError;

/// The identifier kinds a hold can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetKind {
    /// A phone number: matches the caller and the callee columns.
    Msisdn,
    /// A subscriber identity.
    Imsi,
    /// A device identity.
    Imei,
}

impl TargetKind {
    /// `msisdn`, `imsi` or `imei`.
    pub fn name(self) -> &'static str {
        self.identifier_kind().name()
    }

    fn identifier_kind(self) -> IdentifierKind {
        match self {
            TargetKind::Msisdn => IdentifierKind::Msisdn,
            TargetKind::Imsi => IdentifierKind::Imsi,
            TargetKind::Imei => IdentifierKind::Imei,
        }
    }

    /// Parses `msisdn`, `imsi` or `imei`.
    pub fn parse(s: &str) -> Option<TargetKind> {
        match s {
            "msisdn" => Some(TargetKind::Msisdn),
            "imsi" => Some(TargetKind::Imsi),
            "imei" => Some(TargetKind::Imei),
            _ => None,
        }
    }

    /// Indexes (in the partition schema) of the pseudonym columns a target
    /// of this kind is matched against.
    pub fn columns(self) -> &'static [usize] {
        match self {
            TargetKind::Msisdn => &[col::CALLER_P, col::CALLEE_P],
            TargetKind::Imsi => &[col::IMSI_P],
            TargetKind::Imei => &[col::IMEI_P],
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hold target in canonical form (E.164 for numbers). Holds personal
/// data: `Debug` and `Display` print only the kind, the value is wiped on
/// drop, and reading it takes [`expose`](Self::expose).
#[derive(Clone, PartialEq, Eq)]
pub struct HoldTarget {
    kind: TargetKind,
    canonical: Zeroizing<String>,
}

impl fmt::Debug for HoldTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(<redacted>)", self.kind)
    }
}

impl fmt::Display for HoldTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl HoldTarget {
    /// Parses `<kind>:<value>`, e.g. `msisdn:010-1234-5678`, normalising the
    /// value (numbers to E.164). Errors never quote the value.
    pub fn parse(spec: &str) -> Result<HoldTarget, PurgeError> {
        let (kind, value) = spec.split_once(':').ok_or_else(|| PurgeError::BadTarget {
            reason: "expected <kind>:<value> with kind msisdn, imsi or imei".into(),
        })?;
        let kind = TargetKind::parse(kind.trim()).ok_or_else(|| PurgeError::BadTarget {
            reason: "the kind must be msisdn, imsi or imei".into(),
        })?;
        HoldTarget::new(kind, value)
    }

    /// A target of `kind` from its value (normalised).
    pub fn new(kind: TargetKind, value: &str) -> Result<HoldTarget, PurgeError> {
        let canonical = Target::parse(kind.name(), value.trim())
            .map_err(|e| PurgeError::BadTarget {
                reason: e.to_string(),
            })?
            .expose()
            .to_owned();
        Ok(HoldTarget {
            kind,
            canonical: Zeroizing::new(canonical),
        })
    }

    /// The kind.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The canonical value (personal data: seal it before storing it).
    pub fn expose(&self) -> &str {
        &self.canonical
    }

    /// The target's pseudonym under one period's pseudonym key.
    pub fn pseudonym(&self, p: &Pseudonymizer) -> Pseudonym {
        p.pseudonym(self.kind.identifier_kind(), self.canonical.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdrvault_crypto::PseudonymKey;
    use cdrvault_model::Msisdn;

    #[test]
    fn targets_normalise_and_never_print_their_value() {
        let a = HoldTarget::parse("msisdn:010-0123-4567").unwrap();
        let b = HoldTarget::parse("msisdn:+82 10 0123 4567").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.expose(), "+821001234567");
        assert_eq!(
            format!("{a:?} {a}"),
            "msisdn(<redacted>) msisdn(<redacted>)"
        );
        let k = PseudonymKey::generate();
        let p = Pseudonymizer::new(&k);
        assert_eq!(
            a.pseudonym(&p),
            p.pseudonym_msisdn(&Msisdn::parse("01001234567").unwrap())
        );
        let imsi = HoldTarget::parse("imsi:001010000000042").unwrap();
        assert_eq!(imsi.kind().columns(), &[col::IMSI_P]);
        for bad in ["010-0123-4567", "phone:0100", "msisdn:abc", "imei:12"] {
            let e = HoldTarget::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("0123"), "{e}");
        }
    }
}
