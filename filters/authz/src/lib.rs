//! Meshward authz filter: JWT authentication against one or more issuers (inline or
//! remote JWKS), ordered allow/deny rules over the request and the verified claims,
//! and claims copied to request headers that a client can never forge.
//!
//! Core (no proxy-wasm): [`base64url`] (strict decoding), [`algorithm`] (which key
//! verifies which `alg`), [`token`] (compact JWS parsing), [`jwks`] (key sets and their
//! validation), [`verify`] (signatures), [`claims`] (time, issuer, audience, required
//! claims), [`cache`] (verified tokens), [`keys`] (remote JWKS freshness), [`rules`],
//! [`outputs`] (headers to strip and add), [`reply`] (401/403/503 bodies),
//! [`authorizer`] (the request → decision pipeline) and [`config`].
//! Adapter: [`filter`].

pub mod algorithm;
pub mod authorizer;
pub mod base64url;
pub mod cache;
pub mod claims;
pub mod config;
#[cfg(feature = "proxy-wasm")]
pub mod filter;
pub mod jwks;
pub mod keys;
pub mod outputs;
pub mod reply;
pub mod rules;
pub mod token;
pub mod verify;

#[cfg(all(feature = "module", target_arch = "wasm32", not(test)))]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::AuthzRoot::default())
    });
}}
