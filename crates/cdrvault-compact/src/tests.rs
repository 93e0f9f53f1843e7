use std::collections::BTreeSet;

use cdrvault_store::reader::read_file;
use cdrvault_store::writer::write_named_file;
use cdrvault_store::{scan_stream_positions, BatchBuilder, ProtectedRow, WriterPool};

use super::*;

fn batch(n: usize, tag: &str) -> RecordBatch {
    let mut b = BatchBuilder::with_capacity(n);
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p[8..].copy_from_slice(&(tag.len() as u64).to_le_bytes());
        let sealed = format!("sealed-{tag}-{i}");
        b.push(&ProtectedRow {
            record_id: &id,
            record_type: "mobile",
            service: "voice",
            start_us: 1_700_000_000_000_000 + i as i64,
            end_us: 1_700_000_000_000_000 + i as i64,
            duration_s: Some(i as i64),
            usage_count: None,
            pseudonyms: [Some(p), None, Some(p), None, None, None],
            seal_ctx: [7; 16],
            sealed: sealed.as_bytes(),
        })
        .unwrap();
    }
    b.finish().unwrap()
}

fn key(day: u32) -> PartitionKey {
    PartitionKey::new(
        "mobile",
        chrono::NaiveDate::from_ymd_opt(2026, 10, day).unwrap(),
    )
}

fn meta(origin: &str) -> FileMeta {
    FileMeta {
        key_version: 1,
        pseudonym_scheme: cdrvault_store::PseudonymScheme::CURRENT,
        origin: origin.into(),
    }
}

fn wopts() -> WriterOptions {
    WriterOptions {
        row_group_rows: 64,
        max_file_rows: 250,
        ..Default::default()
    }
}

/// One ingest-style file (random pool name) per call.
fn ingest_file(root: &Path, day: u32, n: usize, tag: &str) {
    let mut pool = WriterPool::new(root, wopts(), meta("ingest"));
    pool.write(&key(day), &batch(n, tag)).unwrap();
    pool.finish().unwrap();
}

/// A published stream batch file.
fn stream_file(root: &Path, day: u32, f: &StreamFile, n: usize) {
    let id = f
        .file_name()
        .strip_prefix("part-")
        .unwrap()
        .strip_suffix(".parquet")
        .unwrap()
        .to_owned();
    let origin = format!("kafka:{}/{}@{}-{}", f.stream, f.partition, f.first, f.last);
    write_named_file(
        root,
        &key(day),
        &id,
        &[batch(n, &format!("s{}", f.first))],
        &wopts(),
        &meta(&origin),
    )
    .unwrap();
}

fn opts(root: &Path) -> Options<'_> {
    Options {
        data_dir: root,
        writer: wopts(),
        small_file_rows: 200,
        min_files: 2,
        classes: &[],
        from: None,
        to: None,
        dry_run: false,
        progress: None,
    }
}

#[derive(Default)]
struct Log {
    started: usize,
    completed: usize,
    veto: Option<String>,
}

impl Journal for Log {
    fn started(&mut self, _: &Plan) -> Result<(), CompactError> {
        self.started += 1;
        Ok(())
    }
    fn veto(&mut self, _: &PartitionKey) -> Result<Option<String>, CompactError> {
        Ok(self.veto.clone())
    }
    fn completed(&mut self, _: &Report) -> Result<(), CompactError> {
        self.completed += 1;
        Ok(())
    }
}

/// Every row of a partition as (record_id, every column's bytes).
fn rows(root: &Path, k: &PartitionKey) -> BTreeSet<(String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for f in partition_files(root, k).unwrap() {
        for b in read_file(&f).unwrap() {
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .unwrap();
            for i in 0..b.num_rows() {
                let cols = b
                    .columns()
                    .iter()
                    .map(|c| format!("{:?}", c.slice(i, 1)))
                    .collect();
                assert!(out.insert((ids.value(i).to_owned(), cols)), "row twice");
            }
        }
    }
    out
}

fn names(root: &Path, k: &PartitionKey) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(k.dir(root))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn small_files_merge_into_few_files_with_the_same_rows_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..6 {
        ingest_file(root, 1, 90, &format!("a{i}"));
    }
    ingest_file(root, 2, 10, "lonely");
    let before = rows(root, &key(1));
    let mut log = Log::default();
    // A dry run says what it would do and changes nothing.
    let dry = compact(
        &Options {
            dry_run: true,
            ..opts(root)
        },
        &|_| None,
        &mut log,
    )
    .unwrap();
    assert_eq!(dry.plan.merges.len(), 1);
    assert_eq!(dry.plan.merges[0].inputs.len(), 6);
    assert_eq!(dry.plan.merges[0].outputs, 3);
    assert_eq!(names(root, &key(1)).len(), 6);
    assert_eq!(log.started, 0);

    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| seen.lock().unwrap().push((done, total));
    let r = compact(
        &Options {
            progress: Some(&progress),
            ..opts(root)
        },
        &|_| None,
        &mut log,
    )
    .unwrap();
    assert_eq!((log.started, log.completed), (1, 1));
    assert_eq!(
        *seen.lock().unwrap(),
        [(0, 1), (1, 1)],
        "progress per partition"
    );
    assert_eq!((r.files_in, r.files_out, r.rows), (6, 3, 540));
    let after = names(root, &key(1));
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.iter().all(|n| is_compacted_file(n)), "{after:?}");
    assert_eq!(rows(root, &key(1)), before, "same rows, same bytes");
    assert_eq!(names(root, &key(2)).len(), 1, "one file: nothing to merge");
    // Files of up to max_file_rows, written like ingest files: bloom
    // filters on lookup columns, the inputs' metadata.
    let mut sizes = Vec::new();
    for f in partition_files(root, &key(1)).unwrap() {
        let r = ParquetRecordBatchReaderBuilder::try_new(File::open(&f).unwrap()).unwrap();
        sizes.push(r.metadata().file_metadata().num_rows());
        assert!(r
            .get_row_group_column_bloom_filter(0, cdrvault_store::schema::col::CALLER_P)
            .unwrap()
            .is_some());
        let kv = r.metadata().file_metadata().key_value_metadata().unwrap();
        let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
        assert_eq!(get("cdrvault.class").as_deref(), Some("mobile"));
        assert_eq!(get("cdrvault.key_version").as_deref(), Some("1"));
        assert_eq!(
            get("cdrvault.origin").as_deref(),
            Some("compaction; ingest")
        );
    }
    sizes.sort();
    assert_eq!(sizes, vec![40, 250, 250]);
    // A second run: one small file left, nothing to do, nothing logged.
    let again = compact(&opts(root), &|_| None, &mut log).unwrap();
    assert!(again.plan.is_empty() && again.done.is_empty());
    assert_eq!(log.started, 1);
}

#[test]
fn stream_files_merge_only_when_settled_and_positions_survive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sf = |first: i64, last: i64, index: u32, count: u32| StreamFile {
        stream: "cdr".into(),
        partition: 0,
        first,
        last,
        index,
        count,
    };
    stream_file(root, 1, &sf(0, 9, 0, 2), 10);
    stream_file(root, 2, &sf(0, 9, 1, 2), 10);
    stream_file(root, 1, &sf(10, 19, 0, 1), 10);
    stream_file(root, 1, &sf(20, 29, 0, 1), 10);
    // 30..=39 is caught while publishing: 1 of its 2 files.
    stream_file(root, 1, &sf(30, 39, 0, 2), 10);
    let before = scan_stream_positions(root).unwrap();
    let r = compact(&opts(root), &|_| None, &mut Log::default()).unwrap();
    assert_eq!(r.done.len(), 1);
    assert_eq!(r.done[0].files_in, 3, "{r:?}");
    let left = names(root, &key(1));
    assert!(left.contains(&sf(30, 39, 0, 2).file_name()), "{left:?}");
    assert_eq!(left.iter().filter(|n| is_compacted_file(n)).count(), 1);
    assert_eq!(scan_stream_positions(root).unwrap(), before);
    let merged = partition_files(root, &key(1)).unwrap();
    let origin = ParquetRecordBatchReaderBuilder::try_new(
        File::open(
            merged
                .iter()
                .find(|p| is_compacted_file(&file_name(p)))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap()
    .metadata()
    .file_metadata()
    .key_value_metadata()
    .unwrap()
    .iter()
    .find(|e| e.key == ORIGIN)
    .and_then(|e| e.value.clone());
    assert_eq!(origin.as_deref(), Some("compaction; kafka:cdr/0@0-29"));
}

#[test]
fn a_veto_or_a_changed_input_leaves_the_partition_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..3 {
        ingest_file(root, 1, 20, &format!("v{i}"));
    }
    let before = names(root, &key(1));
    let mut log = Log {
        veto: Some("a purge lists it".into()),
        ..Log::default()
    };
    let r = compact(&opts(root), &|_| None, &mut log).unwrap();
    assert_eq!(r.abandoned.len(), 1);
    assert_eq!(r.abandoned[0].reason, "a purge lists it");
    assert_eq!(names(root, &key(1)), before, "no temporaries left either");
    // Skipped at planning time: not even merged.
    let r = compact(
        &opts(root),
        &|_| Some("expired".into()),
        &mut Log::default(),
    )
    .unwrap();
    assert!(r.plan.merges.is_empty() && r.plan.skipped.len() == 1);
    assert_eq!(names(root, &key(1)), before);
}

#[test]
fn interrupted_swaps_are_finished_or_undone_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..3 {
        ingest_file(root, 1, 20, &format!("i{i}"));
    }
    let k = key(1);
    let pdir = k.dir(root);
    let before = rows(root, &k);
    let inputs = names(root, &k);
    // A swap killed after publishing its output, before deleting inputs:
    // readers already see only the output.
    let out = compacted_file_name("0123456789abcdef01234567");
    fs::copy(pdir.join(&inputs[0]), pdir.join(&out)).unwrap();
    let it = Intent {
        id: "aaaaaaaaaaaaaaaaaaaaaaaa".into(),
        outputs: vec![out.clone()],
        inputs: inputs[..1].to_vec(),
    };
    it.write(&pdir).unwrap();
    assert_eq!(rows(root, &k), before);
    // An orphaned merge temporary.
    fs::write(
        pdir.join(compacted_temp_name("bbbbbbbbbbbbbbbbbbbbbbbb")),
        b"partial",
    )
    .unwrap();
    let r = compact(
        &Options {
            min_files: 5,
            ..opts(root)
        },
        &|_| None,
        &mut Log::default(),
    )
    .unwrap();
    assert_eq!(r.plan.pending.len(), 1);
    assert_eq!(r.plan.pending[0].action, "finish");
    assert_eq!(r.plan.orphans.len(), 1);
    let mut expect: Vec<String> = inputs[1..].to_vec();
    expect.push(out);
    expect.sort();
    assert_eq!(names(root, &k), expect);
    assert_eq!(rows(root, &k), before);
}

#[test]
fn legal_hold_copies_and_foreign_files_are_never_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hold = PartitionKey::new(
        "legal_hold",
        chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
    );
    // Two hold copies (purge's deterministic names), a foreign file and
    // one ingest file: nothing to merge.
    for id in ["hold-7-mobile", "hold-8-fixed", "someone-elses"] {
        write_named_file(root, &hold, id, &[batch(5, id)], &wopts(), &meta("purge")).unwrap();
    }
    let mut pool = WriterPool::new(root, wopts(), meta("ingest"));
    pool.write(&hold, &batch(5, "ingested")).unwrap();
    pool.finish().unwrap();
    let before = names(root, &hold);
    let r = compact(&opts(root), &|_| None, &mut Log::default()).unwrap();
    assert!(r.plan.merges.is_empty(), "{r:?}");
    assert_eq!(names(root, &hold), before);
    assert!(before.contains(&"part-hold-7-mobile.parquet".to_string()));
}
