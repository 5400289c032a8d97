//! `onedrive-operator simulate`: a simulated tenant on a listener of one's choosing, with the
//! manifests that point a cluster at it.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::manifests::PrintedAuth;
use super::{App, AppOnlyEnqueue, Clock, Config, FaultConfig, UserSpec, generate_users};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// A YAML list of users: UPN strings, or objects {upn, licensed, signInAllowed, hasSite, geo,
    /// lookupQuirk (None | MysiteBadRequest | MysiteUnknownError | Broken), profileOutcome (the
    /// profile state an enqueue ends in: 4096-4102, 8192-8198, or 1 to stay Enqueued)}.
    #[arg(long, conflicts_with = "generate", required_unless_present = "generate")]
    pub users: Option<PathBuf>,
    /// Generate this many users as the field has them: every 10th with a OneDrive (every 170th renamed since), every 50th
    /// unlicensed, every 83rd not allowed to sign in, some answering Graph's "mysite URL" quirk,
    /// some ending in a profile error.
    #[arg(long)]
    pub generate: Option<usize>,
    /// Simulated time from enqueue to site (before jitter of ±20%).
    #[arg(long, default_value = "30s")]
    pub provision_delay: String,
    /// Share of Graph and SharePoint requests answered 429/503 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Real time added to every response (Graph and SharePoint are rarely instant); default none.
    #[arg(long)]
    pub latency: Option<String>,
    /// Simulated time before a new personal site shows in the tenant-wide site listing; default none.
    #[arg(long)]
    pub listing_lag: Option<String>,
    /// Seed for faults and jitter: the same seed gives the same sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Whether ProfileLoader accepts app-only tokens (the field reports disagree).
    #[arg(long, value_enum, default_value = "accept")]
    pub app_only_enqueue: AppOnlyArg,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Credentials the printed tenant uses.
    #[arg(long, value_enum, default_value = "certificate")]
    pub auth: PrintedAuth,
    /// Namespace the operator runs in (where the printed Secret goes).
    #[arg(long, default_value = "onedrive-operator")]
    pub namespace: String,
    /// Name of the printed OneDriveTenant.
    #[arg(long, default_value = "simulator")]
    pub tenant_name: String,
    /// Lifetime of the access tokens the simulated Entra ID issues (real time).
    #[arg(long, default_value = "3599s")]
    pub token_lifetime: String,
    /// A permission the simulated app was not granted (repeatable), e.g. Sites.FullControl.All:
    /// its tokens lack it and the calls that need it are refused.
    #[arg(long)]
    pub withhold_permission: Vec<String>,
    /// A Multi-Geo tenant: its locations, the central one first (e.g. NAM,EUR,APC). Generated
    /// users are spread evenly over them; each geo has its own admin host and user profiles.
    #[arg(long, value_delimiter = ',')]
    pub geos: Vec<String>,
    /// The host name the printed and expected URLs use instead of the listen address, e.g.
    /// `localhost` (the name must resolve to the listen address where clients run).
    #[arg(long)]
    pub host_name: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AppOnlyArg {
    Accept,
    Refuse,
}

/// Serves a simulated tenant until Ctrl-C, after printing a ready-to-apply tenant and Secret.
pub async fn serve(args: ServeArgs) -> Result<(), String> {
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
    let geos: Vec<String> = args.geos.iter().map(|g| g.trim().to_ascii_uppercase()).collect();
    if let Some(bad) = geos.iter().find(|g| g.len() != 3 || !g.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(format!("--geos: {bad:?} is not a location code of three letters such as EUR"));
    }
    let mut users = users;
    if args.generate.is_some() {
        super::spread_over_geos(&mut users, &geos);
    }
    config.users = users;
    config.geos = geos;
    let delay = crate::api::parse_duration("--provision-delay", &args.provision_delay)?;
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
    let latency = match &args.latency {
        Some(l) => crate::api::parse_duration("--latency", l)?.unsigned_abs(),
        None => std::time::Duration::ZERO,
    };
    config.faults = FaultConfig { rate: args.fault_rate, seed: args.seed, latency, ..FaultConfig::default() };
    config.token_lifetime = crate::api::parse_duration("--token-lifetime", &args.token_lifetime)?;
    if config.token_lifetime < jiff::SignedDuration::from_secs(10) {
        return Err("--token-lifetime must be at least 10s".into());
    }
    config.withheld_permissions = args.withhold_permission.clone();
    config.host_name = args.host_name.clone();
    if let Some(lag) = &args.listing_lag {
        config.listing_lag = crate::api::parse_duration("--listing-lag", lag)?;
    }

    // Test credentials, valid for this simulator only.
    let key = crate::jose::generate_key();
    let certificate = crate::jose::self_signed_certificate(&key, "onedrive-operator simulator")
        .map_err(|e| e.to_string())?;
    let client_id = "5e6f7a8b-0c1d-4e2f-8a9b-0c1d2e3f4a5b".to_string();
    let refresh_token = format!("rt-{}", crate::jose::guid());
    config.apps = vec![
        App::Certificate { client_id: client_id.clone(), certificate: certificate.clone() },
        App::Delegated { client_id: client_id.clone(), refresh_tokens: vec![refresh_token.clone()] },
    ];
    let users = config.users.len();
    let sim = super::start(config, args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let endpoints = sim.endpoints();
    let data = match args.auth {
        PrintedAuth::Certificate => [
            ("tls.crt".to_string(), certificate.to_pem()),
            ("tls.key".to_string(), crate::jose::private_key_to_pem(&key)),
        ]
        .into(),
        PrintedAuth::Delegated => [("refresh_token".to_string(), refresh_token)].into(),
    };
    let (tenant, secret) = super::manifests::tenant_and_secret(
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
    use crate::m365::policy::{ALLOW_ENV, ALLOW_FLAG, HOST_OVERRIDES_ENV};
    println!(
        "# Its endpoints are on loopback, outside any Microsoft cloud: run the operator (and doctor,\n# check) with {ALLOW_FLAG} (or {ALLOW_ENV}=1). Tests and demos only."
    );
    let accounts: Vec<String> = sim
        .accounts()
        .iter()
        .map(|a| {
            format!("{} ({})", a.upn, if a.is_admin() { "SharePoint Administrator" } else { "no admin role" })
        })
        .collect();
    println!(
        "# Delegated sign-ins (onedrive-operator login): {}; the simulator approves as one after\n#   curl -X POST {}/_sim/sign-in -H 'content-type: application/json' -d '{{\"user\": \"<account>\"}}'",
        accounts.join(", "),
        sim.base_url()
    );
    let overrides = sim.host_overrides();
    if !overrides.is_empty() {
        println!(
            "# Multi-Geo: discovery finds each geo's public admin host; also set\n#   {HOST_OVERRIDES_ENV}={}\n# to point them at this simulator.",
            overrides.join(",")
        );
    }
    print!("{}", super::manifests::to_yaml(&tenant, &secret));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(listen = %sim.addr(), users, "Microsoft 365 simulator ready; stats at {}/_sim/stats", sim.base_url());
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    sim.shutdown().await;
    Ok(())
}

/// A YAML list whose items are UPN strings or user objects.
pub fn parse_users(text: &str) -> Result<Vec<UserSpec>, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Upn(String),
        User(UserSpec),
    }
    let entries: Vec<Entry> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .map(|e| match e {
            Entry::Upn(upn) => UserSpec::new(upn),
            Entry::User(u) => u,
        })
        .collect())
}
