//! The `askpro` binary: everything lives in the library; errors are reported here.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match askpro::cli::main().await {
        Ok(()) => ExitCode::SUCCESS,
        // `askpro ... | head`: the reader stopped reading; nothing failed (see cli::output).
        Err(error) if askpro::cli::stdout_closed(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
