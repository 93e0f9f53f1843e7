//! Criterion benches of the ingest hot path, and of the two encryption
//! designs the project considered (see ARCHITECTURE.md, "Encryption at rest").
//!
//! * `hot_path/per_row_aead`: decode → normalise → classify → 6 AES-CMAC
//!   pseudonyms → AES-256-GCM seal of the identifier blob → Arrow batch →
//!   Parquet bytes in memory. This is the shipped design (one worker thread).
//! * `stages/*`, the same path cut into the stages of the per-record CPU
//!   budget (ARCHITECTURE.md, pipeline): `decode_normalise` (CSV split +
//!   normalise), `process_chunk` (all of a worker's work: decode … Arrow),
//!   `parquet_encode` (the writer shards' work on the chunk's batches), and
//!   `pool_write_and_publish` (a `WriterPool` writing them to files in a
//!   temporary directory, fsync and rename included).
//! * `encryption_cost/*`: the two designs on the same rows. Per-row AEAD costs
//!   `per_row_aead_seal` plus writing the `sealed` column
//!   (`write_shipped_batch_with_sealed_column` − `write_pseudonyms_only`);
//!   Parquet modular encryption (identifiers as plaintext columns, AES-GCM
//!   pages, one key per identifier column) costs
//!   `write_parquet_modular_encryption` − `write_pseudonyms_only`.

// `criterion_group!` defines an undocumented public function: a bench
// target has no API to document.
#![allow(missing_docs)]

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use cdrvault_decode::{decoder_for, ColumnMapping, CsvOptions, InputFormat};
use cdrvault_keystore::KeyStore;
use cdrvault_pipeline::{process_chunk, Chunk, Protect};
use cdrvault_store::writer::{writer_properties, FileMeta, WriterOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parquet::arrow::ArrowWriter;
use parquet::encryption::encrypt::FileEncryptionProperties;

const N: u64 = 100_000;

fn sample() -> (Vec<u8>, Vec<u8>) {
    let opts = cdrvault_synth::GenOptions {
        count: N,
        start: chrono::Utc::now().date_naive() - chrono::Duration::days(3),
        days: 1,
        ..Default::default()
    };
    let mut csv = Vec::new();
    cdrvault_synth::generate(&opts, &mut csv, None).unwrap();
    let nl = csv.iter().position(|&b| b == b'\n').unwrap();
    let body = csv.split_off(nl + 1);
    csv.pop();
    (csv, body)
}

fn setup() -> (tempfile::TempDir, Arc<Protect>, Chunk) {
    let dir = tempfile::tempdir().unwrap();
    let master = cdrvault_crypto::MasterKey::generate();
    let store = KeyStore::init(&dir.path().join("keys"), &master).unwrap();
    let settings = cdrvault_config::load(cdrvault_config::Source::Embedded).unwrap();
    let protect = Arc::new(Protect::new(
        settings.retention.clone(),
        settings.input.normalize.clone(),
        Arc::new(store),
        chrono::Utc::now(),
    ));
    let (header, body) = sample();
    let decoder = decoder_for(
        InputFormat::Csv,
        Some(&header),
        &ColumnMapping::default(),
        &CsvOptions::default(),
    )
    .unwrap();
    let chunk = Chunk {
        seq: 0,
        source: Arc::from("bench"),
        decoder: Arc::from(decoder),
        first_line: 2,
        offset: 0,
        data: body,
        oversized: None,
        frames: None,
    };
    (dir, protect, chunk)
}

fn to_parquet(
    batches: &[(cdrvault_store::PartitionKey, RecordBatch)],
    props_for: impl Fn(&cdrvault_store::PartitionKey) -> parquet::file::properties::WriterProperties,
) -> usize {
    let mut total = 0;
    for (key, b) in batches {
        let mut w = ArrowWriter::try_new(
            Vec::with_capacity(8 << 20),
            b.schema(),
            Some(props_for(key)),
        )
        .unwrap();
        w.write(b).unwrap();
        total += w.into_inner().unwrap().len();
    }
    total
}

fn bench(c: &mut Criterion) {
    let (_dir, protect, chunk) = setup();
    let opts = WriterOptions::default();
    let meta = FileMeta {
        key_version: 1,
        origin: "bench".into(),
        pseudonym_scheme: cdrvault_store::PseudonymScheme::CURRENT,
    };
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);

    g.bench_function("per_row_aead", |b| {
        b.iter(|| {
            let out = process_chunk(&chunk, &protect).unwrap();
            let parts: Vec<_> = out.parts.into_iter().map(|p| (p.key, p.batch)).collect();
            to_parquet(&parts, |k| writer_properties(&opts, &meta, k))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("decode_normalise", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for line in chunk.data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(raw) = chunk.decoder.decode(line) {
                    n += usize::from(cdrvault_model::normalize(&raw, &Default::default()).is_ok());
                }
            }
            n
        })
    });
    g.bench_function("process_chunk", |b| {
        b.iter(|| process_chunk(&chunk, &protect).unwrap().parts.len())
    });
    let parts: Vec<_> = process_chunk(&chunk, &protect)
        .unwrap()
        .parts
        .into_iter()
        .map(|p| (p.key, p.batch))
        .collect();
    g.bench_function("parquet_encode", |b| {
        b.iter(|| to_parquet(&parts, |k| writer_properties(&opts, &meta, k)))
    });
    g.bench_function("pool_write_and_publish", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut pool = cdrvault_store::WriterPool::new(dir.path(), opts.clone(), meta.clone());
            for (k, batch) in &parts {
                pool.write(k, batch).unwrap();
            }
            pool.finish().unwrap().0.len()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hot_path_extra");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);

    // Pseudonyms only; then the same plus plaintext identifier columns under
    // Parquet modular encryption. The identifier text columns are rebuilt from
    // the normalised records (decode + normalise are repeated per iteration,
    // as in the shipped path).
    let header_dec = chunk.decoder.clone();
    let normalised = |data: &[u8]| -> Vec<[String; 6]> {
        let mut v = Vec::with_capacity(N as usize);
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(raw) = header_dec.decode(line) else {
                continue;
            };
            let Ok(c) = cdrvault_model::normalize(&raw, &Default::default()) else {
                continue;
            };
            v.push([
                c.caller
                    .map(|m| m.expose_e164().to_owned())
                    .unwrap_or_default(),
                c.callee
                    .map(|m| m.expose_e164().to_owned())
                    .unwrap_or_default(),
                c.imsi.map(|m| m.expose().to_owned()).unwrap_or_default(),
                c.imei.map(|m| m.expose().to_owned()).unwrap_or_default(),
                c.cell_id.map(|m| m.expose().to_owned()).unwrap_or_default(),
                c.ip.map(|m| m.expose().to_string()).unwrap_or_default(),
            ]);
        }
        v
    };
    let id_names = ["caller", "callee", "imsi", "imei", "cell_id", "ip"];
    let with_identifiers = |batch: &RecordBatch, ids: &[[String; 6]]| -> RecordBatch {
        // Drop the sealed column, append six plaintext identifier columns.
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .take(13)
            .map(|f| f.as_ref().clone())
            .collect();
        let mut cols: Vec<ArrayRef> = batch.columns().iter().take(13).cloned().collect();
        for (i, name) in id_names.iter().enumerate() {
            let mut sb = StringBuilder::new();
            for r in ids.iter().take(batch.num_rows()) {
                sb.append_value(&r[i]);
            }
            fields.push(Field::new(*name, DataType::Utf8, false));
            cols.push(Arc::new(sb.finish()));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    };
    let encryption = {
        let mut b = FileEncryptionProperties::builder(vec![7u8; 32]);
        for name in id_names {
            b = b.with_column_key(name, vec![9u8; 32]);
        }
        b.build().unwrap()
    };

    g.finish();

    // Encryption cost of the two designs, on the same rows.
    let ids = normalised(&chunk.data);
    let out = process_chunk(&chunk, &protect).unwrap();
    let (key, shipped) = out
        .parts
        .into_iter()
        .max_by_key(|p| p.batch.num_rows())
        .map(|p| (p.key, p.batch))
        .unwrap();
    let rows = shipped.num_rows();
    let plain_ids = with_identifiers(&shipped, &ids);
    let pseudonyms_only = RecordBatch::try_new(
        Arc::new(Schema::new(
            shipped
                .schema()
                .fields()
                .iter()
                .take(13)
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        )),
        shipped.columns().iter().take(13).cloned().collect(),
    )
    .unwrap();
    let mut g = c.benchmark_group("encryption_cost");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(10);
    let pk = protect.keys.period_keys("mobile", key.date).unwrap();
    g.bench_function("per_row_aead_seal", |b| {
        let mut blob = Vec::with_capacity(128);
        let mut sealed = Vec::with_capacity(rows * 120);
        b.iter(|| {
            let mut sealer = pk.data.seal_context();
            sealed.clear();
            for (i, r) in ids.iter().take(rows).enumerate() {
                blob.clear();
                blob.extend_from_slice(r[0].as_bytes());
                blob.extend_from_slice(r[1].as_bytes());
                blob.extend_from_slice(r[2].as_bytes());
                blob.extend_from_slice(r[3].as_bytes());
                blob.extend_from_slice(r[4].as_bytes());
                blob.extend_from_slice(r[5].as_bytes());
                sealer
                    .seal(&(i as u64).to_le_bytes(), &blob, &mut sealed)
                    .unwrap();
            }
            sealed.len()
        })
    });
    g.bench_function("write_shipped_batch_with_sealed_column", |b| {
        b.iter(|| {
            to_parquet(&[(key.clone(), shipped.clone())], |k| {
                writer_properties(&opts, &meta, k)
            })
        })
    });
    g.bench_function("write_pseudonyms_only", |b| {
        b.iter(|| {
            to_parquet(&[(key.clone(), pseudonyms_only.clone())], |_| {
                parquet::file::properties::WriterProperties::builder()
                    .set_max_row_group_row_count(Some(opts.row_group_rows))
                    .build()
            })
        })
    });
    g.bench_function("write_plain_identifier_columns", |b| {
        b.iter(|| {
            to_parquet(&[(key.clone(), plain_ids.clone())], |_| {
                parquet::file::properties::WriterProperties::builder()
                    .set_max_row_group_row_count(Some(opts.row_group_rows))
                    .build()
            })
        })
    });
    g.bench_function("write_parquet_modular_encryption", |b| {
        b.iter(|| {
            to_parquet(&[(key.clone(), plain_ids.clone())], |_| {
                parquet::file::properties::WriterProperties::builder()
                    .set_max_row_group_row_count(Some(opts.row_group_rows))
                    .with_file_encryption_properties(encryption.clone())
                    .build()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
