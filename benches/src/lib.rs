//! Shared pieces of Kuota's benchmarks. The benches themselves live in `benches/benches/`
//! (criterion) and `benches/src/bin/` (measurement programs that print a table).

pub mod fixtures;
pub mod process;
