//! The effective security settings in the access log: `config.security`
//! (subject `-`; data: `digest`, `previous_digest`, `changed` — the names
//! of the settings that differ from the previous entry — and `settings`,
//! [`cdrvault_config::SecuritySettings`]). The desk's one append path
//! puts one before the first entry it appends once the digest differs
//! from the last `config.security` (or there is none), whoever appends and
//! whatever the entry — a refusal included.

use cdrvault_audit::{Entry, Event};
use cdrvault_config::Settings;
use serde_json::{json, Value};

use crate::event;

/// Kind of the entry that records the effective security settings.
pub const CONFIG_SECURITY: &str = "config.security";

/// The `config.security` event to append before the next entry, if the
/// security settings in effect differ from the last one recorded.
pub(crate) fn change(settings: &Settings, entries: &[Entry]) -> Option<Event> {
    let now = settings.security();
    let digest = now.digest();
    let last = entries.iter().rev().find(|e| e.kind == CONFIG_SECURITY);
    if last.is_some_and(|e| e.data["digest"] == digest.as_str()) {
        return None;
    }
    let settings = now.to_json();
    let changed: Vec<String> = settings
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| last.is_none_or(|e| e.data["settings"][k.as_str()] != **v))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let previous = last.map_or(Value::Null, |e| e.data["digest"].clone());
    Some(event(
        CONFIG_SECURITY,
        "-",
        json!({
            "digest": digest,
            "previous_digest": previous,
            "changed": changed,
            "settings": settings,
        }),
    ))
}
