//! Legal holds at the desk: add, release, list.

use cdrvault_audit::Event;
use cdrvault_identity::Role;
use cdrvault_model::Target;
use cdrvault_purge::holds::{
    added_data, fold_holds, next_hold_id, HOLD_ADDED, HOLD_RELEASED, TARGET_PURPOSE,
};
use cdrvault_purge::Hold;
use cdrvault_retention::kst_today;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

use cdrvault_requests::{self as rq, RefusalCode};

use crate::{refused, Actor, Desk, DeskError, Permit};

const HOLD: &str = "hold";
const HOLD_OFFICER: &[Role] = &[Role::HoldOfficer];

/// A hold placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldAdded {
    /// `h<n>`.
    pub id: String,
    /// Kind of the held identifier.
    pub target_kind: &'static str,
    /// Its `hold.added` entry.
    pub seq: u64,
}

/// Holds as listed, with the day (KST) their state is judged at.
#[derive(Debug, Clone)]
pub struct HoldList {
    /// Today in KST.
    pub today: NaiveDate,
    /// The holds (targets sealed).
    pub holds: Vec<Hold>,
}

/// Parses `KIND:VALUE`; errors never quote the value.
fn parse_target(spec: &str) -> Result<Target, DeskError> {
    let (kind, value) = spec.split_once(':').ok_or_else(|| {
        DeskError::Input(
            "hold target: expected <kind>:<value> with kind msisdn, imsi or imei".into(),
        )
    })?;
    Target::parse(kind.trim(), value.trim())
        .map_err(|e| DeskError::Input(format!("hold target: {e}")))
}

impl Desk {
    /// Puts a number or device (`KIND:VALUE`) under a legal hold
    /// (`hold.added`, the target sealed): before a partition holding its
    /// records is purged, they are copied to the legal-hold class. `until`
    /// (a KST day, not before today) ends it by itself. Signed by a
    /// registered hold officer. A reason that breaks the text rules (a
    /// control character, a number-like run) is refused and logged.
    pub fn add_hold(
        &self,
        actor: &Actor,
        target: &str,
        reason: &str,
        until: Option<NaiveDate>,
        now: DateTime<Utc>,
    ) -> Result<HoldAdded, DeskError> {
        self.check_texts(actor, HOLD, "add", "-", &[("--reason", reason)])?;
        let t = parse_target(target)?;
        if until.is_some_and(|u| u < kst_today(now)) {
            return Err(DeskError::Usage("--until is in the past".into()));
        }
        let sealed = self
            .audit::<DeskError>()?
            .seal_text(TARGET_PURPOSE, t.expose())?;
        let data = added_data(&t, &sealed, reason, until);
        let permit = Permit::Roles(HOLD_OFFICER);
        let (entry, id) = self.act(actor, permit, HOLD, "add", "-", None, |entries| {
            let id = next_hold_id(entries);
            Ok((Event::new(HOLD_ADDED, "", id.as_str(), data), id))
        })?;
        Ok(HoldAdded {
            id,
            target_kind: t.kind(),
            seq: entry.seq,
        })
    }

    /// Releases a hold (`hold.released`): its legal-hold copies are
    /// destroyed by the next purge. Decided under the log's lock, signed
    /// by a registered hold officer; an unknown or released hold is a
    /// refusal, logged (`hold.refused`).
    pub fn release_hold(&self, actor: &Actor, id: &str, reason: &str) -> Result<u64, DeskError> {
        self.check_texts(actor, HOLD, "release", id, &[("--reason", reason)])?;
        let permit = Permit::Roles(HOLD_OFFICER);
        let (entry, ()) = self.act(actor, permit, HOLD, "release", id, None, |entries| {
            let holds = fold_holds(entries);
            let Some(h) = holds.iter().find(|h| h.id == id) else {
                return Err(refused(rq::refuse(
                    RefusalCode::UnknownHold,
                    format!("no hold {:?}", rq::sanitize(id)),
                )));
            };
            if h.released_at.is_some() {
                return Err(refused(rq::refuse(
                    RefusalCode::HoldReleased,
                    format!("hold {} was already released", h.id),
                )));
            }
            Ok((
                Event::new(HOLD_RELEASED, "", id, json!({ "reason": reason })),
                (),
            ))
        })?;
        Ok(entry.seq)
    }

    /// The holds active at `now` (every hold ever added with `all`).
    pub fn holds(&self, all: bool, now: DateTime<Utc>) -> Result<HoldList, DeskError> {
        let today = kst_today(now);
        let holds = fold_holds(&self.entries()?)
            .into_iter()
            .filter(|h| all || h.is_active(today))
            .collect();
        Ok(HoldList { today, holds })
    }
}
