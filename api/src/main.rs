//! `kuota`: the HTTP server. The API issue builds it; until then it says so and exits non-zero.

fn main() -> std::process::ExitCode {
    eprintln!("kuota: the HTTP server is not built yet (see the API issue); the engine core is.");
    std::process::ExitCode::FAILURE
}
