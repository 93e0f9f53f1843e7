//! The target of a lawful request or a legal hold: a number or a device,
//! in canonical form. Shared by lookups and purge holds.

use crate::{IdentifierKind, Imei, Imsi, Msisdn};

/// What a lookup (or a hold) names. `Debug` and `Display` redact the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A number: matched as caller or callee.
    Msisdn(Msisdn),
    /// A subscriber identity: matched in `imsi_p`.
    Imsi(Imsi),
    /// A device identity: matched in `imei_p`.
    Imei(Imei),
}

/// A target that does not parse. Holds no part of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The kind is not `msisdn` (or `number`, `phone`), `imsi` or `imei`.
    #[error("unknown target kind {kind:?}: use msisdn, imsi or imei")]
    UnknownKind {
        /// The kind given, reduced to its first 16 ASCII letters.
        kind: String,
    },
    /// The value does not parse as the named kind.
    #[error("not a valid {kind}: {problem}")]
    Invalid {
        /// The kind that was asked for (`msisdn`, `imsi` or `imei`).
        kind: &'static str,
        /// Fixed description of what is wrong (never the value).
        problem: &'static str,
    },
}

impl Target {
    /// Parses `kind` (`msisdn`, `imsi`, `imei`) and a value in any accepted
    /// spelling (numbers are normalised to E.164).
    pub fn parse(kind: &str, value: &str) -> Result<Target, TargetError> {
        let inv = |kind| move |problem| TargetError::Invalid { kind, problem };
        match kind.to_ascii_lowercase().as_str() {
            "msisdn" | "number" | "phone" => Msisdn::parse(value)
                .map(Target::Msisdn)
                .map_err(inv("msisdn")),
            "imsi" => Imsi::parse(value).map(Target::Imsi).map_err(inv("imsi")),
            "imei" => Imei::parse(value).map(Target::Imei).map_err(inv("imei")),
            _ => Err(TargetError::UnknownKind {
                kind: kind
                    .chars()
                    .filter(char::is_ascii_alphabetic)
                    .take(16)
                    .collect(),
            }),
        }
    }

    /// `msisdn`, `imsi` or `imei`.
    pub fn kind(&self) -> &'static str {
        self.identifier_kind().name()
    }

    /// The identifier kind (the pseudonym domain of the value).
    pub fn identifier_kind(&self) -> IdentifierKind {
        match self {
            Target::Msisdn(_) => IdentifierKind::Msisdn,
            Target::Imsi(_) => IdentifierKind::Imsi,
            Target::Imei(_) => IdentifierKind::Imei,
        }
    }

    /// The canonical value. Plaintext: only for the lawful release and for
    /// sealing into the access log.
    pub fn expose(&self) -> &str {
        match self {
            Target::Msisdn(m) => m.expose_e164(),
            Target::Imsi(i) => i.expose(),
            Target::Imei(i) => i.expose(),
        }
    }
}
