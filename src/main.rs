use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use onedrive_operator::simulator;

/// A Kubernetes operator that pre-provisions OneDrive for Business sites.
#[derive(Parser)]
#[command(name = "onedrive-operator", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text", env = "LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The operator process's opt-in to endpoints outside each tenant's cloud.
#[derive(clap::Args, Clone, Copy)]
struct EndpointArgs {
    /// Allow tenants' endpoints outside their Microsoft cloud: loopback http:// (the simulator),
    /// other hosts, and the test host overrides. Tests, the simulator and demos only: never in
    /// production, where a tenant writer could then send the tenant's credentials anywhere.
    #[arg(
        long = "allow-endpoint-overrides",
        env = "ALLOW_ENDPOINT_OVERRIDES",
        value_parser = clap::builder::BoolishValueParser::new(),
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    allow_endpoint_overrides: bool,
}

impl EndpointArgs {
    /// The policy these flags and the environment give, or why they give none.
    fn policy(self) -> Result<onedrive_operator::m365::EndpointPolicy, String> {
        let env = |k: &str| std::env::var(k).ok();
        onedrive_operator::m365::EndpointPolicy::from_opt_in(self.allow_endpoint_overrides, &env)
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// The operator's namespace: where tenants' Secrets and the leader Lease live.
    #[arg(long, env = "POD_NAMESPACE", default_value = "onedrive-operator")]
    namespace: String,
    /// Watch OneDriveSites in this namespace only (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Tenant for OneDriveSites without spec.tenantRef.
    #[arg(long, env = "DEFAULT_TENANT")]
    default_tenant: Option<String>,
    /// Tenant cycles that work at once (a cycle waiting on Microsoft's Retry-After gives its slot up).
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Address of /metrics, /livez and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease so that only one replica acts.
    #[arg(long, env = "LEADER_ELECTION")]
    leader_election: bool,
    #[arg(long, default_value = "onedrive-operator-leader")]
    lease_name: String,
    /// Seconds a leader holds the lease without renewing it.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// This replica's identity in the lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Your organisation, for Microsoft's `User-Agent: NONISV|<organisation>|onedrive-operator/<version>`.
    #[arg(long, env = "ORGANIZATION", default_value = "onedrive-operator")]
    organization: String,
    /// PEM file of extra CA certificates to trust for Microsoft 365 endpoints (TLS is always verified).
    #[arg(long, env = "CA_BUNDLE")]
    ca_bundle: Option<PathBuf>,
    #[command(flatten)]
    endpoints: EndpointArgs,
}

#[derive(clap::Args)]
struct LoginArgs {
    /// The OneDriveTenant (in the cluster of the kubeconfig) whose refresh token to store.
    #[arg(long, conflicts_with = "tenant_file", required_unless_present = "tenant_file")]
    tenant: Option<String>,
    /// The OneDriveTenant from a manifest file instead of the cluster.
    #[arg(long)]
    tenant_file: Option<PathBuf>,
    /// The operator's namespace, where the tenant's Secret lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "onedrive-operator")]
    namespace: String,
    /// Sign in on another device (RFC 8628): for hosts without a browser.
    #[arg(long)]
    device_code: bool,
    /// Print the sign-in URL only; do not try to open a browser.
    #[arg(long)]
    no_browser: bool,
    /// The loopback port of the sign-in's redirect (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How long to wait for the sign-in.
    #[arg(long, default_value = "300s")]
    timeout: String,
    /// Print the Secret as a manifest (for SOPS or sealed-secrets) instead of writing it; the
    /// only way the token is ever printed.
    #[arg(short = 'o', long = "output", value_parser = ["yaml"])]
    output: Option<String>,
    /// Replace a refresh token the operator rotated after this sign-in began.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    endpoints: EndpointArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (in cluster, or with a kubeconfig).
    Run(RunArgs),
    /// Print both CustomResourceDefinitions as YAML (the source of `crds/`).
    Crd,
    /// Serve a simulated Microsoft 365 tenant on loopback and print a ready-to-apply tenant + Secret.
    Simulate(simulator::serve::ServeArgs),
    /// Check a tenant's credentials, permissions and whether its enqueue call accepts this token kind.
    Doctor {
        /// A OneDriveTenant manifest, optionally followed by the Secrets it references.
        #[arg(long)]
        tenant: PathBuf,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Sign a SharePoint administrator in and store the refresh token for a delegated tenant.
    Login(LoginArgs),
    /// Print what the tenant says about each user.
    Check {
        /// A OneDriveTenant manifest, optionally followed by the Secrets it references.
        #[arg(long)]
        tenant: PathBuf,
        /// User principal names.
        #[arg(required = true)]
        users: Vec<String>,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
}

fn main() -> ExitCode {
    onedrive_operator::tune_allocator();
    let cli = Cli::parse();
    onedrive_operator::install_crypto_provider();
    let json = matches!(cli.log_format, LogFormat::Json);
    match cli.command {
        Command::Run(args) => {
            init_logs(json);
            let ca_bundle = match &args.ca_bundle {
                Some(p) => match std::fs::read(p) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        eprintln!("--ca-bundle {}: {e}", p.display());
                        return ExitCode::from(2);
                    }
                },
                None => None,
            };
            let endpoints = match args.endpoints.policy() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            if endpoints.allows_overrides() {
                tracing::warn!(
                    "endpoint overrides are allowed: tenants may point at hosts outside their Microsoft cloud (tests and demos only)"
                );
            }
            let identity = args.identity.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| format!("onedrive-operator-{}", std::process::id()))
            });
            let options = onedrive_operator::controller::run::RunOptions {
                namespace: args.namespace,
                watch_namespace: args.watch_namespace,
                default_tenant: args.default_tenant,
                concurrency: args.concurrency.max(1),
                metrics_addr: args.metrics_addr,
                leader_election: args.leader_election,
                lease_name: args.lease_name,
                lease_duration: std::time::Duration::from_secs(args.lease_duration),
                identity,
                organization: args.organization,
                ca_bundle,
                endpoints,
            };
            let rt = tokio::runtime::Runtime::new().expect("a Tokio runtime");
            match rt.block_on(onedrive_operator::controller::run::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "onedrive-operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crd => {
            print!("{}", onedrive_operator::api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Doctor { tenant, endpoints } => {
            init_stderr_logs();
            let policy = match endpoints.policy() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("onedrive-operator doctor: {e}");
                    return ExitCode::from(2);
                }
            };
            with_manifests(&tenant, |m| async move {
                let env = |k: &str| std::env::var(k).ok();
                let checks = onedrive_operator::cli::doctor::doctor(&m, &env, &policy).await;
                let name = m.tenant.metadata.name.clone().unwrap_or_default();
                if onedrive_operator::cli::doctor::print_checks(&name, &checks) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
        Command::Check { tenant, users, endpoints } => {
            init_stderr_logs();
            let policy = match endpoints.policy() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("onedrive-operator check: {e}");
                    return ExitCode::from(2);
                }
            };
            with_manifests(&tenant, |m| async move {
                let env = |k: &str| std::env::var(k).ok();
                match onedrive_operator::cli::check::check_users(&m, &users, &env, &policy).await {
                    Ok(lines) => {
                        for l in lines {
                            println!("{l}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("onedrive-operator check: {} ({})", e, e.reason());
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Login(args) => {
            init_stderr_logs();
            let rt = tokio::runtime::Runtime::new().expect("a Tokio runtime");
            match rt.block_on(login(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err((code, e)) => {
                    eprintln!("onedrive-operator login: {e}");
                    ExitCode::from(code)
                }
            }
        }
        Command::Simulate(args) => {
            init_stderr_logs();
            let rt = tokio::runtime::Runtime::new().expect("a Tokio runtime");
            match rt.block_on(simulator::serve::serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("onedrive-operator simulate: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Reads a tenant manifest file and runs `f` on it in a Tokio runtime.
fn with_manifests<F, Fut>(path: &std::path::Path, f: F) -> ExitCode
where
    F: FnOnce(onedrive_operator::cli::manifests::Manifests) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let manifests = match onedrive_operator::cli::manifests::parse_manifests(&text) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    tokio::runtime::Runtime::new().expect("a Tokio runtime").block_on(f(manifests))
}

fn init_stderr_logs() {
    init_logs(false)
}

/// Logs on stderr, `RUST_LOG` filtered (default `info`), text or JSON lines.
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// `login`: sign in, check, then store (or print) the Secret. Errors carry the exit code.
async fn login(args: LoginArgs) -> Result<(), (u8, String)> {
    use onedrive_operator::cli::login::{self, Login};
    use onedrive_operator::m365::signin::Flow;
    let usage = |e: String| (2u8, e);
    let policy = args.endpoints.policy().map_err(usage)?;
    let timeout =
        onedrive_operator::api::parse_duration("--timeout", &args.timeout).map_err(usage)?.unsigned_abs();
    let tenant = match (&args.tenant_file, &args.tenant) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
            login::tenant_from_file(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?
        }
        (None, Some(name)) => {
            let client = kube_client().await.map_err(usage)?;
            kube::Api::<onedrive_operator::api::OneDriveTenant>::all(client)
                .get(name)
                .await
                .map_err(|e| usage(format!("cannot read OneDriveTenant {name} from the cluster: {e}")))?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let request = Login {
        tenant,
        namespace: args.namespace.clone(),
        flow: if args.device_code { Flow::DeviceCode } else { Flow::Browser },
        no_browser: args.no_browser,
        port: args.port,
        timeout,
        policy,
    };
    let say = |line: &str| eprintln!("{line}");
    let signed = login::sign_in(&request, &say).await.map_err(|e| (1, e.to_string()))?;
    for note in &signed.notes {
        eprintln!("{note}");
    }
    if args.output.is_some() {
        let secret = login::secret_manifest(
            &request.tenant,
            &request.namespace,
            &signed.refresh_token,
            jiff::Timestamp::now(),
        )
        .map_err(|e| (1, e.to_string()))?;
        print!("{}", login::secret_yaml(&secret));
        eprintln!(
            "Printed the Secret manifest on stdout (it holds the refresh token: encrypt it before committing it)."
        );
        return Ok(());
    }
    let client = kube_client().await.map_err(usage)?;
    let warnings = login::store(client, &request.tenant, &request.namespace, &signed, args.force)
        .await
        .map_err(|e| (1, e.to_string()))?;
    for w in warnings {
        eprintln!("{w}");
    }
    let r =
        &request.tenant.spec.auth.delegated.as_ref().expect("sign_in checked it").refresh_token_secret_ref;
    println!(
        "Stored the refresh token of {} in Secret {}/{} (key {}) for OneDriveTenant {}: the operator uses it from its next cycle.",
        signed.user,
        request.namespace,
        r.name,
        r.key,
        kube::ResourceExt::name_any(&request.tenant)
    );
    Ok(())
}

async fn kube_client() -> Result<kube::Client, String> {
    onedrive_operator::install_crypto_provider();
    kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API (KUBECONFIG): {e}"))
}
