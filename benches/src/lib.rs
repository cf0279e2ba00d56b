//! Benchmarks for Kuota; the benches live in `benches/benches/`.
