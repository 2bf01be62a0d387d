//! Kirq: authenticated quantum and hardware randomness for Linux servers.
//!
//! Two thin binaries sit on this one library. `kirq-hub` ([`hub`]) draws from entropy sources
//! ([`sources`]), health-tests each source ([`health`]), mixes ([`mix`]), signs each packet
//! ([`crypto`]) in the canonical encoding of [`wire`], and delivers it over mutual TLS ([`tls`]).
//! `kirqd` ([`daemon`]) verifies every packet completely ([`verify`]) before a byte of it enters the
//! single-use [`pool`], and serves the pool through the HTTP shim ([`http`]). `kirq-hub node`
//! ([`node`]) runs a decentralized QRNG node; hubs ask such nodes through
//! [`sources::decentralized`].
//!
//! The one design rule a reader must know: [`pool::Pool::admit`] takes a
//! [`verify::VerifiedPacket`], a value only [`verify::Verifier`] can construct, so entropy that
//! skipped a check cannot reach a consumer.
#![deny(unsafe_code)]
#![warn(clippy::unwrap_used)]

pub mod config;
pub mod crypto;
pub mod daemon;
pub mod demo;
pub mod device;
pub mod health;
pub mod http;
pub mod hub;
pub mod kernel;
pub mod metrics;
pub mod mix;
pub mod node;
pub mod pki;
pub mod pool;
pub mod quantum;
pub mod secret;
pub mod service;
pub mod sources;
pub mod status;
pub mod supply;
pub mod tls;
pub mod util;
pub mod verify;
pub mod wire;
