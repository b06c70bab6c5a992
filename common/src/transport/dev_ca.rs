//! A development CA and node certificates, generated with rcgen into a state directory.
//!
//! Owns the file layout of `strata dev`'s TLS material and nothing else: it writes PEM
//! files (keys with mode 0600 on Unix), never configures an endpoint. Files already present
//! are reused, so restarting a dev deployment keeps its identities; a leaf is re-issued
//! only when it is missing or the CA itself had to be created.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::{REGION_SERVER_NAME, TlsFiles, TransportError};

/// The TLS material of a dev deployment: one identity per tier, both issued by the same
/// dev CA (`ca.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    /// The region's files: server and client authentication.
    pub region: TlsFiles,
    /// The POP's files: client authentication.
    pub pop: TlsFiles,
    /// The POP's device-facing HTTPS certificate: server authentication for `localhost`,
    /// `127.0.0.1` and `::1`, so `curl --cacert ca.pem https://localhost:PORT` verifies.
    pub https: TlsFiles,
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const CA_COMMON_NAME: &str = "Strata dev CA";

/// Creates (or reuses, if already present) in `dir`: `ca.pem` + `ca-key.pem` (a
/// self-signed CA), `region.pem`/`region-key.pem` (server and client auth, SANs
/// [`REGION_SERVER_NAME`], `localhost`, `127.0.0.1`, `::1`) and `pop.pem`/`pop-key.pem`
/// (client auth), and `pop-https.pem`/`pop-https-key.pem` (server auth for `localhost`,
/// `127.0.0.1`, `::1`: the POP's device HTTPS in `strata dev`). Creates `dir` if needed.
///
/// # Errors
/// [`TransportError::Io`] when files cannot be read or written, [`TransportError::Tls`]
/// when an existing CA key cannot be parsed or a certificate cannot be generated.
pub fn init(dir: &Path) -> Result<DevCerts, TransportError> {
    std::fs::create_dir_all(dir)?;
    let ca_key_path = dir.join(CA_KEY);
    let ca_cert_path = dir.join(CA_CERT);
    let (ca_key, ca_is_new) = if ca_key_path.exists() && ca_cert_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)?;
        (KeyPair::from_pem(&pem).map_err(rcgen_error)?, false)
    } else {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = ca_params().self_signed(&key).map_err(rcgen_error)?;
        write_file(&ca_key_path, &key.serialize_pem(), true)?;
        write_file(&ca_cert_path, &cert.pem(), false)?;
        (key, true)
    };
    // The issuer's name and key identifier are derived from the same fixed parameters and
    // key as the CA certificate, so leaves issued now chain to the CA created earlier.
    let issuer = Issuer::new(ca_params(), ca_key);

    let region = leaf(
        dir,
        "region",
        &[REGION_SERVER_NAME, "localhost", "127.0.0.1", "::1"],
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        &issuer,
        ca_is_new,
    )?;
    let pop = leaf(
        dir,
        "pop",
        &["strata-pop"],
        &[ExtendedKeyUsagePurpose::ClientAuth],
        &issuer,
        ca_is_new,
    )?;
    let https = leaf(
        dir,
        "pop-https",
        &["localhost", "127.0.0.1", "::1"],
        &[ExtendedKeyUsagePurpose::ServerAuth],
        &issuer,
        ca_is_new,
    )?;
    Ok(DevCerts { region, pop, https })
}

/// The DNS suffix under which a POP certificate names its POP id.
pub const POP_DNS_SUFFIX: &str = ".pop.strata";

/// The DNS subject alternative name that binds a certificate to POP `id`: a region
/// accepts lease, load and log messages from its holder only for that POP.
pub fn pop_dns_name(id: &str) -> String {
    format!("{id}{POP_DNS_SUFFIX}")
}

/// The POP id a DER certificate names (its first `<id>.pop.strata` DNS name), if any.
pub fn pop_id_of(der: &rustls::pki_types::CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    cert.valid_dns_names()
        .find_map(|n| n.strip_suffix(POP_DNS_SUFFIX).filter(|id| !id.is_empty()))
        .map(str::to_owned)
}

/// Issues a certificate for POP `id` from the dev CA in `dir` (created by [`init`]) as
/// `pop-<id>.pem` and its key: how a deployment gives each POP its own identity.
///
/// # Errors
/// [`TransportError::Io`] or [`TransportError::Tls`] when the CA cannot be read or the
/// id is not a valid DNS label.
pub fn issue_pop(dir: &Path, id: &str) -> Result<TlsFiles, TransportError> {
    let pem = std::fs::read_to_string(dir.join(CA_KEY))?;
    let issuer = Issuer::new(ca_params(), KeyPair::from_pem(&pem).map_err(rcgen_error)?);
    leaf(
        dir,
        &format!("pop-{id}"),
        &["strata-pop", &pop_dns_name(id)],
        &[ExtendedKeyUsagePurpose::ClientAuth],
        &issuer,
        true,
    )
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Issues `<stem>.pem`/`<stem>-key.pem` unless both exist and the CA was reused.
fn leaf(
    dir: &Path,
    stem: &str,
    sans: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
    issuer: &Issuer<'_, KeyPair>,
    force: bool,
) -> Result<TlsFiles, TransportError> {
    let files = TlsFiles {
        ca_cert: dir.join(CA_CERT),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}-key.pem")),
    };
    if !force && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).map_err(rcgen_error)?;
    params.distinguished_name = name(&format!("strata-{stem}"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(rcgen_error)?;
    let cert = params.signed_by(&key, issuer).map_err(rcgen_error)?;
    write_file(&files.key, &key.serialize_pem(), true)?;
    write_file(&files.cert, &cert.pem(), false)?;
    Ok(files)
}

fn rcgen_error(e: rcgen::Error) -> TransportError {
    TransportError::Tls(format!("dev CA: {e}"))
}

/// Writes `contents` to a temporary sibling and renames it over `path`, so a crash never
/// leaves a half-written file that a later run would reuse.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), TransportError> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("pem.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_certificates_name_their_pop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = init(dir.path()).expect("init");
        let der = |files: &TlsFiles| {
            use rustls::pki_types::pem::PemObject;
            let pem = std::fs::read(&files.cert).expect("cert");
            rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .next()
                .expect("one cert")
                .expect("parses")
        };
        // The shared dev POP certificate names no POP (several dev POPs use it).
        assert_eq!(pop_id_of(&der(&certs.pop)), None);
        assert_eq!(pop_id_of(&der(&certs.region)), None);
        let other = issue_pop(dir.path(), "pop-7").expect("issued");
        assert_eq!(pop_id_of(&der(&other)).as_deref(), Some("pop-7"));
    }

    #[test]
    fn init_reuses_existing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = init(dir.path()).expect("first init");
        let ca = std::fs::read(&first.region.ca_cert).expect("ca");
        let pop = std::fs::read(&first.pop.cert).expect("pop cert");
        let second = init(dir.path()).expect("second init");
        assert_eq!(first, second);
        assert_eq!(std::fs::read(&second.region.ca_cert).expect("ca"), ca);
        assert_eq!(std::fs::read(&second.pop.cert).expect("pop cert"), pop);
    }

    #[test]
    fn a_missing_leaf_is_reissued_and_the_ca_kept() {
        // That the new leaf chains to the kept CA is shown over QUIC in tests/transport.rs.
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = init(dir.path()).expect("init");
        let ca = std::fs::read(&certs.pop.ca_cert).expect("ca");
        std::fs::remove_file(&certs.pop.cert).expect("remove");
        init(dir.path()).expect("re-init");
        assert!(certs.pop.cert.exists());
        assert_eq!(std::fs::read(&certs.pop.ca_cert).expect("ca"), ca);
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = init(dir.path()).expect("init");
        for key in [
            dir.path().join(CA_KEY),
            certs.region.key,
            certs.pop.key,
            certs.https.key,
        ] {
            let mode = std::fs::metadata(&key)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
    }
}
