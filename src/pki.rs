//! Development PKI: two CAs (one for hubs, one for daemons) and leaf certificates, made with rcgen.
//!
//! The demo makes one in memory at start; `kirq-hub pki` writes one to disk for a test fleet. Two
//! CAs keep roles apart: a daemon's certificate can never pass as a hub's and deliver packets. For
//! production, issue certificates from your own CA; Kirq only needs PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A CA that can issue leaf certificates.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca { .. }")
    }
}

/// A leaf certificate and its private key, PEM-encoded. The key is zeroed on drop.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leaf { .. }")
    }
}

impl Ca {
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(Self { params, key, pem })
    }

    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// Issues a certificate for `name` (also its DNS SAN) plus `extra_sans` (DNS names or IP
    /// addresses), valid for both TLS server and client authentication.
    pub fn issue(&self, name: &str, extra_sans: &[&str]) -> Result<Leaf, PkiError> {
        let mut sans = vec![name.to_owned()];
        sans.extend(extra_sans.iter().map(|s| (*s).to_owned()));
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        self.sign_leaf(params)
    }
}

impl Ca {
    /// Issues a certificate whose only identity is the URI SAN `uri` (a SPIFFE ID, as SPIRE
    /// issues them), plus `extra_sans` (DNS names or IP addresses, e.g. for a listener).
    pub fn issue_uri(&self, uri: &str, extra_sans: &[&str]) -> Result<Leaf, PkiError> {
        let mut params = CertificateParams::new(
            extra_sans
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )?;
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(
                uri,
            )?));
        self.sign_leaf(params)
    }

    fn sign_leaf(&self, mut params: CertificateParams) -> Result<Leaf, PkiError> {
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// Writes `text` to `path` with `mode`, replacing nothing that exists.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| PkiError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Writes a development PKI into `dir`: `hub-ca.pem`, `daemon-ca.pem`, and for each name
/// `NAME.crt` and `NAME.key` (0600). Hub certificates come from the hub CA, daemon certificates
/// from the daemon CA; every leaf also names `localhost` and `127.0.0.1`.
pub fn write_dev_pki(dir: &Path, hubs: &[&str], daemons: &[&str]) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    for (ca_name, names) in [("hub-ca", hubs), ("daemon-ca", daemons)] {
        let ca = Ca::new(&format!("Kirq development {ca_name}"))?;
        write_new(&dir.join(format!("{ca_name}.pem")), ca.cert_pem(), 0o644)?;
        for name in names {
            let leaf = ca.issue(name, &["localhost", "127.0.0.1", "::1"])?;
            write_new(&dir.join(format!("{name}.crt")), &leaf.cert_pem, 0o644)?;
            write_new(&dir.join(format!("{name}.key")), &leaf.key_pem, 0o600)?;
        }
    }
    Ok(())
}

/// Like [`write_dev_pki`], but each daemon's certificate names it only by its SPIFFE ID
/// `spiffe://<trust_domain>/kirqd/<name>` (and `localhost`, `127.0.0.1`, `::1` for its receive
/// listener), as SPIRE or cert-manager would issue it.
pub fn write_dev_pki_spiffe(
    dir: &Path,
    hubs: &[&str],
    daemons: &[&str],
    trust_domain: &str,
) -> Result<(), PkiError> {
    write_dev_pki(dir, hubs, &[])?;
    let ca = Ca::new("Kirq development daemon-ca (SPIFFE)")?;
    let ca_path = dir.join("daemon-ca.pem");
    std::fs::remove_file(&ca_path).map_err(|source| PkiError::Write {
        path: ca_path.clone(),
        source,
    })?;
    write_new(&ca_path, ca.cert_pem(), 0o644)?;
    for name in daemons {
        let uri = crate::tls::spiffe_daemon_id(trust_domain, name);
        let leaf = ca.issue_uri(&uri, &["localhost", "127.0.0.1", "::1"])?;
        write_new(&dir.join(format!("{name}.crt")), &leaf.cert_pem, 0o644)?;
        write_new(&dir.join(format!("{name}.key")), &leaf.key_pem, 0o600)?;
    }
    Ok(())
}

/// Writes a development PKI for decentralized nodes into `dir`: `node-ca.pem` and, for each name,
/// `NAME.crt` and `NAME.key` (0600), also naming `localhost` and `127.0.0.1`. Hubs trust
/// `node-ca.pem` (`decentralized.node_ca`); nodes trust the hub CA for their clients.
pub fn write_dev_node_pki(dir: &Path, nodes: &[&str]) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let ca = Ca::new("Kirq development node-ca")?;
    write_new(&dir.join("node-ca.pem"), ca.cert_pem(), 0o644)?;
    for name in nodes {
        let leaf = ca.issue(name, &["localhost", "127.0.0.1", "::1"])?;
        write_new(&dir.join(format!("{name}.crt")), &leaf.cert_pem, 0o644)?;
        write_new(&dir.join(format!("{name}.key")), &leaf.key_pem, 0o600)?;
    }
    Ok(())
}
