//! Unit tests of a whole run against an in-memory journal and a real key
//! store (the end-to-end tests in `tests/purge.rs` add crashes and the CLI).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;

use cdrvault_audit::{Entry, Event};
use cdrvault_crypto::{Identifiers, MasterKey, Pseudonymizer};
use cdrvault_keystore::KeyStore;
use cdrvault_model::Msisdn;
use cdrvault_model::Target;
use cdrvault_retention::{kst_midnight, ClassSpec, RetentionPolicy};
use cdrvault_store::writer::write_named_file;
use cdrvault_store::{BatchBuilder, FileMeta, PartitionKey, ProtectedRow, WriterOptions};
use chrono::NaiveDate;
use zeroize::Zeroizing;

use crate::holds::tests::entry;
use crate::holds::{added_data, HOLD_ADDED};
use crate::run::{purge, Journal, PurgeOptions, PURGE_COMPLETED, PURGE_STARTED};
use crate::PurgeError;

/// A journal in memory; "sealing" is string reversal, good enough for a
/// test double that never leaves the process.
#[derive(Default)]
struct MemJournal(RefCell<Vec<Entry>>);

impl Journal for MemJournal {
    fn entries(&self) -> Result<Vec<Entry>, PurgeError> {
        Ok(self.0.borrow().clone())
    }
    fn append(&self, ev: Event) -> Result<Entry, PurgeError> {
        let mut v = self.0.borrow_mut();
        let e = entry(
            v.len() as u64 + 1,
            &ev.kind,
            &ev.actor,
            &ev.subject,
            ev.data,
        );
        v.push(e.clone());
        Ok(e)
    }
    fn open_text(&self, _purpose: &str, sealed: &str) -> Result<Zeroizing<String>, PurgeError> {
        Ok(Zeroizing::new(sealed.chars().rev().collect()))
    }
}

fn policy() -> RetentionPolicy {
    let c = |name: &str, months: Option<u32>| ClassSpec {
        name: name.into(),
        period_months: months,
        period_days: None,
        hold: months.is_none(),
        description: String::new(),
        basis: String::new(),
    };
    RetentionPolicy::new(&[c("mobile", Some(12)), c("legal_hold", None)], &[]).unwrap()
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// Writes a partition of `n` rows; row i has caller `numbers[i % len]`.
fn write_partition(
    root: &Path,
    keys: &KeyStore,
    class: &str,
    date: NaiveDate,
    numbers: &[&str],
    n: usize,
) {
    let pk = keys.period_keys(class, date).unwrap();
    let ps = Pseudonymizer::new(&pk.pseudonym, pk.pseudonym_scheme);
    let mut sealer = pk.data.seal_context();
    let mut b = BatchBuilder::with_capacity(n);
    for i in 0..n {
        let caller = Msisdn::parse(numbers[i % numbers.len()]).unwrap();
        let ids = Identifiers {
            caller: Some(caller),
            ..Default::default()
        };
        let rid = format!("{class}-{date}-{i}");
        let mut sealed = Vec::new();
        sealer
            .seal_identifiers(rid.as_bytes(), &ids, &mut sealed)
            .unwrap();
        b.push(&ProtectedRow {
            record_id: &rid,
            record_type: "mobile",
            service: "voice",
            start_us: kst_midnight(date).timestamp_micros() + 1,
            end_us: kst_midnight(date).timestamp_micros() + 2,
            duration_s: Some(1),
            usage_count: None,
            pseudonyms: [
                Some(ps.pseudonym_msisdn(&caller).0),
                None,
                None,
                None,
                None,
                None,
            ],
            seal_ctx: *sealer.context_id().as_bytes(),
            sealed: &sealed,
        })
        .unwrap();
    }
    let batch = b.finish().unwrap();
    let meta = FileMeta {
        key_version: 1,
        pseudonym_scheme: cdrvault_crypto::PseudonymScheme::CURRENT,
        origin: "test".into(),
    };
    let key = PartitionKey::new(class, date);
    write_named_file(root, &key, "a", &[batch], &WriterOptions::default(), &meta).unwrap();
}

#[test]
fn a_run_preserves_held_rows_destroys_the_rest_and_an_unfinished_run_is_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys = KeyStore::init(&tmp.path().join("keys"), &MasterKey::generate()).unwrap();
    let held = "+821001110000";
    write_partition(
        &data,
        &keys,
        "mobile",
        d("2024-01-01"),
        &[held, "+821002220000"],
        10,
    );
    write_partition(
        &data,
        &keys,
        "mobile",
        d("2024-01-02"),
        &["+821002220000"],
        4,
    );
    write_partition(&data, &keys, "mobile", d("2024-06-01"), &[held], 3);
    let j = MemJournal::default();
    let sealed: String = held.chars().rev().collect();
    let target = Target::parse("msisdn", held).unwrap();
    j.append(Event::new(
        HOLD_ADDED,
        "desk",
        "h1",
        added_data(&target, &sealed, "case", None),
    ))
    .unwrap();
    let policy = policy();
    let opts = PurgeOptions {
        data_dir: &data,
        policy: &policy,
        as_of: kst_midnight(d("2025-01-03")),
        operator: "op",
        approver: None,
        dry_run: false,
        writer: WriterOptions::default(),
        dead_letter_dir: None,
        dead_letter_period: cdrvault_retention::Period::Months(3),
    };
    assert!(matches!(
        purge(&keys, &j, &opts),
        Err(PurgeError::NoApprover)
    ));
    let opts = PurgeOptions {
        approver: Some("officer"),
        ..opts
    };
    // simulate a run that was killed right after writing purge.started:
    // the dry run reports it as pending and plans nothing twice
    let dry = purge(
        &keys,
        &j,
        &PurgeOptions {
            dry_run: true,
            ..opts.clone()
        },
    )
    .unwrap();
    let planned = dry.run.expect("two days expired").started;
    assert_eq!(planned.partitions.len(), 2);
    assert_eq!((planned.files, planned.rows), (2, 14));
    j.append(Event::new(
        PURGE_STARTED,
        "op",
        "purge",
        serde_json::to_value(&planned).unwrap(),
    ))
    .unwrap();
    let dry = purge(
        &keys,
        &j,
        &PurgeOptions {
            dry_run: true,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(dry.resumed.len(), 1);
    assert!(dry.run.is_none());

    let report = purge(&keys, &j, &opts).unwrap();
    assert_eq!(report.resumed.len(), 1);
    assert!(report.run.is_none());
    let done = &report.resumed[0];
    assert_eq!(
        done.keys_destroyed,
        vec!["mobile/2024-01-01", "mobile/2024-01-02"]
    );
    assert_eq!(done.preserved.len(), 1);
    assert_eq!(
        done.preserved[0].rows, 5,
        "every other row of 2024-01-01 is the held number"
    );
    // what is left: the unexpired day and the legal-hold copy
    let left: BTreeSet<String> = cdrvault_store::reader::list_partitions(&data)
        .unwrap()
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        left,
        [
            "class=legal_hold/date=2024-01-01",
            "class=mobile/date=2024-06-01"
        ]
        .map(String::from)
        .into()
    );
    assert!(keys
        .existing_period_keys("mobile", d("2024-01-01"))
        .unwrap()
        .is_none());
    // the copy is pseudonymised under the legal-hold key of that day
    let hk = keys
        .existing_period_keys("legal_hold", d("2024-01-01"))
        .unwrap()
        .unwrap();
    let want = Pseudonymizer::new(&hk.pseudonym, hk.pseudonym_scheme)
        .pseudonym_msisdn(&Msisdn::parse(held).unwrap());
    let f = &cdrvault_store::reader::partition_files(
        &data,
        &PartitionKey::new("legal_hold", d("2024-01-01")),
    )
    .unwrap()[0];
    let b = &cdrvault_store::reader::read_file(f).unwrap()[0];
    let callers = b
        .column(cdrvault_store::schema::col::CALLER_P)
        .as_any()
        .downcast_ref::<arrow_array::FixedSizeBinaryArray>()
        .unwrap();
    assert!((0..b.num_rows()).all(|i| callers.value(i) == want.as_bytes().as_slice()));
    let kinds: Vec<String> = j.0.borrow().iter().map(|e| e.kind.clone()).collect();
    assert_eq!(kinds, vec![HOLD_ADDED, PURGE_STARTED, PURGE_COMPLETED]);
    assert_eq!(j.0.borrow()[2].data["started_seq"], 2);
    // nothing more to do
    let again = purge(&keys, &j, &opts).unwrap();
    assert!(again.run.is_none() && again.resumed.is_empty());
}
