//! Where idempotency records live. The trait is what the filter's state machine needs;
//! [`crate::table::SharedDataRecords`] implements it over proxy-wasm shared data (one
//! Envoy). The remote store (the control plane's `IdempotencyStore` on Redis/Valkey,
//! shared by replicas) answers asynchronously, so it does not implement the trait:
//! [`crate::remote`] turns its answers into the same [`Reservation`]s and [`Finish`]es,
//! and the state machine decides the same way for both.

use crate::fingerprint::Digest128;
use crate::response::StoredResponse;
use meshward_filter_common::store::StoreError;

/// Proof of owning an in-flight record; needed to complete or release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The embedded table: the entry's slot and the claim's generation.
    Slot { slot: u32, generation: u32 },
    /// The remote store: the token its `Reserve` handed out.
    Token(Token),
}

/// A remote store's ownership token (the control plane's are 16 random bytes).
pub type Token = [u8; TOKEN_LEN];
pub const TOKEN_LEN: usize = 16;

/// Why a completed execution's response is not replayable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    TooLarge,
    Streaming,
    StoreFull,
    /// The response started but the stream ended before it was complete.
    Incomplete,
    /// The body could not be written to the store.
    StoreFailed,
}

impl NotStored {
    pub fn code(self) -> u8 {
        match self {
            NotStored::TooLarge => 1,
            NotStored::Streaming => 2,
            NotStored::StoreFull => 3,
            NotStored::Incomplete => 4,
            NotStored::StoreFailed => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(NotStored::TooLarge),
            2 => Some(NotStored::Streaming),
            3 => Some(NotStored::StoreFull),
            4 => Some(NotStored::Incomplete),
            5 => Some(NotStored::StoreFailed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::TooLarge => "the response was larger than maxResponseBytes",
            NotStored::Streaming => "the response was a stream",
            NotStored::StoreFull => "the idempotency store was full (maxStoredBytes)",
            NotStored::Incomplete => "the response was cut off before it completed",
            NotStored::StoreFailed => "the response could not be written to the store",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// First time: execute, then complete or release with this lease. `evicted`: an
    /// older completed record was dropped to make room.
    Execute { lease: Lease, evicted: bool },
    /// Another request with this key is executing.
    InFlight,
    /// The key was used with a different payload.
    Mismatch,
    /// Already executed: replay this.
    Completed(StoredResponse),
    /// Already executed, but the response was not stored.
    CompletedNotStored(NotStored),
    /// No room for a new record (every entry of its page is in flight).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Stored,
    NotStored(NotStored),
    /// The lease expired and the slot moved on; nothing was recorded.
    LeaseLost,
}

pub trait RecordStore {
    /// Looks up `scope`; reserves it for execution when it is new (or expired).
    fn reserve(
        &self,
        scope: &Digest128,
        fingerprint: &Digest128,
        now: u64,
        lock_nanos: u64,
    ) -> Result<Reservation, StoreError>;
    /// Stores the response (or marks it not stored) for `ttl_nanos`.
    fn complete(
        &self,
        lease: Lease,
        response: Result<&StoredResponse, NotStored>,
        now: u64,
        ttl_nanos: u64,
    ) -> Result<Finish, StoreError>;
    /// Gives the key back so a retry executes again.
    fn release(&self, lease: Lease) -> Result<(), StoreError>;
}
