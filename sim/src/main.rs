//! `kuota-sim`: capacity planning on the real engine. Not built yet (see the simulator issue).

fn main() -> std::process::ExitCode {
    eprintln!("kuota-sim: not built yet (see the simulator issue).");
    std::process::ExitCode::FAILURE
}
