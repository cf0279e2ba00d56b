//! `kuota-sim`: see the library's documentation (`sim/src/lib.rs`) for what it does and its
//! layout; this file only hands over to the command line.

fn main() -> std::process::ExitCode {
    kuota_sim::cli::main()
}
