//! Operators at the desk: registering and revoking them (signed by an
//! administrator; the first one by the configured bootstrap administrator
//! with their own key).

use std::collections::BTreeSet;

use cdrvault_audit::operators::{Registration, Revocation};
use cdrvault_identity::{Fingerprint, OperatorKey, Role};
use cdrvault_requests::{self as rq, RefusalCode};

use crate::{Actor, Desk, DeskError, Permit};

const OPERATOR: &str = "operator";

impl Desk {
    /// Registers operator `name` with `key` and `roles`
    /// (`operator.registered`), signed by `actor`: an active administrator;
    /// or, while nobody is registered, the configured bootstrap
    /// administrator registering themself (name and key of
    /// `[identity.bootstrap_admin]`, with the role `admin`). A name with an
    /// active key, a key registered before, or an actor without the right
    /// is refused and logged (`operator.refused`).
    pub fn register_operator(
        &self,
        actor: &Actor,
        name: &str,
        key: &OperatorKey,
        roles: &BTreeSet<Role>,
    ) -> Result<u64, DeskError> {
        let subject = rq::sanitize(name);
        if let Err(e) = cdrvault_identity::check_operator_name(name) {
            let r = rq::refuse(RefusalCode::RegistrationRefused, e.to_string());
            return Err(self.refuse(actor, OPERATOR, "register", &subject, r, None));
        }
        if roles.is_empty() {
            let r = rq::refuse(RefusalCode::RegistrationRefused, "no role given");
            return Err(self.refuse(actor, OPERATOR, "register", &subject, r, None));
        }
        let reg = Registration {
            name: name.to_owned(),
            roles: roles.clone(),
            public_key: key.clone(),
        };
        let permit = Permit::Register(&reg);
        let (e, ()) = self.act(actor, permit, OPERATOR, "register", &subject, None, |_| {
            Ok((reg.to_event(""), ()))
        })?;
        Ok(e.seq)
    }

    /// Revokes the active key of operator `name` (`operator.revoked`),
    /// signed by an active administrator. `fingerprint`, when given, must
    /// be that key. The last active administrator cannot be revoked.
    pub fn revoke_operator(
        &self,
        actor: &Actor,
        name: &str,
        fingerprint: Option<&Fingerprint>,
        reason: &str,
    ) -> Result<u64, DeskError> {
        let subject = rq::sanitize(name);
        self.check_texts(actor, OPERATOR, "revoke", &subject, &[("--reason", reason)])?;
        // The key to revoke is read now; the permit checks it again under
        // the log's lock (an active key of `name`, and the actor an admin).
        let entries = self.entries()?;
        let current = self
            .registry(&entries)
            .active_by_name(name)
            .map(|o| o.key.fingerprint().clone());
        let Some(key) = fingerprint.cloned().or(current) else {
            let r = rq::refuse(
                RefusalCode::RegistrationRefused,
                format!("no active operator {subject:?}"),
            );
            return Err(self.refuse(actor, OPERATOR, "revoke", &subject, r, None));
        };
        let rev = Revocation {
            name: name.to_owned(),
            fingerprint: key,
            reason: reason.to_owned(),
        };
        let permit = Permit::Revoke(&rev);
        let (e, ()) = self.act(actor, permit, OPERATOR, "revoke", &subject, None, |_| {
            Ok((rev.to_event(""), ()))
        })?;
        Ok(e.seq)
    }
}
