//! A real kube-apiserver + etcd for end-to-end tests, started on free loopback ports with
//! generated certificates and RBAC authorization, torn down on drop (also when a test fails).
//! Binaries come from `KUBEBUILDER_ASSETS` (see `scripts/envtest-assets`).
#![allow(dead_code, unused_imports)]

mod operator;
mod proxy;

pub use operator::*;
pub use proxy::Proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct ApiServer {
    dir: PathBuf,
    etcd: Child,
    apiserver: Child,
    apiserver_args: Vec<String>,
    pub port: u16,
    /// kubeconfig of a `system:masters` client certificate.
    pub admin_kubeconfig: PathBuf,
    ca_pem: String,
}

/// kube-apiserver with `args`, its log appended to `dir/apiserver.log`.
fn spawn_apiserver(dir: &Path, args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("apiserver.log")).unwrap();
    Command::new(assets().join("kube-apiserver"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("kube-apiserver starts")
}

/// A port nothing listens on at the moment, on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where the kube-apiserver and etcd binaries are.
pub fn assets() -> PathBuf {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from).expect(
        "KUBEBUILDER_ASSETS is not set: run the suite with `bash scripts/test`, or export KUBEBUILDER_ASSETS=$(scripts/envtest-assets)",
    );
    for bin in ["kube-apiserver", "etcd"] {
        assert!(dir.join(bin).exists(), "{} has no {bin}: run scripts/envtest-assets", dir.display());
    }
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn kubeconfig(port: u16, ca_pem: &str, user: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {}\nusers:\n- name: user\n  user:\n{user}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: user}}\ncurrent-context: envtest\n",
        b64(ca_pem)
    )
}

impl ApiServer {
    pub fn start() -> ApiServer {
        let assets = assets();
        let dir = std::env::temp_dir().join(format!("odo-envtest-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();

        // A CA, a serving certificate for 127.0.0.1, an admin client certificate, a SA key.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "envtest-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().unwrap();
        let mut serving =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer).unwrap();

        let admin_key = KeyPair::generate().unwrap();
        let mut admin = CertificateParams::new(Vec::<String>::new()).unwrap();
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer).unwrap();

        let sa_key = KeyPair::generate().unwrap();
        write(&dir.join("ca.crt"), &ca_pem);
        write(&dir.join("serving.crt"), &serving_cert.pem());
        write(&dir.join("serving.key"), &serving_key.serialize_pem());
        write(&dir.join("sa.key"), &sa_key.serialize_pem());
        write(&dir.join("sa.pub"), &sa_key.public_key_pem());

        let (etcd_port, peer_port, port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Command::new(assets.join("etcd"))
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"))
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd starts");
        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", dir.display()),
            format!("--tls-cert-file={}", dir.join("serving.crt").display()),
            format!("--tls-private-key-file={}", dir.join("serving.key").display()),
            format!("--client-ca-file={}", dir.join("ca.crt").display()),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer=https://127.0.0.1:{port}/"),
            format!("--service-account-key-file={}", dir.join("sa.pub").display()),
            format!("--service-account-signing-key-file={}", dir.join("sa.key").display()),
        ];
        let apiserver = spawn_apiserver(&dir, &apiserver_args);

        let admin_user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(&admin_cert.pem()),
            b64(&admin_key.serialize_pem())
        );
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write(&admin_kubeconfig, &kubeconfig(port, &ca_pem, &admin_user));
        let server = ApiServer { dir, etcd, apiserver, apiserver_args, port, admin_kubeconfig, ca_pem };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 120 s; log:\n{}",
                std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default()
            );
            // Polling a readiness endpoint: the server gives no other signal.
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Kills kube-apiserver (etcd keeps running): an API server outage.
    pub fn stop_apiserver(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
    }

    /// Starts kube-apiserver again on the same port, certificates and etcd; returns once ready.
    pub fn restart_apiserver(&mut self) {
        self.apiserver = spawn_apiserver(&self.dir, &self.apiserver_args);
        self.wait_ready();
    }

    /// `kubectl` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.admin_kubeconfig, args)
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("kubectl runs")
    }

    /// `kubectl apply -f -` of `yaml` as the admin.
    pub fn apply(&self, yaml: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// A kubeconfig for a ServiceAccount, with a token from the TokenRequest API.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        self.service_account_kubeconfig_via(namespace, name, self.port)
    }

    /// The same, reaching the API server through `port` on loopback (a [`Proxy`]).
    pub fn service_account_kubeconfig_via(&self, namespace: &str, name: &str, port: u16) -> PathBuf {
        let out = self.kubectl(&["create", "token", name, "-n", namespace, "--duration=1h"]);
        assert!(out.status.success(), "TokenRequest: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let path = self.dir.join(format!("{namespace}-{name}-{port}.kubeconfig"));
        write(&path, &kubeconfig(port, &self.ca_pem, &format!("    token: {token}")));
        path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
