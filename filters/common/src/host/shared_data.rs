//! [`SharedStore`] over Envoy's proxy-wasm shared data (one map per `vm_id`, shared by
//! every worker thread, compare-and-swap on write).

use crate::store::{SharedStore, StoreError, Versioned};
use proxy_wasm::types::Status;

#[derive(Debug, Clone, Copy, Default)]
pub struct HostSharedData;

impl SharedStore for HostSharedData {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        match proxy_wasm::hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Ok(Some(Versioned { value, cas })),
            // Envoy keeps keys whose value was cleared; treat them as absent-but-present
            // so a later CAS write still applies.
            Ok((None, Some(cas))) => Ok(Some(Versioned {
                value: Vec::new(),
                cas,
            })),
            Ok((_, None)) => Ok(None),
            Err(status) => Err(StoreError::Unavailable(format!(
                "get_shared_data: {status:?}"
            ))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match proxy_wasm::hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Unavailable(format!(
                "set_shared_data: {status:?}"
            ))),
        }
    }
}
