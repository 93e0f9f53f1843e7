//! Per-record crypto costs on the ingest hot path.
//!
//! * `pseudonyms/6_per_record`: caller, callee, IMSI, IMEI, cell id, IP.
//! * `seal/identifier_blob`: encode + seal a typical ~80-byte blob.
//! * `aead_throughput`: per-row AEAD (one AES-GCM call per ~80-byte row)
//!   versus one AES-GCM call over a 64 KiB page (a proxy for Parquet modular
//!   encryption, which encrypts whole pages), in bytes per second.

// `criterion_group!` defines an undocumented public function: a bench
// target has no API to document.
#![allow(missing_docs)]

use std::hint::black_box;

use cdrvault_crypto::{
    DataKey, IdentifierRefs, Identifiers, PseudonymKey, PseudonymScheme, Pseudonymizer,
};
use cdrvault_model::{CellId, Imei, Imsi, IpAddr, Msisdn};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn sample() -> Identifiers {
    Identifiers {
        caller: Some(Msisdn::parse("010-1234-5678").unwrap()),
        callee: Some(Msisdn::parse("010-8765-4321").unwrap()),
        imsi: Some(Imsi::parse("450051234567890").unwrap()),
        imei: Some(Imei::parse("356938035643809").unwrap()),
        cell_id: Some(CellId::parse("450-05-1a2b3c-01").unwrap()),
        ip: Some(IpAddr::parse("203.0.113.7").unwrap()),
    }
}

fn pseudonyms(c: &mut Criterion) {
    let p1 = Pseudonymizer::new(&PseudonymKey::generate(), PseudonymScheme::HmacSha256);
    let p = Pseudonymizer::new(&PseudonymKey::generate(), PseudonymScheme::AesCmac);
    let ids = sample();
    let (caller, callee) = (ids.caller.unwrap(), ids.callee.unwrap());
    let (imsi, imei) = (ids.imsi.unwrap(), ids.imei.unwrap());
    let cell = ids.cell_id.clone().unwrap();
    let ip = ids.ip.unwrap();
    let mut g = c.benchmark_group("pseudonyms");
    g.throughput(Throughput::Elements(1));
    g.bench_function("6_per_record_v1_hmac", |b| {
        b.iter(|| {
            black_box((
                p1.pseudonym_msisdn(black_box(&caller)),
                p1.pseudonym_msisdn(black_box(&callee)),
                p1.pseudonym_imsi(black_box(&imsi)),
                p1.pseudonym_imei(black_box(&imei)),
                p1.pseudonym_cell(black_box(&cell)),
                p1.pseudonym_ip(black_box(&ip)),
            ))
        })
    });
    g.bench_function("6_per_record_v2_cmac_batched", |b| {
        b.iter(|| {
            black_box(p.pseudonyms(black_box(&IdentifierRefs {
                caller: Some(&caller),
                callee: Some(&callee),
                imsi: Some(&imsi),
                imei: Some(&imei),
                cell_id: Some(&cell),
                ip: Some(&ip),
            })))
        })
    });
    g.bench_function("1_msisdn", |b| {
        b.iter(|| p.pseudonym_msisdn(black_box(&caller)))
    });
    g.finish();
}

fn seal(c: &mut Criterion) {
    let k = DataKey::generate();
    let mut s = k.seal_context();
    let ids = sample();
    let mut blob = Vec::new();
    ids.encode_into(&mut blob);
    let mut out = Vec::with_capacity(1 << 20);
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("identifier_blob_{}B", blob.len()), |b| {
        b.iter(|| {
            if out.len() > (1 << 20) - 256 {
                out.clear();
            }
            s.seal_identifiers(b"record-id-0001", black_box(&ids), &mut out)
                .unwrap();
        })
    });
    g.finish();

    // Per-row AEAD vs one call per 64 KiB page, same number of bytes.
    let page = 64 * 1024;
    let rows = page / blob.len();
    let bytes = (rows * blob.len()) as u64;
    let plain_page = vec![0x5au8; rows * blob.len()];
    let mut g = c.benchmark_group("aead_throughput");
    g.throughput(Throughput::Bytes(bytes));
    let mut s2 = k.seal_context();
    let mut out2 = Vec::with_capacity(rows * (blob.len() + 28));
    g.bench_function(format!("per_row_{}B", blob.len()), |b| {
        b.iter(|| {
            out2.clear();
            for r in plain_page.chunks_exact(blob.len()) {
                s2.seal(b"", black_box(r), &mut out2).unwrap();
            }
        })
    });
    let mut s3 = k.seal_context();
    let mut out3 = Vec::with_capacity(page + 64);
    g.bench_function("per_page_64KiB", |b| {
        b.iter(|| {
            out3.clear();
            s3.seal(b"", black_box(&plain_page), &mut out3).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, pseudonyms, seal);
criterion_main!(benches);
