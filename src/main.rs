//! `strata`: the command-line client and the single-process dev deployment.
//!
//! `strata dev` lives in [`strata::dev`], the API client in [`strata::client`];
//! [`commands`] has every other subcommand: parse, call one API, print.

mod commands;

use strata::{client, dev};

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Strata: two-tier edge compute. Talks to the deployment in `<state-dir>/dev.json`
/// unless `--region`, `--pop` or `--token` say otherwise.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Region control API URL (default: from dev.json).
    #[arg(long, global = true, env = "STRATA_REGION")]
    region: Option<String>,
    /// POP URL for invocations (default: from dev.json).
    #[arg(long, global = true, env = "STRATA_POP")]
    pop: Option<String>,
    /// Tenant token (default: from dev.json).
    #[arg(long, global = true, env = "STRATA_TOKEN")]
    token: Option<String>,
    /// Operator token for tenant administration (default: from dev.json).
    #[arg(long, global = true, env = "STRATA_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Where `strata dev` keeps its state and dev.json.
    #[arg(long, global = true, default_value = ".strata")]
    state_dir: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one region and one POP on loopback, with the examples deployed.
    Dev(dev::DevArgs),
    /// Deploy a module (.wasm or .wat) as a function's $LATEST.
    Deploy(commands::DeployArgs),
    /// Invoke a function through the POP.
    Invoke(commands::InvokeArgs),
    /// List functions, with observed peak memory and the recommended size.
    Ls,
    /// One function: its configuration, observed peak memory (p50/p90/p99 at the region
    /// and its POPs), the recommended and the learned size.
    Info {
        /// The function's name.
        name: String,
    },
    /// Delete a function.
    Rm {
        /// The function's name.
        name: String,
    },
    /// Publish $LATEST as a new immutable version; prints its number.
    Publish(commands::version::PublishArgs),
    /// Aliases: names pointing at one version or splitting traffic between two.
    Alias {
        #[command(subcommand)]
        command: commands::version::AliasCommand,
    },
    /// HTTP routes: (host, path prefix) -> function, for plain device requests.
    Route {
        #[command(subcommand)]
        command: commands::route::RouteCommand,
    },
    /// Host ownership: ls, claim, release (tenant); assign, release --operator (operator).
    Host {
        #[command(subcommand)]
        command: commands::host::HostCommand,
    },
    /// TLS certificates for your hosts, served by POPs: add, ls (with expiry), rm.
    Cert {
        #[command(subcommand)]
        command: commands::cert::CertCommand,
    },
    /// Print a function's log (its stderr, from every node).
    Logs(commands::logs::LogsArgs),
    /// The dead-letter queue: failed async invocations (ls, show, replay, purge).
    Dlq {
        #[command(subcommand)]
        command: commands::dlq::DlqCommand,
    },
    /// Tenant administration (operator token).
    Tenant {
        #[command(subcommand)]
        command: commands::TenantCommand,
    },
    /// Token administration (operator token).
    Token {
        #[command(subcommand)]
        command: commands::TokenCommand,
    },
    /// Certificates for mutual TLS between tiers.
    Certs {
        #[command(subcommand)]
        command: commands::CertsCommand,
    },
    /// Latency scenarios: simulate a scenario file and write its report.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ScenarioCommand {
    /// Simulate FILE.toml (with `--live`, also against real nodes) and write a report.
    Run(scenarios::run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(commands::EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::EXIT_FAILURE)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Scenario {
        command: ScenarioCommand::Run(args),
    } = &cli.command
    {
        scenarios::run::main(args).await?;
        return Ok(0);
    }
    if let Command::Dev(args) = &cli.command {
        init_tracing();
        dev::run(&cli.state_dir, args).await?;
        return Ok(0);
    }
    let ctx = client::Context::new(
        &cli.state_dir,
        client::Overrides {
            region: cli.region,
            pop: cli.pop,
            token: cli.token,
            admin_token: cli.admin_token,
        },
        cli.json,
    )?;
    match cli.command {
        Command::Dev(_) | Command::Scenario { .. } => Ok(0),
        Command::Deploy(args) => commands::deploy(&ctx, args).await,
        Command::Invoke(args) => commands::invoke(&ctx, args).await,
        Command::Ls => commands::ls(&ctx).await,
        Command::Info { name } => commands::info(&ctx, &name).await,
        Command::Rm { name } => commands::rm(&ctx, &name).await,
        Command::Publish(args) => commands::version::publish(&ctx, args).await,
        Command::Alias { command } => commands::version::alias(&ctx, command).await,
        Command::Route { command } => commands::route::run(&ctx, command).await,
        Command::Host { command } => commands::host::run(&ctx, command).await,
        Command::Cert { command } => commands::cert::run(&ctx, command).await,
        Command::Logs(args) => commands::logs::run(&ctx, args).await,
        Command::Dlq { command } => commands::dlq::run(&ctx, command).await,
        Command::Tenant { command } => commands::tenant(&ctx, command).await,
        Command::Token { command } => commands::token(&ctx, command).await,
        Command::Certs { command } => commands::certs(&ctx, command),
    }
}

fn init_tracing() {
    common::telemetry::init(common::telemetry::LogFormat::Text, "warn,strata=info");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("strata").chain(args.iter().copied()))
    }

    #[test]
    fn the_design_commands_parse() {
        for args in [
            &["publish", "f"][..],
            &["alias", "set", "f", "live", "3"],
            &["alias", "set", "f", "live", "3=90", "4=10", "--json"],
            &["alias", "ls", "f"],
            &["dlq", "ls"],
            &["dlq", "show", "3"],
            &["dlq", "replay", "3"],
            &["dlq", "replay", "--all"],
            &["dlq", "purge", "--json"],
            &["alias", "rm", "f", "live"],
            &["route", "add", "shop.example", "/api", "shop:live"],
            &["route", "ls", "--json"],
            &["route", "rm", "0123456789abcdef"],
            &["host", "ls", "--all"],
            &["host", "claim", "shop.example"],
            &["host", "assign", "127.0.0.1", "acme"],
            &["host", "release", "shop.example", "--operator"],
            &["cert", "add", "shop.example", "chain.pem", "key.pem"],
            &["cert", "ls", "--all"],
            &["cert", "rm", "shop.example"],
            &["logs", "f", "--follow"],
            &["logs", "f", "--since", "10", "--limit", "5"],
            &["invoke", "f", "--qualifier", "live", "--data", "x"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}: {:?}", parse(args).err());
        }
    }

    #[test]
    fn usage_errors_are_refused_by_the_parser() {
        for args in [
            &["alias", "set", "f", "live"][..],
            &["alias", "set", "f", "live", "1=40", "2=30", "3=30"],
            &["route", "add", "shop.example", "/api"],
            &["logs", "f", "--limit", "0"],
            &["publish"],
        ] {
            let err = parse(args).expect_err("refused");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
