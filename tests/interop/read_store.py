"""Reads a cdrvault data directory with DuckDB and PyArrow (hive partitioning)
and prints what they see as JSON, for tests/interop.rs to compare."""
import json
import sys

import duckdb
import pyarrow.dataset as ds

root = sys.argv[1]
glob = f"{root}/**/*.parquet"

con = duckdb.connect()
rows = con.execute(
    f"""
    SELECT class, CAST(date AS VARCHAR) AS date, count(*) AS n,
           count(DISTINCT record_id) AS ids,
           min(octet_length(sealed)) AS min_sealed,
           sum(CASE WHEN caller_p IS NULL THEN 1 ELSE 0 END) AS null_callers
    FROM read_parquet('{glob}', hive_partitioning = true)
    GROUP BY ALL ORDER BY ALL
    """
).fetchall()
duck = [
    {"class": r[0], "date": r[1], "rows": r[2], "ids": r[3], "min_sealed": r[4], "null_callers": r[5]}
    for r in rows
]
cols = [c[0] for c in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()]

dataset = ds.dataset(root, format="parquet", partitioning="hive")
table = dataset.to_table()
by_part = {}
for c, d in zip(table.column("class").to_pylist(), table.column("date").to_pylist()):
    key = f"{c}/{d}"
    by_part[key] = by_part.get(key, 0) + 1

print(json.dumps({
    "duckdb": duck,
    "duckdb_columns": cols,
    "pyarrow_rows": table.num_rows,
    "pyarrow_partitions": by_part,
    "pyarrow_schema": [f.name for f in table.schema],
}))
