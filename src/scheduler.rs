//! Job wiring inside `serve`: tokio-cron-scheduler fires the daily cycle (02:00 UTC by default)
//! and each run calls one core method. Single-flight and auditing are the core's; a failed run
//! is logged and retried at the next tick.

use crate::core::Core;
use crate::core::config::Config;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

/// Starts the scheduler; the returned handle keeps it alive.
///
/// # Errors
/// When the cron expression is invalid or the scheduler cannot start.
pub async fn start(core: Core, config: &Config) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let holder = format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "console".into()), std::process::id());
    let concurrency = config.rotation_concurrency;
    let daily = Job::new_async(config.daily_cron.as_str(), move |_, _| {
        let (core, holder) = (core.clone(), holder.clone());
        Box::pin(async move {
            match core.run_daily_cycle(&holder, concurrency).await {
                Ok(report) if report.ran => tracing::info!(
                    rotated = report.rotated.len(),
                    failed = report.failed.len(),
                    noticed = report.noticed.len(),
                    drifted = report.drifted.len(),
                    "daily cycle finished"
                ),
                Ok(_) => tracing::info!("daily cycle already ran elsewhere"),
                Err(e) => tracing::error!(error = %e, "daily cycle failed"),
            }
        })
    })?;
    scheduler.add(daily).await?;
    scheduler.start().await?;
    Ok(scheduler)
}
