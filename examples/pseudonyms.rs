//! Prints the per-day pseudonyms of one number, for `benches/lookup.sh` to
//! give DuckDB the same query cdrvault runs:
//!
//! `cargo run --release --example pseudonyms -- KEYS_DIR MASTER_KEY_FILE +8210... FROM TO`
//!
//! One line per (class, date) in [FROM, TO] that has keys: `class date hex`.
//! Pseudonyms are not identifiers, but computing them needs the key store.

use cdrvault_crypto::Pseudonymizer;
use cdrvault_keystore::{load_master_key, KeyStore, MasterKeySource};
use cdrvault_model::Msisdn;
use chrono::NaiveDate;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert!(
        a.len() == 6,
        "usage: pseudonyms KEYS_DIR MASTER_KEY_FILE NUMBER FROM TO"
    );
    let master = load_master_key(&MasterKeySource::File(a[2].clone().into())).expect("master key");
    let keys = KeyStore::open(a[1].as_ref(), master).expect("key store");
    let number = Msisdn::parse(&a[3]).expect("a phone number");
    let from: NaiveDate = a[4].parse().expect("FROM as YYYY-MM-DD");
    let to: NaiveDate = a[5].parse().expect("TO as YYYY-MM-DD");
    for info in keys.list().expect("list keys") {
        if info.date < from || info.date > to {
            continue;
        }
        let pk = keys
            .existing_period_keys(&info.class, info.date)
            .expect("keys")
            .expect("period keys");
        let p = Pseudonymizer::new(&pk.pseudonym, pk.pseudonym_scheme).pseudonym_msisdn(&number);
        println!("{} {} {}", info.class, info.date, hex::encode(p.0));
    }
}
