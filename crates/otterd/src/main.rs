//! `otterd`: parse the command line, set up logging, load settings, run. Nothing else.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use otterd::config::{Layer, Settings, Source};

#[derive(Parser)]
#[command(name = "otterd", version, about = "The Otter OTA update server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct SettingsArgs {
    /// TOML config file (also OTTER_CONFIG).
    #[arg(long, env = "OTTER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: SQLite database, blobs, initial admin token (also OTTER_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:8080 (also OTTER_LISTEN).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Database: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE (also
    /// OTTER_DATABASE_URL; prefer the environment or the config file for a password, which a
    /// flag shows to every user of the host).
    #[arg(long)]
    database_url: Option<String>,
    /// Log format: text or json (also OTTER_LOG_FORMAT).
    #[arg(long)]
    log_format: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(SettingsArgs),
    /// Inspect settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Administration on the server's host, without a token.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a new admin token and print it once (recovery when every admin token is lost).
    /// Works whether or not the server is running.
    CreateToken {
        #[command(flatten)]
        settings: SettingsArgs,
        /// Name of the new token, as `otter token list` shows it.
        #[arg(long)]
        name: String,
    },
    /// Create an admin person for the dashboard and print their one-time initial password
    /// (changed at the first sign-in). Works whether or not the server is running.
    CreatePerson {
        #[command(flatten)]
        settings: SettingsArgs,
        /// The person's name, to sign in with.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the settings in effect.
    Show {
        #[command(flatten)]
        settings: SettingsArgs,
        /// Say where each value came from.
        #[arg(long)]
        sources: bool,
    },
}

fn load(args: SettingsArgs) -> anyhow::Result<Settings> {
    let mut s = Settings::default();
    if let Some(path) = &args.config {
        s.apply(Layer::from_file(path)?, Source::File);
    }
    s.apply(Layer::from_env(|k| std::env::var(k).ok())?, Source::Env);
    s.apply(
        Layer {
            data_dir: args.data_dir,
            listen: args.listen,
            database_url: args.database_url.map(|u| Some(u.into())),
            log_format: args.log_format,
            ..Default::default()
        },
        Source::Flag,
    );
    s.validate()?;
    Ok(s)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Everything otterd creates (data directory, database, WAL, blobs, tokens) is private.
    otterd::perms::private_umask();
    match Cli::parse().command {
        Command::Openapi => {
            println!("{}", otterd::openapi::document_json());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Show { settings, sources },
        } => {
            print!("{}", load(settings)?.show(sources));
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::CreateToken { settings, name },
        } => {
            let settings = load(settings)?;
            let token = otterd::admin::create_admin_token(&settings, &name).await?;
            println!("{token}");
            eprintln!("This admin token is shown once: keep it in a password manager.");
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::CreatePerson { settings, name },
        } => {
            let settings = load(settings)?;
            let password = otterd::admin::create_admin_person(&settings, &name).await?;
            println!("{password}");
            eprintln!(
                "This one-time initial password is shown once; {name} chooses their own at the first sign-in."
            );
            Ok(())
        }
        Command::Serve(args) => {
            let settings = load(args)?;
            otterd::telemetry::init_tracing(&settings.log_format);
            let listen = settings.listen;
            let state = otterd::open_state(settings).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {listen} (set another with --listen or OTTER_LISTEN)")
                })?;
            let addr = listener.local_addr()?;
            // Before the ready line, so that whoever waits for it finds the admin token written.
            otterd::bootstrap_admin(&state).await?;
            tracing::info!(%addr, "otterd listening");
            // Tests and scripts read this line to learn the port when listening on :0.
            println!("otterd listening on http://{addr}");
            otterd::launch_with_listener(state, listener, shutdown_signal()).await
        }
    }
}
