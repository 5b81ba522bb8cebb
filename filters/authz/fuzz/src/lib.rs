//! Fixtures shared by the authz fuzz targets: a key set with one key of every family
//! (generated once by `meshward-jwt-testkit`) and tokens each of its keys signed, so the
//! targets exercise real signature verification, not only rejections.

/// `iss` of every fixture token.
pub const ISSUER: &str = "https://issuer.example";
/// `aud` of every fixture token.
pub const AUDIENCE: &str = "api";
/// The secret of the `hs` key (HS256).
pub const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// RS256 `rsa`, PS384 `pss`, ES256 `p256`, ES384 `p384`, EdDSA `ed`, HS256 `hs`.
pub const JWKS: &str = r#"{"keys":[{"alg":"RS256","e":"AQAB","kid":"rsa","kty":"RSA","n":"oS5cIeUwCwFaIHG6NPWEbi-j0tFjYjCsxi9Nr1PhjhyONuWTl7O50Obeq2oVvtP5Wh1PwAJuMxHqLP4pFiSvK85cpDBWko1hwwmpVVTHibvQJdmN572PrARS4bGo85TJVrFIVjLsF3bvHXlcZIl-xvQKd4g2KiDlkrh0TtYDLCR5ULD2ctVq9AnVc_62Amm51nJboRej3VmHDZ7IXybyF2XQDB4VagZV7o-sLOi-XR87eqs81aLB2NKnThMQ2MQ99-WrTLTlOgbzJpVNHAyD6Ku5ljckDcN17rxwRTuQPS2ckv1tljOuOJhPtmmiKhe4yNLz9MYOmeiZzrn3Y2Me1w","use":"sig"},{"alg":"PS384","e":"AQAB","kid":"pss","kty":"RSA","n":"oS5cIeUwCwFaIHG6NPWEbi-j0tFjYjCsxi9Nr1PhjhyONuWTl7O50Obeq2oVvtP5Wh1PwAJuMxHqLP4pFiSvK85cpDBWko1hwwmpVVTHibvQJdmN572PrARS4bGo85TJVrFIVjLsF3bvHXlcZIl-xvQKd4g2KiDlkrh0TtYDLCR5ULD2ctVq9AnVc_62Amm51nJboRej3VmHDZ7IXybyF2XQDB4VagZV7o-sLOi-XR87eqs81aLB2NKnThMQ2MQ99-WrTLTlOgbzJpVNHAyD6Ku5ljckDcN17rxwRTuQPS2ckv1tljOuOJhPtmmiKhe4yNLz9MYOmeiZzrn3Y2Me1w","use":"sig"},{"alg":"ES256","crv":"P-256","kid":"p256","kty":"EC","use":"sig","x":"uAiXlDMmZ3Tx-b80eAW3DFyepib_9u6hlQ3p2etXhsQ","y":"Q7ilxsbac8JIQZO6NBsHiGLpgfn8QpgX6J3aaJ681OI"},{"alg":"ES384","crv":"P-384","kid":"p384","kty":"EC","use":"sig","x":"tRer8-30NGvXzRIA7KEFAxUCD8ncGUJHl6OYNmxUkCuJf7Y7hzynB320gh4XFn4K","y":"armODRlG8zZ5VUmBIq71MUB5OmvR9UzeC-ntBIDxAATSle-QvSAsUUVMBkTrFogj"},{"alg":"EdDSA","crv":"Ed25519","kid":"ed","kty":"OKP","use":"sig","x":"wtFLIJkQkGh5Ofpm7LPJipUYbGMjzc3qOLfZUiegCFU"},{"alg":"HS256","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY","kid":"hs","kty":"oct","use":"sig"}]}"#;

/// Signed by the keys of [`JWKS`], in its order, then ES256 again without a `kid`;
/// claims: `iss` [`ISSUER`], `sub` alice, `aud` [`AUDIENCE`], `exp` 2100-01-01.
pub const TOKENS: [&str; 7] = [
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYSIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJhcGkiLCJleHAiOjQxMDI0NDQ4MDAsImlzcyI6Imh0dHBzOi8vaXNzdWVyLmV4YW1wbGUiLCJzY29wZSI6InJlYWQgd3JpdGUiLCJzdWIiOiJhbGljZSJ9.gkB4AJApzrMt1i-TZ98oYeyGu9fPYc9hCfyaH81dd07j7pDN2Te6j6m7pcIiaFNgnTMzkbmb1oNXEw63Uh41JzNPISYO9Hu6VlEYQ-kC5Za8ad2zRPOT6KkV4bFLHDma881mkP-Xizd_tfQ8Ce5oOoJnGnbSOoBa8mM8-Gphp722LRPaAdzNBPcK7uBvobr-LchuFdsQ223CLcPdUxW_UC1mTZfFUhYZm9vrVV9J0VIkaVAwMKHwpxWpJoRKkdaqHEx7ge4IyHAjDlDa8JFO3xMc1Fdsf5Zach1_QJ_3LyxHe_yG8YUjpSjdJmXZtdlxIhwSh1-aAp0INvP5jddryA",
    "eyJhbGciOiJQUzM4NCIsImtpZCI6InBzcyIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJhcGkiLCJleHAiOjQxMDI0NDQ4MDAsImlzcyI6Imh0dHBzOi8vaXNzdWVyLmV4YW1wbGUiLCJzY29wZSI6InJlYWQgd3JpdGUiLCJzdWIiOiJhbGljZSJ9.d5KgdmHTYJ4kfOezgnvv3zZh-PXYaJc3DsNgnWFXCNU05t9jf2zNDRNxWEC2_0CU_8qCSGUy7oSkdiqmHEr6nR9e6NGhaW9qSYYDRwbycDwlNPeEz6i1r3KGet-munMrr8gQ_tEVqpUEYKhxIk9DuhJtw-5W_7ty9w0XNminQwXYwXmN-FggZE9jZ9lZhaqUme9sDY6OVF5USsZKPy4A-KYpbMXD9YpFrElkhSQ4dnNvCouX8ujtnJfiBf0RpBKe_RnkcCavilnHsbBYsmyq5d7WCl5wj7loYLBXPyXi34pNe36h5bBLo8LFJpsIqQT3BRtSZle04z-RU2LLFlqv5Q",
    "eyJhbGciOiJFUzI1NiIsImtpZCI6InAyNTYiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJhcGkiLCJleHAiOjQxMDI0NDQ4MDAsImlzcyI6Imh0dHBzOi8vaXNzdWVyLmV4YW1wbGUiLCJzY29wZSI6InJlYWQgd3JpdGUiLCJzdWIiOiJhbGljZSJ9.yNsMNjbkf0BKeRmGPnNTyvOHNswe_3FdmVog3LUMQPFpgp9R2DBHaSeREPbwIYQT-iOcDYPfAHyfGsDXNQ_S5g",
    "eyJhbGciOiJFUzM4NCIsImtpZCI6InAzODQiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJhcGkiLCJleHAiOjQxMDI0NDQ4MDAsImlzcyI6Imh0dHBzOi8vaXNzdWVyLmV4YW1wbGUiLCJzY29wZSI6InJlYWQgd3JpdGUiLCJzdWIiOiJhbGljZSJ9._To1VE6RBqBZ0URGWbHCmhLVtxtm51wbdKD8DOn40lwsOEgT2WcDQTTVQsV90d4KVP49dvguINhdzitS4zBkbwV-95DjhTb4eDkijJWOYZVqvn41dIm3Esoe6KjKRAUe",
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkIiwidHlwIjoiSldUIn0.eyJhdWQiOiJhcGkiLCJleHAiOjQxMDI0NDQ4MDAsImlzcyI6Imh0dHBzOi8vaXNzdWVyLmV4YW1wbGUiLCJzY29wZSI6InJlYWQgd3JpdGUiLCJzdWIiOiJhbGljZSJ9.IEDxTrk70FNaNCFjRrGIVhy2376b_QFaxD7uBq1SwV__GOUi_lgEg0bG6AIT69kohe3ZBqjOMx9h3HHN_JK4Cw",
    "eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzIiwidHlwIjoiSldUIn0.eyJhdWQiOiJhcGkiLCJleHAiOjQxMDI0NDQ4MDAsImlzcyI6Imh0dHBzOi8vaXNzdWVyLmV4YW1wbGUiLCJzY29wZSI6InJlYWQgd3JpdGUiLCJzdWIiOiJhbGljZSJ9.qtS1-iTLJqs3JuFie47X_zolTOAeCcLmvSKefLsbm3w",
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJhcGkiLCJleHAiOjQxMDI0NDQ4MDAsImlzcyI6Imh0dHBzOi8vaXNzdWVyLmV4YW1wbGUiLCJzY29wZSI6InJlYWQgd3JpdGUiLCJzdWIiOiJhbGljZSJ9.j72H3H7i1kT7KfZHya7Lux5NFrrgr6EW-h9bvdB0xCUjI09-O4ohkRufasAy_ELoBWr0U4xDf-qLxBVYBOQd8A",
];
