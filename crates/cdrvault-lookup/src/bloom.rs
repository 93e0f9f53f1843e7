//! Bloom-filter probes that read 32 bytes, not the whole filter.
//!
//! A Parquet split-block bloom filter (SBBF, parquet-format `BloomFilter.md`)
//! is a thrift `BloomFilterHeader` followed by `num_bytes` of 32-byte blocks.
//! A value's xxHash64 (seed 0) picks exactly one block (upper 32 bits) and one
//! bit in each of its eight words (lower 32 bits). So a membership probe needs
//! the header's length and one block: two small positioned reads instead of
//! the 128-256 KiB the `parquet` crate's `Sbbf::read_from_column_chunk`
//! reads. Over a year of partitions that is the difference between reading
//! a few hundred kilobytes and a few hundred megabytes per lookup.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use parquet::file::metadata::ColumnChunkMetaData;

/// Salt of the SBBF block mask (parquet-format `BloomFilter.md`).
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// Largest size of a compact-thrift `BloomFilterHeader`: field 1 (header
/// byte + 5-byte varint), three single-member unions of empty structs
/// (4 bytes each), stop byte.
const MAX_HEADER: u64 = 19;

/// xxHash64 with seed 0 of the value's plain encoding (for a
/// FIXED_LEN_BYTE_ARRAY: its bytes), as the bloom filter spec requires.
pub fn hash(value: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(value, 0)
}

fn block_may_contain(block: &[u8; 32], h: u64) -> bool {
    let x = h as u32;
    (0..8).all(|i| {
        let word = u32::from_le_bytes([
            block[i * 4],
            block[i * 4 + 1],
            block[i * 4 + 2],
            block[i * 4 + 3],
        ]);
        let bit = x.wrapping_mul(SALT[i]) >> 27;
        word & (1u32 << bit) != 0
    })
}

/// Parses the `num_bytes` field (field 1, i32) at the start of a compact-thrift
/// `BloomFilterHeader`: field header byte 0x15 then a zigzag varint.
fn header_num_bytes(buf: &[u8]) -> Option<u64> {
    let (&first, rest) = buf.split_first()?;
    if first != 0x15 {
        return None;
    }
    let mut v: u64 = 0;
    for (i, &b) in rest.iter().take(5).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let n = (v >> 1) as i64 ^ -((v & 1) as i64);
            return u64::try_from(n).ok();
        }
    }
    None
}

/// The location of one column chunk's bloom filter bitset.
#[derive(Debug, Clone, Copy)]
pub struct Bitset {
    offset: u64,
    blocks: u64,
}

impl Bitset {
    /// Locates the bitset of a column chunk: `Ok(None)` if the chunk has no
    /// bloom filter (or one this reader does not understand: the caller then
    /// reads the row group, which is always correct).
    pub fn locate(file: &File, cc: &ColumnChunkMetaData) -> io::Result<Option<Bitset>> {
        let (Some(off), Some(len)) = (cc.bloom_filter_offset(), cc.bloom_filter_length()) else {
            return Ok(None);
        };
        let (Ok(off), Ok(len)) = (u64::try_from(off), u64::try_from(len)) else {
            return Ok(None);
        };
        // The header is a thrift struct of at most 19 bytes (four fields,
        // the first an i32 varint); the bitset is a power of two of at least
        // 32 bytes (arrow-rs and parquet-mr round up, and folding halves).
        // Then `len - floor_pow2(len)` is exactly the header length, and the
        // header need not be read. Any other layout gives a difference of at
        // least 32: read and parse the header instead.
        let pow2 = 1u64 << (63 - len.leading_zeros());
        let num_bytes = if len > 32 && len - pow2 <= MAX_HEADER {
            pow2
        } else {
            let mut head = [0u8; 8];
            let n = (len as usize).min(head.len());
            file.read_exact_at(&mut head[..n], off)?;
            match header_num_bytes(&head[..n]) {
                Some(n) => n,
                None => return Ok(None),
            }
        };
        if num_bytes == 0 || num_bytes % 32 != 0 || num_bytes >= len || len - num_bytes > 64 {
            return Ok(None);
        }
        Ok(Some(Bitset {
            offset: off + (len - num_bytes),
            blocks: num_bytes / 32,
        }))
    }

    /// False only if the value is certainly absent.
    pub fn may_contain(&self, file: &File, h: u64) -> io::Result<bool> {
        let idx = ((h >> 32) * self.blocks) >> 32;
        let mut block = [0u8; 32];
        file.read_exact_at(&mut block, self.offset + idx * 32)?;
        Ok(block_may_contain(&block, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{FixedSizeBinaryArray, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::bloom_filter::Sbbf;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn value(i: u64) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&hash(&i.to_le_bytes()).to_le_bytes());
        v[8..].copy_from_slice(&hash(&(i ^ 0xabcdef).to_le_bytes()).to_le_bytes());
        v
    }

    #[test]
    fn partial_probe_agrees_with_the_full_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "p",
            DataType::FixedSizeBinary(16),
            false,
        )]));
        let props = WriterProperties::builder()
            .set_bloom_filter_enabled(true)
            .set_bloom_filter_fpp(0.01)
            .set_bloom_filter_max_ndv(20_000)
            .set_max_row_group_row_count(Some(5_000))
            .build();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema.clone(), Some(props))
            .unwrap();
        let vals: Vec<[u8; 16]> = (0..12_000).map(value).collect();
        let arr = FixedSizeBinaryArray::try_from_iter(vals.iter().map(|v| v.as_slice())).unwrap();
        w.write(&RecordBatch::try_new(schema, vec![Arc::new(arr)]).unwrap())
            .unwrap();
        w.close().unwrap();

        let file = File::open(&path).unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 3);
        let (mut agree, mut absent) = (0, 0);
        for rg in 0..meta.num_row_groups() {
            let cc = meta.row_group(rg).column(0);
            let full = Sbbf::read_from_column_chunk(cc, &file).unwrap().unwrap();
            let bits = Bitset::locate(&file, cc)
                .unwrap()
                .expect("bloom filter found");
            let rows: Vec<u64> =
                (rg as u64 * 5_000..((rg as u64 + 1) * 5_000).min(12_000)).collect();
            for &i in &rows {
                assert!(
                    bits.may_contain(&file, hash(&value(i))).unwrap(),
                    "no false negative"
                );
            }
            for i in 100_000..110_000u64 {
                let v = value(i);
                let p = bits.may_contain(&file, hash(&v)).unwrap();
                assert_eq!(p, full.check(&v[..]), "same answer as the parquet crate");
                agree += 1;
                absent += usize::from(!p);
            }
        }
        assert_eq!(agree, 30_000);
        assert!(
            absent > 29_000,
            "prunes: {absent} of 30000 absent values rejected"
        );
    }
}
