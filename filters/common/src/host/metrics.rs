//! Counters defined with `proxy_define_metric`. Envoy exports them under the
//! `wasmcustom.` stats prefix (Prometheus: `envoy_wasmcustom_...`).

use proxy_wasm::types::MetricType;

/// A counter that degrades to a no-op when the host refuses to define it, so a metrics
/// problem can never fail requests.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    id: Option<u32>,
}

impl Counter {
    pub fn define(name: &str) -> Self {
        let id = proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok();
        if id.is_none() {
            super::log::warn(&format!(
                "could not define metric {name}; it will not be reported"
            ));
        }
        Self { id }
    }

    pub fn increment(&self) {
        self.add(1);
    }

    pub fn add(&self, amount: u64) {
        if let (Some(id), Ok(amount)) = (self.id, i64::try_from(amount)) {
            if amount > 0 {
                let _ = proxy_wasm::hostcalls::increment_metric(id, amount);
            }
        }
    }
}
