//! Handlers for `/quantum/*`: the RFC 9381 VRF and Falcon-512 and ML-DSA-65 signatures with
//! kirqd's service keys ([`crate::quantum`]). The two signature algorithms share one set of
//! handlers, parameterised by a [`SigService`] (its field tables, key and verifier).
//!
//! Every request body is a JSON object whose binary fields are hex (the default) or standard
//! padded base64, chosen by `"encoding"`; answers use the same encoding. One table per endpoint
//! ([`Field`]) drives both the parser and the OpenAPI request schema, so the two cannot drift:
//! each field's byte-length rule becomes exact `pattern`/`minLength`/`maxLength` constraints per
//! encoding. Bodies are read with an explicit limit (twice the message limit plus room for keys
//! and signatures) so an oversized one gets a JSON 413.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};

use super::{ApiError, ErrorBody, Handles};
use crate::config::DEFAULT_MAX_MESSAGE_BYTES;
use crate::crypto::falcon;
use crate::crypto::mldsa;
use crate::crypto::sig::{HubVerifyingKey, PacketSigner, SigAlg};
use crate::quantum::{Keys, vrf};

/// Room in a body beyond the encoded message: keys, signatures, field names.
const BODY_OVERHEAD: usize = 16 * 1024;

/// Standard alphabet, canonical padding, trailing bits allowed (what the schema's pattern says).
const B64_DECODE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);
const B64_ENCODE: GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

/// The message for a bad `encoding` field, the same on every endpoint.
pub(super) const BAD_ENCODING: &str = "field `encoding` must be \"hex\" or \"base64\"";

impl Encoding {
    /// The `encoding` field of a request: absent means hex; `None` for anything else.
    pub(super) fn from_field(v: Option<&serde_json::Value>) -> Option<Self> {
        match v.map(|e| e.as_str()) {
            None | Some(Some("hex")) => Some(Self::Hex),
            Some(Some("base64")) => Some(Self::Base64),
            _ => None,
        }
    }

    pub(super) fn encode(self, b: &[u8]) -> String {
        match self {
            Self::Hex => hex::encode(b),
            Self::Base64 => B64_ENCODE.encode(b),
        }
    }

    fn decode(self, s: &str) -> Option<Vec<u8>> {
        match self {
            Self::Hex => hex::decode(s).ok(),
            Self::Base64 => B64_DECODE.decode(s).ok(),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }
}

/// How many bytes a field may decode to.
#[derive(Debug, Clone, Copy)]
enum Len {
    /// 0..=the configured message limit.
    Message,
    Exact(usize),
    Range(usize, usize),
}

/// One binary field of a request body.
#[derive(Debug)]
struct Field {
    name: &'static str,
    required: bool,
    len: Len,
    doc: &'static str,
}

const VRF_FIELDS: &[Field] = &[Field {
    name: "alpha",
    required: true,
    len: Len::Message,
    doc: "VRF input alpha_string",
}];
const VRF_VERIFY_FIELDS: &[Field] = &[
    Field {
        name: "alpha",
        required: true,
        len: Len::Message,
        doc: "VRF input alpha_string",
    },
    Field {
        name: "pi",
        required: true,
        len: Len::Exact(vrf::PROOF_BYTES),
        doc: "RFC 9381 proof pi_string (80 bytes)",
    },
    Field {
        name: "public_key",
        required: false,
        len: Len::Exact(vrf::PUBLIC_KEY_BYTES),
        doc: "ECVRF public key (32 bytes); default: the daemon's",
    },
];
const MESSAGE_TO_SIGN: Field = Field {
    name: "message",
    required: true,
    len: Len::Message,
    doc: "message to sign",
};
const SIGNED_MESSAGE: Field = Field {
    name: "message",
    required: true,
    len: Len::Message,
    doc: "signed message",
};
const FALCON_SIGN_FIELDS: &[Field] = &[MESSAGE_TO_SIGN];
const FALCON_VERIFY_FIELDS: &[Field] = &[
    SIGNED_MESSAGE,
    Field {
        name: "signature",
        required: true,
        len: Len::Range(1, falcon::MAX_SIGNATURE_BYTES),
        doc: "Falcon-512 detached signature (PQClean format, variable length)",
    },
    Field {
        name: "public_key",
        required: false,
        len: Len::Exact(falcon::PUBLIC_KEY_BYTES),
        doc: "Falcon-512 public key (897 bytes); default: the daemon's",
    },
];
const ML_DSA_SIGN_FIELDS: &[Field] = &[MESSAGE_TO_SIGN];
const ML_DSA_VERIFY_FIELDS: &[Field] = &[
    SIGNED_MESSAGE,
    Field {
        name: "signature",
        required: true,
        len: Len::Exact(mldsa::SIGNATURE_BYTES),
        doc: "ML-DSA-65 signature (FIPS 204, pure, empty context; 3309 bytes)",
    },
    Field {
        name: "public_key",
        required: false,
        len: Len::Exact(mldsa::PUBLIC_KEY_BYTES),
        doc: "ML-DSA-65 public key (1952 bytes); default: the daemon's",
    },
];

/// One signature algorithm's service: its name, request tables and the daemon's key.
struct SigService {
    alg: SigAlg,
    algorithm: &'static str,
    sign_fields: &'static [Field],
    verify_fields: &'static [Field],
    key: fn(&Keys) -> Result<&(dyn PacketSigner + Sync), String>,
}

const FALCON: SigService = SigService {
    alg: SigAlg::Falcon512,
    algorithm: "Falcon-512",
    sign_fields: FALCON_SIGN_FIELDS,
    verify_fields: FALCON_VERIFY_FIELDS,
    key: |k| k.falcon().map(|k| k as &(dyn PacketSigner + Sync)),
};

const ML_DSA: SigService = SigService {
    alg: SigAlg::MlDsa65,
    algorithm: "ML-DSA-65",
    sign_fields: ML_DSA_SIGN_FIELDS,
    verify_fields: ML_DSA_VERIFY_FIELDS,
    key: |k| k.ml_dsa().map(|k| k as &(dyn PacketSigner + Sync)),
};

/// A parsed request: the decoded fields in table order, and the encoding for the answer.
struct Parsed {
    encoding: Encoding,
    fields: Vec<Option<Vec<u8>>>,
}

fn max_message(d: &Handles) -> usize {
    d.max_message_bytes
}

fn bad(d: &Handles, msg: String) -> ApiError {
    d.metrics.http_reject("bad_request");
    ApiError::bad_request(msg)
}

fn unavailable(message: String) -> Response {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message,
        reason: Some("key_unavailable"),
        retry_after: Some(5),
    }
    .into_response()
}

async fn parse(d: &Handles, body: Body, table: &[Field]) -> Result<Parsed, ApiError> {
    let max = max_message(d);
    let limit = 2 * max + BODY_OVERHEAD;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        d.metrics.http_reject("body_too_large");
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body exceeds {limit} bytes"),
            reason: None,
            retry_after: None,
        }
    })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(d, format!("body is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad(d, "body must be a JSON object".into()))?;
    let names: Vec<&str> = table.iter().map(|f| f.name).chain(["encoding"]).collect();
    if let Some(k) = obj.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(bad(
            d,
            format!("unknown field `{k}`; expected {}", names.join(", ")),
        ));
    }
    let encoding =
        Encoding::from_field(obj.get("encoding")).ok_or_else(|| bad(d, BAD_ENCODING.into()))?;
    let mut fields = Vec::with_capacity(table.len());
    for f in table {
        let Some(value) = obj.get(f.name) else {
            if f.required {
                return Err(bad(d, format!("field `{}` is required", f.name)));
            }
            fields.push(None);
            continue;
        };
        let enc = encoding.name();
        let s = value
            .as_str()
            .ok_or_else(|| bad(d, format!("field `{}` must be a {enc} string", f.name)))?;
        let (lo, hi) = match f.len {
            Len::Message => (0, max),
            Len::Exact(n) => (n, n),
            Len::Range(lo, hi) => (lo, hi),
        };
        // Bound the work before decoding: no valid encoding of `hi` bytes is longer than this.
        if s.len() > 2 * hi + 4 {
            return Err(bad(d, length_message(f.name, lo, hi)));
        }
        let raw = encoding.decode(s).ok_or_else(|| {
            let what = match encoding {
                Encoding::Hex => "hex (an even number of 0-9a-fA-F digits)",
                Encoding::Base64 => "base64 (standard alphabet, padded)",
            };
            bad(d, format!("field `{}` is not valid {what}", f.name))
        })?;
        if !(lo..=hi).contains(&raw.len()) {
            return Err(bad(d, length_message(f.name, lo, hi)));
        }
        fields.push(Some(raw));
    }
    Ok(Parsed { encoding, fields })
}

fn length_message(name: &str, lo: usize, hi: usize) -> String {
    if lo == hi {
        format!("field `{name}` must decode to exactly {lo} bytes")
    } else {
        format!("field `{name}` must decode to {lo}..={hi} bytes")
    }
}

/// `POST /quantum/vrf` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct VrfResponse {
    /// VRF output beta_string (64 bytes), in the request's encoding.
    pub beta: String,
    /// Proof pi_string (80 bytes), in the request's encoding.
    pub pi: String,
    /// The daemon's ECVRF public key (32 bytes), in the request's encoding.
    pub public_key: String,
    /// Always `ECVRF-EDWARDS25519-SHA512-TAI`.
    #[schema(example = "ECVRF-EDWARDS25519-SHA512-TAI")]
    pub suite: &'static str,
    pub encoding: Encoding,
}

/// `POST /quantum/vrf/verify` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct VrfVerifyResponse {
    pub valid: bool,
    /// beta_string when valid, else null.
    pub beta: Option<String>,
    pub suite: &'static str,
    pub encoding: Encoding,
}

/// `GET /quantum/vrf/public-key` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct VrfPublicKeyResponse {
    /// The daemon's ECVRF public key, hex.
    pub public_key: String,
    /// The same key, base64.
    pub public_key_base64: String,
    pub suite: &'static str,
}

/// `POST /quantum/falcon-signature` and `/quantum/ml-dsa-signature` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignatureResponse {
    /// Detached signature in the request's encoding: Falcon-512 in the PQClean round-3 format (at
    /// most 752 bytes), ML-DSA-65 in the FIPS 204 format (3309 bytes).
    pub signature: String,
    /// The daemon's public key (Falcon-512: 897 bytes, ML-DSA-65: 1952), request's encoding.
    pub public_key: String,
    #[schema(example = "Falcon-512")]
    pub algorithm: &'static str,
    pub encoding: Encoding,
}

/// `POST /quantum/falcon-verify` and `/quantum/ml-dsa-verify` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignatureVerifyResponse {
    pub valid: bool,
    pub algorithm: &'static str,
}

/// `GET /quantum/falcon-public-key` and `/quantum/ml-dsa-public-key` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignaturePublicKeyResponse {
    /// The daemon's public key, hex.
    pub public_key: String,
    /// The same key, base64.
    pub public_key_base64: String,
    /// Kirq key id: first 8 bytes of a tagged SHA3-256 of the key, hex.
    pub key_id: String,
    pub algorithm: &'static str,
}

/// Evaluates ECVRF_prove with the daemon's key.
#[utoipa::path(post, path = "/quantum/vrf", tag = "quantum",
    request_body(content = VrfRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Proof and output", body = VrfResponse),
        (status = 400, description = "Bad field (named)", body = ErrorBody),
        (status = 403, description = "Client not in http.allow", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "VRF key not available yet", body = ErrorBody),
    ))]
pub async fn vrf(State(d): State<Arc<Handles>>, body: Body) -> Response {
    let key = match d.keys.vrf() {
        Ok(k) => k,
        Err(m) => return unavailable(m),
    };
    let p = match parse(&d, body, VRF_FIELDS).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let alpha = p.fields[0].as_deref().unwrap_or_default();
    let out = key.prove(alpha);
    Json(VrfResponse {
        beta: p.encoding.encode(&out.beta),
        pi: p.encoding.encode(&out.pi),
        public_key: p.encoding.encode(&key.public_key()),
        suite: vrf::SUITE,
        encoding: p.encoding,
    })
    .into_response()
}

/// Checks any ECVRF-EDWARDS25519-SHA512-TAI proof (by default under the daemon's key).
#[utoipa::path(post, path = "/quantum/vrf/verify", tag = "quantum",
    request_body(content = VrfVerifyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Verdict (and beta when valid)", body = VrfVerifyResponse),
        (status = 400, description = "Bad field (named)", body = ErrorBody),
        (status = 403, description = "Client not in http.allow", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "No public_key given and no VRF key yet", body = ErrorBody),
    ))]
pub async fn vrf_verify(State(d): State<Arc<Handles>>, body: Body) -> Response {
    let p = match parse(&d, body, VRF_VERIFY_FIELDS).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let public = match &p.fields[2] {
        Some(pk) => pk.clone(),
        None => match d.keys.vrf() {
            Ok(k) => k.public_key().to_vec(),
            Err(m) => return unavailable(m),
        },
    };
    let alpha = p.fields[0].as_deref().unwrap_or_default();
    let pi = p.fields[1].as_deref().unwrap_or_default();
    let beta = vrf::verify(&public, alpha, pi);
    Json(VrfVerifyResponse {
        valid: beta.is_some(),
        beta: beta.map(|b| p.encoding.encode(&b)),
        suite: vrf::SUITE,
        encoding: p.encoding,
    })
    .into_response()
}

/// The daemon's ECVRF public key.
#[utoipa::path(get, path = "/quantum/vrf/public-key", tag = "quantum",
    responses(
        (status = 200, description = "The public key", body = VrfPublicKeyResponse),
        (status = 403, description = "Client not in http.allow", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "VRF key not available yet", body = ErrorBody),
    ))]
pub async fn vrf_public_key(State(d): State<Arc<Handles>>) -> Response {
    match d.keys.vrf() {
        Ok(k) => Json(VrfPublicKeyResponse {
            public_key: hex::encode(k.public_key()),
            public_key_base64: B64_ENCODE.encode(k.public_key()),
            suite: vrf::SUITE,
        })
        .into_response(),
        Err(m) => unavailable(m),
    }
}

async fn sign_with(d: &Handles, body: Body, svc: &SigService) -> Response {
    let key = match (svc.key)(&d.keys) {
        Ok(k) => k,
        Err(m) => return unavailable(m),
    };
    let p = match parse(d, body, svc.sign_fields).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let sig = key.sign(p.fields[0].as_deref().unwrap_or_default());
    Json(SignatureResponse {
        signature: p.encoding.encode(&sig),
        public_key: p.encoding.encode(key.public_key()),
        algorithm: svc.algorithm,
        encoding: p.encoding,
    })
    .into_response()
}

async fn verify_with(d: &Handles, body: Body, svc: &SigService) -> Response {
    let p = match parse(d, body, svc.verify_fields).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let message = p.fields[0].as_deref().unwrap_or_default();
    let sig = p.fields[1].as_deref().unwrap_or_default();
    let public = match &p.fields[2] {
        Some(pk) => pk.as_slice(),
        None => match (svc.key)(&d.keys) {
            Ok(k) => k.public_key(),
            Err(m) => return unavailable(m),
        },
    };
    // A key of the table's exact length always parses (Falcon: PQClean rejects a malformed one
    // in verify; ML-DSA-65: every 1952-byte string is a key).
    let valid =
        HubVerifyingKey::from_bytes(svc.alg, public).is_some_and(|k| k.verify(message, sig));
    Json(SignatureVerifyResponse {
        valid,
        algorithm: svc.algorithm,
    })
    .into_response()
}

fn public_key_of(d: &Handles, svc: &SigService) -> Response {
    match (svc.key)(&d.keys) {
        Ok(k) => Json(SignaturePublicKeyResponse {
            public_key: hex::encode(k.public_key()),
            public_key_base64: B64_ENCODE.encode(k.public_key()),
            key_id: k.key_id().to_string(),
            algorithm: svc.algorithm,
        })
        .into_response(),
        Err(m) => unavailable(m),
    }
}

/// The three handlers of one signature algorithm (sign, verify, public key) and their OpenAPI
/// annotations, all served by [`sign_with`], [`verify_with`] and [`public_key_of`].
macro_rules! signature_endpoints {
    (
        $svc:expr,
        $sign:ident = $sign_path:literal, $sign_req:ty, $sign_summary:literal, $sign_doc:literal,
        $verify:ident = $verify_path:literal, $verify_req:ty, $verify_summary:literal,
        $public:ident = $public_path:literal, $public_summary:literal $(,)?
    ) => {
        #[utoipa::path(post, path = $sign_path, tag = "quantum",
            summary = $sign_summary, description = $sign_doc,
            request_body(content = $sign_req, content_type = "application/json"),
            responses(
                (status = 200, description = "Signature", body = SignatureResponse),
                (status = 400, description = "Bad field (named)", body = ErrorBody),
                (status = 403, description = "Client not in http.allow", body = ErrorBody),
                (status = 413, description = "Body too large", body = ErrorBody),
                (status = 429, description = "Rate limited", body = ErrorBody),
                (status = 503, description = "Quantum endpoints not configured", body = ErrorBody),
            ))]
        #[doc = $sign_summary]
        pub async fn $sign(State(d): State<Arc<Handles>>, body: Body) -> Response {
            sign_with(&d, body, &$svc).await
        }

        #[utoipa::path(post, path = $verify_path, tag = "quantum", summary = $verify_summary,
            request_body(content = $verify_req, content_type = "application/json"),
            responses(
                (status = 200, description = "Verdict", body = SignatureVerifyResponse),
                (status = 400, description = "Bad field (named)", body = ErrorBody),
                (status = 403, description = "Client not in http.allow", body = ErrorBody),
                (status = 413, description = "Body too large", body = ErrorBody),
                (status = 429, description = "Rate limited", body = ErrorBody),
                (status = 503, description = "No public_key given and no service key",
                    body = ErrorBody),
            ))]
        #[doc = $verify_summary]
        pub async fn $verify(State(d): State<Arc<Handles>>, body: Body) -> Response {
            verify_with(&d, body, &$svc).await
        }

        #[utoipa::path(get, path = $public_path, tag = "quantum", summary = $public_summary,
            responses(
                (status = 200, description = "The public key", body = SignaturePublicKeyResponse),
                (status = 403, description = "Client not in http.allow", body = ErrorBody),
                (status = 429, description = "Rate limited", body = ErrorBody),
                (status = 503, description = "Quantum endpoints not configured", body = ErrorBody),
            ))]
        #[doc = $public_summary]
        pub async fn $public(State(d): State<Arc<Handles>>) -> Response {
            public_key_of(&d, &$svc)
        }
    };
}

signature_endpoints!(
    FALCON,
    falcon_signature = "/quantum/falcon-signature",
    FalconSignRequest,
    "Signs a message with the daemon's Falcon-512 service key.",
    "The signature's randomness (nonce and sampler seed) comes from PQClean's `randombytes`, i.e. \
     the operating system's RNG; see the README section on the `/quantum/*` endpoints.",
    falcon_verify = "/quantum/falcon-verify",
    FalconVerifyRequest,
    "Verifies a Falcon-512 detached signature (by default under the daemon's key).",
    falcon_public_key = "/quantum/falcon-public-key",
    "The daemon's Falcon-512 service public key.",
);

signature_endpoints!(
    ML_DSA,
    ml_dsa_signature = "/quantum/ml-dsa-signature",
    MlDsaSignRequest,
    "Signs a message with the daemon's ML-DSA-65 service key (FIPS 204 ML-DSA.Sign, pure, empty \
     context).",
    "The signature is hedged: aws-lc draws its per-signature randomness from its own RNG, seeded \
     from the operating system; see the README section on the `/quantum/*` endpoints.",
    ml_dsa_verify = "/quantum/ml-dsa-verify",
    MlDsaVerifyRequest,
    "Verifies an ML-DSA-65 signature (by default under the daemon's key).",
    ml_dsa_public_key = "/quantum/ml-dsa-public-key",
    "The daemon's ML-DSA-65 service public key.",
);

// ---- OpenAPI request schemas, built from the same field tables the parser uses ----

const B64_QUADS: &str = "^(?:[A-Za-z0-9+/]{4})*";

/// Base64 strings of exactly `tail` (0, 1 or 2) bytes past whole quads, `min..=max` chars long.
fn b64_variant(doc: &str, tail: usize, min: usize, max: usize) -> ObjectBuilder {
    let end = ["$", "[A-Za-z0-9+/]{2}==$", "[A-Za-z0-9+/]{3}=$"][tail];
    string_schema(doc, format!("{B64_QUADS}{end}"), min, max)
}

fn string_schema(doc: &str, pattern: String, min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(doc))
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length(Some(max))
}

/// The schema of one binary field in one encoding: exactly the strings the parser accepts.
///
/// Base64 length limits are written without counted repetition (validators refuse patterns like
/// `{0,21844}`): a string of whole quads plus a 0-, 1- or 2-byte tail decodes to 3k + tail bytes,
/// so each tail gets its own `maxLength`, and the variants are joined with `oneOf`.
fn field_schema(f: &Field, enc: Encoding) -> RefOr<Schema> {
    let (lo, hi) = match f.len {
        Len::Message => (0, DEFAULT_MAX_MESSAGE_BYTES),
        Len::Exact(n) => (n, n),
        Len::Range(lo, hi) => (lo, hi),
    };
    let doc = match f.len {
        Len::Message => format!(
            "{}, {} (at most {hi} bytes by default; quantum.max_message_bytes)",
            f.doc,
            enc.name()
        ),
        _ => format!("{}, {}", f.doc, enc.name()),
    };
    let one = |o: ObjectBuilder| RefOr::T(Schema::Object(o.build()));
    match enc {
        Encoding::Hex => one(string_schema(
            &doc,
            "^(?:[0-9a-fA-F]{2})*$".into(),
            2 * lo,
            2 * hi,
        )),
        Encoding::Base64 if lo == hi => {
            let len = hi.div_ceil(3) * 4;
            one(b64_variant(&doc, hi % 3, len, len))
        }
        Encoding::Base64 => {
            // Whole quads only: 3k <= hi. With a tail t: 3k + t <= hi, length 4k + 4.
            let mut variants = vec![b64_variant(&doc, 0, if lo > 0 { 4 } else { 0 }, hi / 3 * 4)];
            for t in 1..=2 {
                if hi >= t {
                    variants.push(b64_variant(&doc, t, 4, (hi - t) / 3 * 4 + 4));
                }
            }
            let mut o = OneOfBuilder::new().description(Some(doc.clone()));
            for v in variants {
                o = o.item(Schema::Object(v.build()));
            }
            RefOr::T(Schema::OneOf(o.build()))
        }
    }
}

/// `oneOf` a hex body (encoding optional) and a base64 body (encoding required).
fn request_schema(table: &[Field], title: &str) -> RefOr<Schema> {
    let variant = |enc: Encoding| {
        let mut o = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .title(Some(format!("{title} ({})", enc.name())))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for f in table {
            o = o.property(f.name, field_schema(f, enc));
            if f.required {
                o = o.required(f.name);
            }
        }
        let e = ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some([enc.name()]))
            .description(Some("encoding of every binary field, request and answer"));
        o = o.property("encoding", e);
        if enc == Encoding::Base64 {
            o = o.required("encoding");
        }
        Schema::Object(o.build())
    };
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(variant(Encoding::Hex))
            .item(variant(Encoding::Base64))
            .build(),
    ))
}

macro_rules! request_type {
    ($name:ident, $table:expr, $title:literal) => {
        #[doc = concat!("OpenAPI schema of the ", $title, " request body.")]
        #[derive(Debug)]
        pub struct $name;
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                request_schema($table, $title)
            }
        }
        impl ToSchema for $name {}
    };
}

request_type!(VrfRequest, VRF_FIELDS, "VRF prove");
request_type!(VrfVerifyRequest, VRF_VERIFY_FIELDS, "VRF verify");
request_type!(FalconSignRequest, FALCON_SIGN_FIELDS, "Falcon-512 sign");
request_type!(
    FalconVerifyRequest,
    FALCON_VERIFY_FIELDS,
    "Falcon-512 verify"
);
request_type!(MlDsaSignRequest, ML_DSA_SIGN_FIELDS, "ML-DSA-65 sign");
request_type!(MlDsaVerifyRequest, ML_DSA_VERIFY_FIELDS, "ML-DSA-65 verify");

#[cfg(test)]
mod tests {
    use super::*;

    /// The string variants of a field schema, compiled: (pattern, minLength, maxLength).
    fn variants(schema: &RefOr<Schema>) -> Vec<(regex::Regex, usize, usize)> {
        let compile = |o: &utoipa::openapi::schema::Object| {
            let re = regex::Regex::new(o.pattern.as_deref().unwrap()).unwrap();
            (re, o.min_length.unwrap(), o.max_length.unwrap())
        };
        match schema {
            RefOr::T(Schema::Object(o)) => vec![compile(o)],
            RefOr::T(Schema::OneOf(one)) => one
                .items
                .iter()
                .map(|i| match i {
                    RefOr::T(Schema::Object(o)) => compile(o),
                    _ => panic!("unexpected variant"),
                })
                .collect(),
            _ => panic!("unexpected schema"),
        }
    }

    /// True when `s` is valid under exactly one variant (oneOf); panics if several match.
    fn schema_accepts(vs: &[(regex::Regex, usize, usize)], s: &str) -> bool {
        let n = vs
            .iter()
            .filter(|(re, lo, hi)| re.is_match(s) && (*lo..=*hi).contains(&s.len()))
            .count();
        assert!(n <= 1, "oneOf variants overlap on {s:?}");
        n == 1
    }

    /// Each base64 field schema accepts exactly the encodings of the allowed lengths.
    #[test]
    fn base64_schemas_match_exactly_the_allowed_lengths() {
        for hi in [1usize, 2, 3, 4, 5, 31, 32, 80, 100, 752] {
            for lo in [0, 1, hi] {
                let f = Field {
                    name: "x",
                    required: true,
                    len: if lo == hi {
                        Len::Exact(hi)
                    } else {
                        Len::Range(lo, hi)
                    },
                    doc: "",
                };
                let schema = variants(&field_schema(&f, Encoding::Base64));
                for n in 0..=hi + 4 {
                    for fill in [0u8, 0xff, 0x5a] {
                        let s = B64_ENCODE.encode(vec![fill; n]);
                        let ok = (lo..=hi).contains(&n);
                        assert_eq!(schema_accepts(&schema, &s), ok, "{lo}..={hi}, n={n}");
                    }
                }
                assert!(!schema_accepts(&schema, "QUJD=="));
                assert!(!schema_accepts(&schema, "QQ"));
            }
        }
    }

    #[test]
    fn unpadded_and_padded_variants_decode_like_the_pattern_says() {
        // Trailing bits set ("QR==" decodes to "A"): allowed by the pattern, so by the parser.
        assert_eq!(Encoding::Base64.decode("QR==").unwrap(), b"A");
        assert!(Encoding::Base64.decode("QQ").is_none());
        assert_eq!(Encoding::Hex.decode("aB").unwrap(), [0xab]);
        assert!(Encoding::Hex.decode("abc").is_none());
    }
}
