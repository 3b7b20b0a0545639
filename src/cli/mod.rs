//! The `askpro` command line. Every admin command prints a readable summary by default and
//! one JSON document with `--json`; `--config` and `--data-dir` work in any position.

mod admin;
mod agent;
mod apikey;
mod catalog;
mod events;
mod fake;
mod migrate;
mod output;

pub use output::{println as print_line, stdout_closed};
mod replay;
mod topics;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{Role, RunOptions};
use crate::config::{Config, Overrides};
use crate::loadgen::LoadgenArgs;

const ABOUT: &str = "AskPro turns calls answered by AI voice agents into booked appointments.";
const LONG_ABOUT: &str = "\
AskPro turns calls answered by AI voice agents into booked appointments, for many businesses
at once. It receives Retell.ai and Cal.com webhooks, verifies them, writes them durably to a
partitioned log and processes each tenant's events in order with supervised actors.

By default everything runs embedded under ./data (no other services needed):
  askpro serve                                   # ingress + workers on 127.0.0.1:8080
  askpro company create --name 'Salon Berlin' --json
  askpro branch create --company ID --name Mitte --phone '030 1234567' --json
  askpro secret set --company ID --provider retell --value KEY
  askpro events list --company ID --json

Configuration layers: built-in defaults, ./askpro.toml (or --config), ASKPRO_* environment
variables (ASKPRO_SECTION__KEY), then flags. See `askpro config show`.";

#[derive(Parser, Debug)]
#[command(name = "askpro", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Config file (default: ./askpro.toml when present).
    #[arg(long, global = true, value_name = "FILE", env = "ASKPRO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded backend (overrides data.dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the webhook ingress and the workers until SIGTERM or ctrl-c.
    Serve {
        /// Address to listen on (overrides server.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Run only the webhook ingress (HTTP → durable log); pair it with `askpro worker`.
    Ingress {
        /// Address to listen on (overrides server.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Run only the workers (log → pipeline), with /health and /metrics on --listen.
    /// The embedded backend allows one worker per data dir.
    Worker {
        /// Address for /health and /metrics (overrides server.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Inspect the effective configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Apply the CQL store's schema migrations (schemas/cql/) to cql.keyspace (idempotent).
    ///
    /// Creates the keyspace with cql.replication when it is missing, then applies every
    /// migration the keyspace has not recorded yet, and says which (or "up to date").
    /// Concurrent runs take turns on a schema lock. Needed before processes with
    /// cql.migrate_on_start = false open the store. With store.backend = "embedded" there is
    /// nothing to do: the embedded store migrates itself when it opens.
    Migrate {
        /// Print one JSON document (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Manage companies (tenants).
    #[command(subcommand)]
    Company(admin::CompanyCmd),
    /// Manage branches and their phone numbers.
    #[command(subcommand)]
    Branch(admin::BranchCmd),
    /// Manage webhook signing secrets (several may be active: rotation).
    #[command(subcommand)]
    Secret(admin::SecretCmd),
    /// Provision, show or remove a branch's Retell agent (needs the company's retell-api key).
    #[command(subcommand)]
    Agent(agent::AgentCmd),
    /// Manage the services a company offers.
    #[command(subcommand)]
    Service(catalog::ServiceCmd),
    /// Manage staff members and which services they perform.
    #[command(subcommand)]
    Staff(catalog::StaffCmd),
    /// Inspect appointments.
    #[command(subcommand)]
    Appointments(catalog::AppointmentsCmd),
    /// Inspect the event ledger.
    #[command(subcommand)]
    Events(events::EventsCmd),
    /// Create, describe and grow the Kafka topics (uses kafka.brokers, whatever log.backend).
    #[command(subcommand)]
    Topics(topics::TopicsCmd),
    /// Send signed webhooks to a running ingress and report throughput and latency.
    Loadgen(LoadgenCmd),
    /// Run a bare HTTP server that answers 200 at once (the plain-HTTP ceiling for loadgen).
    BenchServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: SocketAddr,
    },
    /// Run a fake Cal.com (API v2 bookings and slots) with fault injection, for demos and tests.
    FakeCalcom(fake::FakeCalcomArgs),
    /// Run a fake Retell API (LLMs, agents, phone numbers in memory), for demos and tests.
    FakeRetell(fake::FakeRetellArgs),
    /// Time cached call_inbound resolutions in a throwaway store (p50/p99/p99.9 in ns).
    BenchResolver(crate::routing::BenchResolverArgs),
    /// Time the Kafka producer (acks=all, idempotent) on ingress-shaped records, against a
    /// raw rdkafka loop, and check per-tenant order by reading the topic back.
    BenchProducer(crate::kafka::bench::BenchProducerArgs),
    /// Time dedup claims (and their completions) on the configured state store (embedded or
    /// CQL: store.backend), then check that a re-claimed sample is refused as a duplicate.
    /// Creates its own tenants and keys, so it can run against a store in use.
    BenchStore(crate::store_bench::BenchStoreArgs),
    /// Manage tenant API keys for /api/v1 (the key is shown once; only its hash is stored).
    #[command(subcommand)]
    Apikey(apikey::ApiKeyCmd),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the effective configuration (secrets redacted).
    Show {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct LoadgenCmd {
    #[command(flatten)]
    pub args: LoadgenArgs,
    /// Do not create tenants in the store; sign with throwaway secrets. For targets that do
    /// not verify signatures, such as `askpro bench-server`.
    #[arg(long)]
    pub no_provision: bool,
    /// `--scenario booking`: the Cal.com (or `askpro fake-calcom`) base URL the provisioned
    /// branches book at, e.g. http://127.0.0.1:8090.
    #[arg(long, value_name = "URL")]
    pub calcom_url: Option<String>,
    /// `--scenario booking`: requests per minute each provisioned tenant may send to Cal.com
    /// (high by default, so the run measures the pipeline rather than the budget).
    #[arg(long, default_value_t = 1_000_000)]
    pub calcom_rate_limit: u32,
}

/// Parses the command line and runs the command.
pub async fn main() -> Result<()> {
    let cli = Cli::parse();
    let listen = match &cli.command {
        Command::Serve { listen } | Command::Ingress { listen } | Command::Worker { listen } => {
            Some(*listen)
        }
        _ => None,
    };
    let overrides = Overrides {
        listen: listen.flatten(),
        data_dir: cli.data_dir.clone(),
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    // Admin commands keep stderr quiet unless asked; servers log at the configured level.
    crate::telemetry::init(&config.telemetry, listen.is_none());
    match cli.command {
        Command::Serve { .. } => serve(config, Role::All).await,
        Command::Ingress { .. } => serve(config, Role::Ingress).await,
        Command::Worker { .. } => serve(config, Role::Worker).await,
        Command::Config(ConfigCmd::Show { json }) => output::config(&config, json),
        Command::Migrate { json } => migrate::run(&config, json).await,
        Command::Company(cmd) => admin::company(&config, cmd).await,
        Command::Branch(cmd) => admin::branch(&config, cmd).await,
        Command::Secret(cmd) => admin::secret(&config, cmd).await,
        Command::Agent(cmd) => agent::run(&config, cmd).await,
        Command::Service(cmd) => catalog::service(&config, cmd).await,
        Command::Staff(cmd) => catalog::staff(&config, cmd).await,
        Command::Appointments(cmd) => catalog::appointments(&config, cmd).await,
        Command::Events(cmd) => events::run(&config, cmd).await,
        Command::Topics(cmd) => topics::run(&config, cmd).await,
        Command::Loadgen(cmd) => admin::loadgen(&config, cmd).await,
        Command::BenchServer { listen } => bench_server(listen).await,
        Command::FakeCalcom(args) => fake::run(args).await,
        Command::FakeRetell(args) => fake::run_retell(args).await,
        Command::BenchProducer(args) => crate::kafka::bench::run(&config, args).await,
        Command::BenchStore(args) => bench_store(&config, args).await,
        Command::Apikey(cmd) => apikey::run(&config, cmd).await,
        Command::BenchResolver(args) => {
            let report = crate::routing::bench_resolver(&args).await?;
            match args.json {
                true => output::println(serde_json::to_string_pretty(&report)?),
                false => output::println(report.render_text()),
            }
        }
    }
}

async fn bench_store(config: &Config, args: crate::store_bench::BenchStoreArgs) -> Result<()> {
    let store = crate::app::open_store(config).await?;
    let backend = format!("{:?}", config.store.backend).to_lowercase();
    let report = crate::store_bench::run(store, &backend, &args).await?;
    match args.json {
        true => output::println(serde_json::to_string_pretty(&report)?),
        false => output::print(report.render()),
    }
}

async fn serve(config: Config, role: Role) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let options = RunOptions {
        role,
        ..Default::default()
    };
    crate::app::run(listener, config, shutdown, options).await?;
    tracing::info!("askpro stopped");
    Ok(())
}

async fn bench_server(listen: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("bench-server answering 200 on http://{listen} (ctrl-c to stop)");
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    crate::bench_server::run(listener, shutdown).await?;
    Ok(())
}

/// Cancels the token on ctrl-c or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received; shutting down"),
        _ = term => tracing::info!("sigterm received; shutting down"),
    }
    token.cancel();
}
