//! Logging through the host (Envoy prints these as `wasm log <plugin>: ...`).
//! A failed log call is ignored: there is nowhere else to report it.

use proxy_wasm::types::LogLevel;

pub fn debug(message: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Debug, message);
}

pub fn info(message: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Info, message);
}

pub fn warn(message: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Warn, message);
}

pub fn error(message: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Error, message);
}

/// Whether debug lines would be printed, so callers skip formatting them otherwise.
pub fn debug_enabled() -> bool {
    matches!(
        proxy_wasm::hostcalls::get_log_level(),
        Ok(LogLevel::Trace | LogLevel::Debug)
    )
}
