//! `kuota`: wires telemetry, configuration and the application, then serves until stopped.

use clap::Parser;
use kuota_api::configuration::{Cli, Settings};
use kuota_api::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(Cli::parse())?;
    kuota_api::telemetry::init(&settings.log_format);
    let application = Application::build(settings).await?;
    application.announce();
    application.run_until_stopped().await
}
