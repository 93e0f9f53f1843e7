//! The audit log as the purge's [`Journal`].

use cdrvault_audit::{AuditLog, Event};
use cdrvault_purge::{Journal, PurgeError, Recorded};
use serde_json::Value;
use zeroize::Zeroizing;

/// Adapts [`AuditLog`] to [`Journal`].
#[derive(Debug)]
pub struct AuditJournal<'a>(pub &'a AuditLog);

fn err(e: cdrvault_audit::AuditError) -> PurgeError {
    PurgeError::Journal(Box::new(e))
}

/// An audit entry as the purge sees it.
pub fn recorded(e: cdrvault_audit::Entry) -> Recorded {
    Recorded {
        seq: e.seq,
        at: e.at,
        kind: e.kind,
        actor: e.actor,
        subject: e.subject,
        data: e.data,
    }
}

impl Journal for AuditJournal<'_> {
    fn entries(&self) -> Result<Vec<Recorded>, PurgeError> {
        Ok(self
            .0
            .entries()
            .map_err(err)?
            .into_iter()
            .map(recorded)
            .collect())
    }

    fn append(
        &self,
        kind: &str,
        actor: &str,
        subject: &str,
        data: Value,
    ) -> Result<Recorded, PurgeError> {
        self.0
            .append(Event {
                kind: kind.to_owned(),
                actor: actor.to_owned(),
                subject: subject.to_owned(),
                data,
            })
            .map(recorded)
            .map_err(err)
    }

    fn open_text(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<String>, PurgeError> {
        self.0.open_text(purpose, sealed).map_err(err)
    }
}
