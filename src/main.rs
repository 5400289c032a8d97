use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A Kubernetes operator that pre-provisions OneDrive for Business sites.
#[derive(Parser)]
#[command(name = "onedrive-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print both CustomResourceDefinitions as YAML (the source of `crds/`).
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", onedrive_operator::api::crds_yaml());
            ExitCode::SUCCESS
        }
    }
}
