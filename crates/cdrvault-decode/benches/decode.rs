//! Decode throughput on 10,000 typical records per format.
//!
//! Run: `cargo bench -p cdrvault-decode -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` defines an undocumented public function: a bench
// target has no API to document.
#![allow(missing_docs)]

use std::hint::black_box;

use cdrvault_decode::{ColumnMapping, CsvDecoder, CsvOptions, Decoder, JsonLinesDecoder};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: usize = 10_000;

const HEADER: &str = "record_id,record_type,service,caller,callee,imsi,imei,start_time,end_time,duration_s,usage_count,cell_id,ip";

fn csv_lines(quoted: bool) -> Vec<String> {
    (0..N)
        .map(|i| {
            let caller = format!("010-{:04}-{:04}", i % 10_000, (i * 7) % 10_000);
            let callee = if quoted {
                format!("\"+82 2, {:07}\"", i)
            } else {
                format!("+82 2 {:07}", i)
            };
            format!(
                "r-{i},mobile,voice,{caller},{callee},45005{:010},3569380356{:04}8,2026-11-01T10:{:02}:00+09:00,2026-11-01T10:{:02}:30+09:00,30,1,450-05-1a2b3c-{:02},10.0.{}.{}",
                i, i % 10_000, i % 60, i % 60, i % 100, i % 256, (i / 256) % 256
            )
        })
        .collect()
}

fn json_lines() -> Vec<String> {
    (0..N)
        .map(|i| {
            format!(
                r#"{{"record_id":"r-{i}","record_type":"mobile","service":"voice","caller":"010-{:04}-{:04}","callee":"+82 2 {:07}","imsi":"45005{:010}","imei":"3569380356{:04}8","start_time":"2026-11-01T10:{:02}:00+09:00","end_time":"2026-11-01T10:{:02}:30+09:00","duration_s":30,"usage_count":1,"cell_id":"450-05-1a2b3c-{:02}","ip":null}}"#,
                i % 10_000, (i * 7) % 10_000, i, i, i % 10_000, i % 60, i % 60, i % 100
            )
        })
        .collect()
}

fn run(c: &mut Criterion, name: &str, decoder: &dyn Decoder, lines: &[String]) {
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for l in lines {
                if let Ok(r) = decoder.decode(black_box(l.as_bytes())) {
                    black_box(&r);
                    ok += 1;
                }
            }
            assert_eq!(ok, lines.len());
        })
    });
    g.finish();
    eprintln!("{name}: {N} records, {bytes} bytes");
}

fn bench(c: &mut Criterion) {
    let mapping = ColumnMapping::default();
    let csv = CsvDecoder::from_header(HEADER.as_bytes(), &mapping, &CsvOptions::default()).unwrap();
    run(c, "csv_plain", &csv, &csv_lines(false));
    run(c, "csv_quoted", &csv, &csv_lines(true));
    let json = JsonLinesDecoder::new(mapping);
    let lines = json_lines();
    run(c, "jsonl", &json, &lines);

    // Reference: serde_json only parsing the same lines (values skipped, not
    // even looked at), the floor for any serde_json-based decoder.
    let mut g = c.benchmark_group("jsonl_serde_json_floor");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("ignored_any", |b| {
        b.iter(|| {
            for l in &lines {
                let v: serde::de::IgnoredAny = serde_json::from_str(black_box(l)).unwrap();
                black_box(v);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
