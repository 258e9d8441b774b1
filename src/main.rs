//! Composition root: parse the command line and configuration, set up logging, run a command
//! (by default `serve`).

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match smtp_vault::cli::parse() {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    smtp_vault::cli::init_logging(&cli.config);
    smtp_vault::cli::run(cli).await
}

#[cfg(not(feature = "ssr"))]
fn main() {
    // The browser build has no binary; its entry point is `smtp_vault::hydrate`.
}
