//! Job wiring inside `serve`: tokio-cron-scheduler fires the daily cycle and the daily backup
//! (02:00 UTC by default) and the monthly DR drill; each run calls one core method. Single-flight and auditing are the core's; a failed run
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
    let (backup_core, drill_core) = (core.clone(), core.clone());
    let daily_holder = holder.clone();
    let daily = Job::new_async(config.daily_cron.as_str(), move |_, _| {
        let (core, holder) = (core.clone(), daily_holder.clone());
        Box::pin(async move {
            match core.run_daily_cycle(&holder, concurrency).await {
                Ok(report) if report.ran => tracing::info!(
                    rotated = report.rotated.len(),
                    failed = report.failed.len(),
                    noticed = report.noticed.len(),
                    differences = report.differences.len(),
                    "daily cycle finished"
                ),
                Ok(_) => tracing::info!("daily cycle already ran elsewhere"),
                Err(e) => core.report_job_failure("daily-cycle", &e).await,
            }
        })
    })?;
    scheduler.add(daily).await?;
    let backup_holder = holder.clone();
    let backup = Job::new_async(config.backup_cron.as_str(), move |_, _| {
        let (core, holder) = (backup_core.clone(), backup_holder.clone());
        Box::pin(async move {
            match core.run_scheduled_backup(&holder).await {
                Ok(Some(report)) => {
                    tracing::info!(id = %report.manifest.id, tenants = report.manifest.tenants, "backup written");
                }
                Ok(None) => tracing::info!("today's backup already ran elsewhere"),
                Err(e) => core.report_job_failure("daily-backup", &e).await,
            }
        })
    })?;
    scheduler.add(backup).await?;
    let drill_holder = holder.clone();
    let drill = Job::new_async(config.drill_cron.as_str(), move |_, _| {
        let (core, holder) = (drill_core.clone(), drill_holder.clone());
        Box::pin(async move {
            match core.run_scheduled_drill(&holder).await {
                Ok(Some(report)) => tracing::info!(ok = report.ok, rto_ms = report.rto_ms, "DR drill finished"),
                Ok(None) => tracing::info!("this month's drill already ran elsewhere"),
                Err(e) => core.report_job_failure("dr-drill", &e).await,
            }
        })
    })?;
    scheduler.add(drill).await?;
    scheduler.start().await?;
    Ok(scheduler)
}
