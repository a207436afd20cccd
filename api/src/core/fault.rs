//! Test-only fault points: `SIGMA_TEST_FAULT=<point>` makes the process exit at that point, as a
//! crash would, so tests can show what a crash there leaves behind. Unset, a point does nothing.

/// Exits the process abruptly (no unwinding, no graceful shutdown) when `SIGMA_TEST_FAULT`
/// names this point.
pub fn point(name: &str) {
    if std::env::var("SIGMA_TEST_FAULT").is_ok_and(|f| f == name) {
        tracing::warn!(point = name, "SIGMA_TEST_FAULT: exiting here");
        std::process::abort();
    }
}
