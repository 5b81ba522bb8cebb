//! The store's Lua scripts: each checks that the caller's token still owns the in-flight
//! record and changes it in the same atomic step (one key each, so Cluster-safe).
//!
//! A record value is `<state>:<fingerprint hex>:<payload>`; an in-flight record's payload
//! is its token in hex. Hex never contains `:`, so the second `:` ends the fingerprint.

use std::sync::LazyLock;

use redis::Script;

/// KEYS[1] the record; ARGV[1] the token (hex), ARGV[2] the new state (`C` completed,
/// `N` not stored), ARGV[3] its payload, ARGV[4] the TTL in ms. Returns 1 when the
/// record was completed, 0 when the token does not own it (nothing changed).
pub static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 2) ~= 'I:' then return 0 end
local sep = string.find(v, ':', 3, true)
if not sep or string.sub(v, sep + 1) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2] .. string.sub(v, 2, sep) .. ARGV[3], 'PX', ARGV[4])
return 1
",
    )
});

/// KEYS[1] the record; ARGV[1] the token (hex). Returns 1 when the in-flight record was
/// deleted, 0 when the token does not own it (nothing changed).
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 2) ~= 'I:' then return 0 end
local sep = string.find(v, ':', 3, true)
if not sep or string.sub(v, sep + 1) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});
