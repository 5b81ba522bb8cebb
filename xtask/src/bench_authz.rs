//! `cargo xtask bench authz` scenarios: bare Envoy, Envoy's native `jwt_authn` (same
//! issuer and keys, its JWT cache on), and Meshward authz with and without its
//! verified-token cache, for RS256 and ES256 tokens. Every scenario receives the same
//! `Authorization` header; a token the filter refused would show as non-2xx.

use meshward_e2e::bootstrap::meshward_filter;
use meshward_e2e::{Bootstrap, Envoy};
use meshward_jwt_testkit::{jwks, now_secs, Alg, Signer};
use serde_json::{json, Value};

pub(crate) const ISSUER: &str = "https://bench.meshward.dev/";

/// Envoy's native JWT filter with a local JWKS, its verified-JWT cache on, forwarding
/// `sub` as a header like the Meshward configuration does.
pub(crate) fn native_jwt_authn(jwks_document: &str) -> Value {
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "bench": {
                    "issuer": ISSUER,
                    "local_jwks": {"inline_string": jwks_document},
                    "forward": true,
                    "claim_to_headers": [{"header_name": "x-user", "claim_name": "sub"}],
                    "jwt_cache_config": {"jwt_cache_size": 1000}
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]
        }
    })
}

pub(crate) fn meshward_config(jwks_document: &str, cache_entries: usize) -> String {
    json!({
        "providers": [{
            "name": "bench",
            "issuer": ISSUER,
            "jwks": {"inline": jwks_document},
            "claimHeaders": [{"claim": "sub", "header": "x-user"}]
        }],
        "tokenCache": {"maxEntries": cache_entries}
    })
    .to_string()
}

pub fn scenarios() -> Result<Vec<super::bench::ScenarioSpec>, String> {
    let base = Bootstrap::new(1).direct_response();
    let claims = json!({"iss": ISSUER, "sub": "bench-user", "exp": now_secs() + 86_400});
    let mut specs: Vec<super::bench::ScenarioSpec> = Vec::new();
    let mut bare_added = false;
    for (alg, names) in [
        (
            Alg::RS256,
            [
                "native jwt_authn RS256",
                "meshward authz RS256",
                "meshward authz RS256 no cache",
            ],
        ),
        (
            Alg::ES256,
            [
                "native jwt_authn ES256",
                "meshward authz ES256",
                "meshward authz ES256 no cache",
            ],
        ),
    ] {
        let signer = Signer::generate(alg, "bench-key");
        let document = jwks(&[&signer]);
        let header = vec![
            "-H".to_string(),
            format!("authorization: Bearer {}", signer.sign(&claims)),
        ];
        if !bare_added {
            specs.push(("bare Envoy", base.clone(), header.clone(), None));
            bare_added = true;
        }
        let native = specs.len();
        let [native_name, cached_name, uncached_name] = names;
        specs.push((
            native_name,
            base.clone().http_filter(native_jwt_authn(&document)),
            header.clone(),
            None,
        ));
        specs.push((
            cached_name,
            base.clone().http_filter(meshward_filter(
                "meshward_authz",
                &meshward_config(&document, 1024),
            )?),
            header.clone(),
            Some(native),
        ));
        specs.push((
            uncached_name,
            base.clone().http_filter(meshward_filter(
                "meshward_authz",
                &meshward_config(&document, 0),
            )?),
            header,
            Some(native),
        ));
    }
    Ok(specs)
}

/// Proof that the filters verified rather than passed requests through.
pub fn check(envoys: &[&Envoy]) -> String {
    let counter = |index: usize, name: &str| envoys.get(index).map_or(0, |e| e.counter(name));
    let verified = "wasmcustom.meshward.authz.provider.bench.verified";
    let hits = "wasmcustom.meshward.authz.provider.bench.cache_hits";
    format!(
        "jwt_authn allowed: RS256 {}, ES256 {}. Meshward verified (cache hits): RS256 {} ({}), \
         RS256 no cache {} ({}), ES256 {} ({}), ES256 no cache {} ({}).",
        counter(1, "http.ingress.jwt_authn.allowed"),
        counter(4, "http.ingress.jwt_authn.allowed"),
        counter(2, verified),
        counter(2, hits),
        counter(3, verified),
        counter(3, hits),
        counter(5, verified),
        counter(5, hits),
        counter(6, verified),
        counter(6, hits),
    )
}
