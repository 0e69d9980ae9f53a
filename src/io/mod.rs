//! The thin tokio I/O shell: sockets, tasks, the HTTP server, and the one clock read.

/// Runs trunkguard with a validated configuration until shutdown.
// integrator replaces this: placeholder so the CLI compiles; it only waits for ctrl-c.
pub async fn run(_config: crate::config::Config) -> Result<(), std::io::Error> {
    tokio::signal::ctrl_c().await
}
