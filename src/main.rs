//! The `askpro` binary: everything lives in the library; errors are reported here.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match askpro::cli::main().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
