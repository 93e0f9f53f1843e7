//! Which source column / JSON key holds each logical field.

use cdrvault_model::Field;

use crate::DecodeError;

/// Maps each logical [`Field`] to the column name (CSV) or key (JSON) a
/// carrier's export uses for it.
///
/// The default maps every field to its [`Field::name`] (`record_id`,
/// `caller`, ...). Names are matched exactly (case-sensitive); CSV header
/// names are trimmed of surrounding whitespace before matching, JSON keys are
/// not. No two fields can share a source name.
///
/// ```
/// use cdrvault_decode::ColumnMapping;
/// use cdrvault_model::Field;
///
/// let m = ColumnMapping::with_overrides([("caller", "CALLING_NBR"), ("callee", "CALLED_NBR")])?;
/// assert_eq!(m.source_name(Field::Caller), "CALLING_NBR");
/// assert_eq!(m.field_for("CALLED_NBR"), Some(Field::Callee));
/// assert_eq!(m.field_for("caller"), None);
/// assert_eq!(m.field_for("record_id"), Some(Field::RecordId));
/// # Ok::<(), cdrvault_decode::DecodeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// Source name of each field, indexed by `Field as usize`.
    names: [Box<str>; Field::COUNT],
    /// Open-addressing hash table over `key(name)` for
    /// [`field_for`](Self::field_for): slot `i` holds a key (0 = empty) and
    /// `slot_fields[i]` the field it belongs to. Derived from `names`, so it
    /// never makes two equal mappings differ.
    slots: [u64; SLOTS],
    slot_fields: [u8; SLOTS],
}

/// Hash table size: a power of two well above [`Field::COUNT`], so probes are
/// short and there is always an empty slot to end a search.
const SLOTS: usize = 32;

#[inline]
fn slot(key: u64) -> usize {
    // Fibonacci hashing: the top bits of the product are well mixed.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as usize
}

/// Length and first bytes of a name packed in a `u64`: the length in the top
/// byte (names longer than 255 bytes share 255) and up to 7 leading bytes below.
#[inline]
fn key(name: &[u8]) -> u64 {
    // Built in registers: going through a stack buffer costs a `memcpy` call
    // and a store-forwarding stall on every key of every JSON record.
    let prefix = match name.first_chunk::<8>() {
        Some(head) => u64::from_le_bytes(*head) & 0x00ff_ffff_ffff_ffff,
        None => name
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &b)| acc | u64::from(b) << (8 * i)),
    };
    let len = u64::from(u8::try_from(name.len()).unwrap_or(u8::MAX));
    prefix | len << 56
}

impl Default for ColumnMapping {
    /// Every field is read from the column / key named [`Field::name`].
    fn default() -> Self {
        ColumnMapping::from_names(Field::ALL.map(|f| Box::from(f.name())))
    }
}

impl ColumnMapping {
    fn from_names(names: [Box<str>; Field::COUNT]) -> Self {
        let mut slots = [0u64; SLOTS];
        let mut slot_fields = [0u8; SLOTS];
        for (i, name) in names.iter().enumerate() {
            // Names are never empty, so a key is never 0 (the length byte is set).
            let k = key(name.as_bytes());
            let mut s = slot(k);
            while slots[s] != 0 {
                s = (s + 1) % SLOTS;
            }
            slots[s] = k;
            slot_fields[s] = i as u8;
        }
        ColumnMapping {
            names,
            slots,
            slot_fields,
        }
    }

    /// The default mapping with some fields read from other columns.
    ///
    /// Each override is `(field, source)`: the field's default name (as in
    /// [`Field::name`], e.g. `"caller"`) and the column / key the carrier
    /// uses for it (e.g. `"CALLING_NBR"`). `source` is trimmed of surrounding
    /// whitespace. Fields that are not overridden keep their default name.
    ///
    /// # Errors
    ///
    /// * [`DecodeError::UnknownMappingField`]: `field` is not a field name;
    /// * [`DecodeError::DuplicateMappingField`]: the same field is overridden twice;
    /// * [`DecodeError::EmptyMappingName`]: `source` is blank;
    /// * [`DecodeError::ConflictingMapping`]: after applying the overrides two
    ///   fields would be read from the same source (including a field left at
    ///   its default name that another field was mapped to).
    pub fn with_overrides<'s>(
        overrides: impl IntoIterator<Item = (&'s str, &'s str)>,
    ) -> Result<ColumnMapping, DecodeError> {
        let mut names = Field::ALL.map(|f| Box::<str>::from(f.name()));
        let mut overridden = 0u32;
        for (field_name, source) in overrides {
            let field =
                Field::from_name(field_name).ok_or_else(|| DecodeError::UnknownMappingField {
                    name: field_name.to_owned(),
                })?;
            let bit = 1u32 << field as u32;
            if overridden & bit != 0 {
                return Err(DecodeError::DuplicateMappingField { field });
            }
            overridden |= bit;
            let source = source.trim();
            if source.is_empty() {
                return Err(DecodeError::EmptyMappingName { field });
            }
            names[field as usize] = Box::from(source);
        }
        for (i, a) in names.iter().enumerate() {
            if names[i + 1..].contains(a) {
                return Err(DecodeError::ConflictingMapping {
                    source_name: a.to_string(),
                });
            }
        }
        Ok(ColumnMapping::from_names(names))
    }

    /// The source column / key that holds `field`.
    pub fn source_name(&self, field: Field) -> &str {
        &self.names[field as usize]
    }

    /// The field held by source column / key `source_name`, if any (exact match).
    pub fn field_for(&self, source_name: &str) -> Option<Field> {
        // Called for every key of every JSON record: one hash probe on a
        // packed (length, prefix) key, names compared in full only on a hit.
        let s = source_name.as_bytes();
        if s.is_empty() {
            return None;
        }
        let k = key(s);
        let mut i = slot(k);
        loop {
            match self.slots[i] {
                0 => return None,
                sk if sk == k => {
                    let f = usize::from(self.slot_fields[i]);
                    if s.len() <= 7 || self.names[f].as_bytes() == s {
                        return Field::ALL.get(f).copied();
                    }
                }
                _ => {}
            }
            i = (i + 1) % SLOTS;
        }
    }

    /// Every field with its source name, in canonical field order.
    pub fn iter(&self) -> impl Iterator<Item = (Field, &str)> + '_ {
        Field::ALL.into_iter().zip(self.names.iter().map(|n| &**n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_uses_field_names() {
        let m = ColumnMapping::default();
        for f in Field::ALL {
            assert_eq!(m.source_name(f), f.name());
            assert_eq!(m.field_for(f.name()), Some(f));
        }
        assert_eq!(m.field_for("Caller"), None, "matching is case-sensitive");
        assert_eq!(m.field_for(""), None);
        assert_eq!(m.field_for("calle"), None);
        assert_eq!(m.field_for("caller_"), None);
        assert_eq!(
            m.field_for("start_timf"),
            None,
            "differs after the packed prefix"
        );
        assert_eq!(m.iter().count(), Field::COUNT);
    }

    #[test]
    fn overrides_replace_default_names() {
        let m = ColumnMapping::with_overrides([
            ("caller", " CALLING_NBR "),
            ("callee", "CALLED_NBR"),
            ("start_time", "발신시각"),
        ])
        .unwrap();
        assert_eq!(m.source_name(Field::Caller), "CALLING_NBR");
        assert_eq!(m.field_for("CALLING_NBR"), Some(Field::Caller));
        assert_eq!(m.field_for("발신시각"), Some(Field::StartTime));
        assert_eq!(m.field_for("caller"), None);
        assert_eq!(m.field_for("imsi"), Some(Field::Imsi));
        let long = "x".repeat(300);
        let m = ColumnMapping::with_overrides([("ip", long.as_str())]).unwrap();
        assert_eq!(m.field_for(&long), Some(Field::Ip));
        assert_eq!(m.field_for(&"x".repeat(301)), None);
        assert_eq!(m.field_for(&"x".repeat(299)), None);
    }

    #[test]
    fn names_sharing_length_and_prefix_are_told_apart() {
        let names: Vec<String> = (0..Field::COUNT)
            .map(|i| format!("COLUMN_NAME_{i:02}"))
            .collect();
        let m = ColumnMapping::with_overrides(
            Field::ALL
                .iter()
                .zip(&names)
                .map(|(f, n)| (f.name(), n.as_str())),
        )
        .unwrap();
        for (f, n) in Field::ALL.iter().zip(&names) {
            assert_eq!(m.field_for(n), Some(*f));
        }
        assert_eq!(m.field_for("COLUMN_NAME_13"), None);
        assert_eq!(m.field_for("record_id"), None);
    }

    #[test]
    fn swapping_two_names_is_allowed() {
        let m =
            ColumnMapping::with_overrides([("caller", "callee"), ("callee", "caller")]).unwrap();
        assert_eq!(m.field_for("caller"), Some(Field::Callee));
        assert_eq!(m.field_for("callee"), Some(Field::Caller));
    }

    #[test]
    fn bad_overrides_are_refused() {
        assert_eq!(
            ColumnMapping::with_overrides([("calling", "X")]).unwrap_err(),
            DecodeError::UnknownMappingField {
                name: "calling".into()
            }
        );
        assert_eq!(
            ColumnMapping::with_overrides([("caller", "  ")]).unwrap_err(),
            DecodeError::EmptyMappingName {
                field: Field::Caller
            }
        );
        assert_eq!(
            ColumnMapping::with_overrides([("caller", "A"), ("callee", "A")]).unwrap_err(),
            DecodeError::ConflictingMapping {
                source_name: "A".into()
            }
        );
        // Mapped onto another field's default name, which that field still uses.
        assert_eq!(
            ColumnMapping::with_overrides([("caller", "imsi")]).unwrap_err(),
            DecodeError::ConflictingMapping {
                source_name: "imsi".into()
            }
        );
        assert_eq!(
            ColumnMapping::with_overrides([("caller", "A"), ("caller", "B")]).unwrap_err(),
            DecodeError::DuplicateMappingField {
                field: Field::Caller
            }
        );
    }
}
