use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use onedrive_operator::simulator::{self, AppOnlyEnqueue, manifests::PrintedAuth};

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
    /// Tenants reconciled in parallel.
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
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (in cluster, or with a kubeconfig).
    Run(RunArgs),
    /// Print both CustomResourceDefinitions as YAML (the source of `crds/`).
    Crd,
    /// Serve a simulated Microsoft 365 tenant on loopback and print a ready-to-apply tenant + Secret.
    Simulate(SimulateArgs),
    /// Check a tenant's credentials, permissions and whether its enqueue call accepts this token kind.
    Doctor {
        /// A OneDriveTenant manifest, optionally followed by the Secrets it references.
        #[arg(long)]
        tenant: PathBuf,
    },
    /// Print what the tenant says about each user.
    Check {
        /// A OneDriveTenant manifest, optionally followed by the Secrets it references.
        #[arg(long)]
        tenant: PathBuf,
        /// User principal names.
        #[arg(required = true)]
        users: Vec<String>,
    },
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// A YAML list of users: UPN strings, or objects {upn, licensed, signInAllowed, hasSite, geo,
    /// lookupQuirk (None | MysiteBadRequest | MysiteUnknownError | Broken), profileOutcome (the
    /// profile state an enqueue ends in: 4096-4102, 8192-8198, or 1 to stay Enqueued)}.
    #[arg(long, conflicts_with = "generate", required_unless_present = "generate")]
    users: Option<PathBuf>,
    /// Generate this many users as the field has them: every 10th with a OneDrive, every 50th
    /// unlicensed, every 83rd not allowed to sign in, some answering Graph's "mysite URL" quirk,
    /// some ending in a profile error.
    #[arg(long)]
    generate: Option<usize>,
    /// Simulated time from enqueue to site (before jitter of ±20%).
    #[arg(long, default_value = "30s")]
    provision_delay: String,
    /// Share of Graph and SharePoint requests answered 429/503 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Seed for faults and jitter: the same seed gives the same sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Whether ProfileLoader accepts app-only tokens (the field reports disagree).
    #[arg(long, value_enum, default_value = "accept")]
    app_only_enqueue: AppOnlyArg,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Credentials the printed tenant uses.
    #[arg(long, value_enum, default_value = "certificate")]
    auth: PrintedAuth,
    /// Namespace the operator runs in (where the printed Secret goes).
    #[arg(long, default_value = "onedrive-operator")]
    namespace: String,
    /// Name of the printed OneDriveTenant.
    #[arg(long, default_value = "simulator")]
    tenant_name: String,
    /// Lifetime of the access tokens the simulated Entra ID issues (real time).
    #[arg(long, default_value = "3599s")]
    token_lifetime: String,
    /// A permission the simulated app was not granted (repeatable), e.g. Sites.FullControl.All:
    /// its tokens lack it and the calls that need it are refused.
    #[arg(long)]
    withhold_permission: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AppOnlyArg {
    Accept,
    Refuse,
}

fn main() -> ExitCode {
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
        Command::Doctor { tenant } => {
            init_stderr_logs();
            with_manifests(&tenant, |m| async move {
                let env = |k: &str| std::env::var(k).ok();
                let checks = onedrive_operator::tenant::doctor::doctor(&m, &env).await;
                let name = m.tenant.metadata.name.clone().unwrap_or_default();
                if onedrive_operator::tenant::doctor::print_checks(&name, &checks) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
        Command::Check { tenant, users } => {
            init_stderr_logs();
            with_manifests(&tenant, |m| async move {
                let env = |k: &str| std::env::var(k).ok();
                match onedrive_operator::tenant::doctor::check_users(&m, &users, &env).await {
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
        Command::Simulate(args) => {
            init_stderr_logs();
            let rt = tokio::runtime::Runtime::new().expect("a Tokio runtime");
            match rt.block_on(simulate(args)) {
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
    F: FnOnce(onedrive_operator::tenant::doctor::Manifests) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let manifests = match onedrive_operator::tenant::doctor::parse_manifests(&text) {
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

async fn simulate(args: SimulateArgs) -> Result<(), String> {
    use onedrive_operator::simulator::{App, Clock, Config, FaultConfig, generate_users};
    let mut config = Config::default();
    let users = match (&args.users, args.generate) {
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--users {}: {e}", path.display()))?;
            parse_users(&text).map_err(|e| format!("--users {}: {e}", path.display()))?
        }
        (None, Some(n)) => generate_users(n, &config.domain),
        (None, None) => unreachable!("clap requires one"),
    };
    config.users = users;
    let delay = onedrive_operator::api::parse_duration("--provision-delay", &args.provision_delay)?;
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err("--fault-rate must be between 0 and 1".into());
    }
    if !args.time_scale.is_finite() || args.time_scale <= 0.0 {
        return Err("--time-scale must be positive".into());
    }
    config.provision_delay = delay;
    config.clock = Clock::Scaled(args.time_scale);
    config.app_only_enqueue = match args.app_only_enqueue {
        AppOnlyArg::Accept => AppOnlyEnqueue::Accept,
        AppOnlyArg::Refuse => AppOnlyEnqueue::Refuse,
    };
    config.faults = FaultConfig { rate: args.fault_rate, seed: args.seed, ..FaultConfig::default() };
    config.token_lifetime = onedrive_operator::api::parse_duration("--token-lifetime", &args.token_lifetime)?;
    if config.token_lifetime < jiff::SignedDuration::from_secs(10) {
        return Err("--token-lifetime must be at least 10s".into());
    }
    config.withheld_permissions = args.withhold_permission.clone();

    // Test credentials, valid for this simulator only.
    let key = onedrive_operator::jose::generate_key();
    let certificate = onedrive_operator::jose::self_signed_certificate(&key, "onedrive-operator simulator")
        .map_err(|e| e.to_string())?;
    let client_id = "5e6f7a8b-0c1d-4e2f-8a9b-0c1d2e3f4a5b".to_string();
    let refresh_token = format!("rt-{}", onedrive_operator::jose::guid());
    config.apps = vec![
        App::Certificate { client_id: client_id.clone(), certificate: certificate.clone() },
        App::Delegated { client_id: client_id.clone(), refresh_tokens: vec![refresh_token.clone()] },
    ];
    let users = config.users.len();
    let sim = simulator::start(config, args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let endpoints = sim.endpoints();
    let data = match args.auth {
        PrintedAuth::Certificate => [
            ("tls.crt".to_string(), certificate.to_pem()),
            ("tls.key".to_string(), onedrive_operator::jose::private_key_to_pem(&key)),
        ]
        .into(),
        PrintedAuth::Delegated => [("refresh_token".to_string(), refresh_token)].into(),
    };
    let (tenant, secret) = simulator::manifests::tenant_and_secret(
        &args.tenant_name,
        &args.namespace,
        &endpoints,
        args.auth,
        &client_id,
        data,
    );
    println!(
        "# A simulated Microsoft 365 tenant with {users} users. Test credentials: valid for this simulator only."
    );
    print!("{}", simulator::manifests::to_yaml(&tenant, &secret));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(listen = %sim.addr(), users, "Microsoft 365 simulator ready; stats at {}/_sim/stats", sim.base_url());
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    sim.shutdown().await;
    Ok(())
}

/// A YAML list whose items are UPN strings or user objects.
fn parse_users(text: &str) -> Result<Vec<onedrive_operator::simulator::UserSpec>, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Upn(String),
        User(onedrive_operator::simulator::UserSpec),
    }
    let entries: Vec<Entry> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .map(|e| match e {
            Entry::Upn(upn) => onedrive_operator::simulator::UserSpec::new(upn),
            Entry::User(u) => u,
        })
        .collect())
}
