//! `otter`: keys, signing and verification where the key lives, image inspection, and the
//! management API of `otterd` (products, tokens, releases, devices).
//!
//! Exit codes (docs/cli.md): 0 success, 1 refused or verification failed, 2 bad usage or input,
//! 3 server unreachable or failing, 4 not authenticated or not allowed.

mod client;
mod commands;
mod error;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use client::Api;
use commands::signing::ManifestArgs;
use commands::{
    audit, dev, device, github, group, image_signing, inspect, keys, product, release, rollout,
    signing, token, user,
};
use error::CliResult;
use output::Output;

#[derive(Parser, Debug)]
#[command(name = "otter", version, about = "Sign, inspect and publish ESP32/ESP8266 firmware for Otter OTA updates", long_about = None)]
struct Cli {
    /// Print one JSON document on stdout (errors as JSON on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where otterd is and who we are: only the commands that talk to a server take these.
#[derive(Args, Debug)]
struct ServerArgs {
    /// otterd's base URL, e.g. https://otter.example.com (no path such as /api/v1).
    #[arg(long, global = true, env = "OTTER_SERVER", value_name = "URL")]
    server: Option<String>,
    /// An API token (ott_...), from `otter token create` or otterd's initial-admin-token.
    #[arg(
        long,
        global = true,
        env = "OTTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
}

/// A group of commands that talk to otterd: the server options, then the command.
#[derive(Args, Debug)]
struct Online<C: Subcommand> {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: C,
}

impl ServerArgs {
    fn api(&self) -> CliResult<Api> {
        Api::new(self.server.as_deref(), self.token.as_deref())
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a release signing key pair (private key 0600, public key beside it).
    Keygen {
        /// Where to write the private key; the public key goes beside it as NAME.pub.pem.
        #[arg(long, default_value = "release.key")]
        out: PathBuf,
        /// The key type: p256 (Otter release keys; Secure Boot V2 ECDSA), rsa3072 (Secure Boot V2
        /// RSA-PSS) or rsa2048 (the ESP8266 Arduino signed format).
        #[arg(long = "type", value_enum, default_value = "p256")]
        key_type: keys::KeyKind,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Show what is in a firmware image or a release.otter bundle.
    Inspect {
        /// A firmware .bin or a signed .otter file.
        file: PathBuf,
    },
    /// Sign a firmware image into a release.otter bundle, or (with --secure-boot-v2 or
    /// --esp8266-signed) into a signed image the device itself checks.
    Sign {
        /// The firmware image (.bin).
        image: PathBuf,
        /// The product the release is for (release.otter bundles).
        #[arg(long, required_unless_present_any = ["secure_boot_v2", "esp8266_signed", "esp32_arduino_signed"], conflicts_with_all = ["secure_boot_v2", "esp8266_signed", "esp32_arduino_signed"])]
        product: Option<String>,
        /// Append an ESP-IDF Secure Boot V2 signature sector instead (one block per --key:
        /// RSA-3072 or P-256, at most 3); writes the signed image to --out.
        #[arg(long, conflicts_with_all = ["esp8266_signed", "esp32_arduino_signed"])]
        secure_boot_v2: bool,
        /// Write the ESP8266 Arduino signed format instead (image, RSA PKCS#1 v1.5 SHA-256
        /// signature, its length as u32 LE; one RSA --key) to --out.
        #[arg(long, conflicts_with = "esp32_arduino_signed")]
        esp8266_signed: bool,
        /// Write the arduino-esp32 (3.3, `UPDATE_SIGN`) signed format instead (image, then 512
        /// bytes: RSA-PSS or ECDSA P-256 DER signature and zeros; one --key) to --out.
        #[arg(long)]
        esp32_arduino_signed: bool,
        #[command(flatten)]
        manifest: ManifestArgs,
        /// Where to write the bundle (default release.otter) or the signed image (required).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite an existing bundle.
        #[arg(long)]
        force: bool,
    },
    /// Verify a release.otter against trusted public keys (exit 0 valid, 1 not).
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// Trusted public key(s) (PEM); repeat for several.
        #[arg(long = "pub", value_name = "FILE", required = true)]
        public_keys: Vec<PathBuf>,
        /// How many distinct trusted keys must have signed.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
    },
    /// Publish and list releases.
    Release(Online<ReleaseCommand>),
    /// Products, their release keys and enrolment secrets.
    Product(Online<ProductCommand>),
    /// API tokens.
    Token(Online<TokenCommand>),
    /// People who sign in to the dashboard (admin tokens only).
    User(Online<UserCommand>),
    /// Devices and their update history.
    Device(Online<DeviceCommand>),
    /// Groups of a product's devices: a static list or a saved filter.
    Group(Online<GroupCommand>),
    /// The server's audit log of management actions (admin tokens only).
    Audit(Online<AuditCommand>),
    /// Staged rollouts of a release to a target (docs/rollouts.md).
    Rollout(Online<RolloutCommand>),
    /// Show who the token belongs to and what it may do.
    Whoami(ServerArgs),
    /// Tools for developing and testing Otter.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Print a shell completion script on stdout (also with --json), e.g.
    /// `otter completions bash > /etc/bash_completion.d/otter`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum ReleaseCommand {
    /// Sign (with --key) and upload a firmware image, or upload a signed release.otter.
    Push {
        /// A firmware .bin (signed here with --key) or a release.otter.
        file: PathBuf,
        /// The product (required for a .bin; checked for a .otter).
        #[arg(long)]
        product: Option<String>,
        /// The channel devices subscribe to.
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Private key(s) to sign a .bin with.
        #[arg(long = "key", value_name = "FILE")]
        keys: Vec<PathBuf>,
        /// The release version; defaults to the image's own (esp_app_desc_t). Required for ESP8266
        /// images and for images whose built-in version is empty (e.g. MicroPython).
        #[arg(long)]
        version: Option<String>,
        /// Anti-downgrade counter: devices refuse a release with a lower one than they hold.
        #[arg(long, default_value_t = 0)]
        security_counter: u32,
        /// Devices refuse the release after this time (Unix seconds).
        #[arg(long, value_name = "UNIX_SECONDS", conflicts_with = "expires_in")]
        expires_at: Option<u64>,
        /// Devices refuse the release after this long, e.g. 90d, 12h, 30m.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Publish although the security counter is lower than the channel's highest (refused
        /// otherwise: devices that took the higher counter would never update again).
        #[arg(long)]
        allow_lower_counter: bool,
    },
    /// List releases, newest first.
    List {
        /// Only this product's releases.
        #[arg(long)]
        product: Option<String>,
        /// Only this channel's releases.
        #[arg(long)]
        channel: Option<String>,
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one release.
    Show {
        /// The release id (rel_...), as `otter release list` shows it.
        id: String,
    },
    /// Make a published release available on another channel too (e.g. beta, then stable):
    /// the same signed release and image, checked by the server as an upload would be.
    Promote {
        /// The release id (rel_...), as `otter release push` or `otter release list` shows it.
        release: String,
        /// The channel to publish it on, e.g. stable.
        #[arg(long)]
        channel: String,
        /// Publish although the security counter is lower than the channel's highest (refused
        /// otherwise: devices that took the higher counter would never update again).
        #[arg(long)]
        allow_lower_counter: bool,
    },
    /// Attach a stock Arduino client's signed format of a published release (the output of
    /// `otter sign --esp8266-signed` or `--esp32-arduino-signed` over the release's image):
    /// those clients then get exactly these bytes.
    Attach {
        /// The release id (rel_...).
        release: String,
        /// The format: esp8266-signed or esp32-arduino-signed.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(commands::payload::KINDS))]
        kind: String,
        /// The signed file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ProductCommand {
    /// Create a product; prints its device enrolment secret once.
    Create {
        /// The product's name, as devices and releases name it.
        name: String,
        /// The chip, e.g. esp32c3 (esp32, esp32c3, esp32s3, esp8266, ...).
        #[arg(long)]
        chip: String,
        /// A description for people.
        #[arg(long)]
        description: Option<String>,
        /// Write the enrolment secret to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// List products.
    List {
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show a product, its keys and its enrolment bounds.
    Show {
        /// The product's name.
        name: String,
    },
    /// Change a product's enrolment bounds (docs/security.md, "Enrolment").
    Update {
        /// The product's name.
        name: String,
        /// Most devices that may be enrolled, or `none`.
        #[arg(long, value_name = "N|none")]
        max_devices: Option<String>,
        /// New enrolments a minute, or `none` (new products: 600).
        #[arg(long, value_name = "N|none")]
        enrollments_per_minute: Option<String>,
        /// `on`: only hardware ids on the product's allow-list may enrol.
        #[arg(long, value_name = "on|off")]
        allowlist: Option<String>,
    },
    /// The hardware ids allowed to enrol (pre-registration from the factory).
    #[command(subcommand)]
    Allowlist(AllowlistCommand),
    /// Replace the enrolment secret (the old one stops working).
    RotateSecret {
        /// The product's name.
        name: String,
        /// Write the new secret to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// Release public keys of a product.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Import the product's releases from a GitHub repository's releases: each new asset
    /// matching the pattern must be a release.otter bundle signed by one of the product's keys
    /// (docs/arduino.md). Replaces an earlier follow. Admin only.
    FollowGithub {
        /// The product's name.
        product: String,
        /// The repository, owner/name.
        #[arg(long, value_name = "OWNER/NAME")]
        repo: String,
        /// Glob over asset names (`*`, `?`).
        #[arg(long, value_name = "GLOB", default_value = "*.otter")]
        asset_pattern: String,
        /// Channel the imported releases are published to.
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Name of an environment variable holding a GitHub token with read access (private
        /// repositories); the token is stored on the server and never shown again.
        #[arg(long, value_name = "VAR")]
        github_token_env: Option<String>,
        /// The weaker mode: sign matching assets that are not release.otter bundles at import,
        /// with the server's github_import_key_file (docs/security.md).
        #[arg(long)]
        sign_on_import: bool,
    },
    /// Stop importing from GitHub (imported releases stay). Admin only.
    UnfollowGithub {
        /// The product's name.
        product: String,
    },
}

#[derive(Subcommand, Debug)]
enum AllowlistCommand {
    /// Add the hardware ids of a CSV: a header row naming a hardware_id column, one row per
    /// device, other columns ignored. A bad file imports nothing.
    Import {
        /// The product's name.
        product: String,
        /// The CSV file.
        file: PathBuf,
    },
    /// List the allow-listed hardware ids.
    List {
        /// The product's name.
        product: String,
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Remove one hardware id (an enrolled device keeps working; delete it to stop it).
    Remove {
        /// The product's name.
        product: String,
        /// The hardware id to remove, as the device reports it.
        hardware_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Register a public key: releases signed with its private key are accepted.
    Add {
        /// The product's name.
        product: String,
        /// The public key (PEM), e.g. release.pub.pem from `otter keygen`.
        #[arg(long = "pub", value_name = "FILE")]
        public_key: PathBuf,
        /// A name for people (default: the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a key by its id.
    Remove {
        /// The product's name.
        product: String,
        /// The key id, as `otter product show` lists it.
        key_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create an API token; prints it once.
    Create {
        /// admin, publisher (push to --product only; for CI) or viewer.
        #[arg(long)]
        role: String,
        /// Products a publisher may push to; repeat for several.
        #[arg(long = "product")]
        products: Vec<String>,
        /// A name for people, e.g. the CI job that uses it.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Revoke a token by its id.
    Revoke {
        /// The token id, as `otter token list` shows it.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a person; prints their one-time initial password (changed at the first sign-in).
    Create {
        /// The name they sign in with (letters, digits, . _ @ -).
        name: String,
        /// admin, publisher (push to --product only) or viewer.
        #[arg(long)]
        role: String,
        /// Products a publisher may push to; repeat for several.
        #[arg(long = "product")]
        products: Vec<String>,
    },
    /// List people by name (never their passwords).
    List {
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Disable a person: their sessions end and they cannot sign in.
    Disable {
        /// The person's name.
        name: String,
    },
}

/// The flags of `otter rollout create`.
#[derive(Args, Debug)]
struct RolloutCreate {
    /// The release to roll out (an id from `otter release list`).
    #[arg(long, value_name = "RELEASE_ID")]
    release: String,
    /// Target the devices that carry this tag.
    #[arg(long, group = "target")]
    tag: Option<String>,
    /// Target the devices of this group.
    #[arg(long, group = "target")]
    group: Option<String>,
    /// Target the devices that follow this channel.
    #[arg(long, group = "target")]
    channel: Option<String>,
    /// Target the devices this filter matches, e.g. tag=lab,version<2.0.0.
    #[arg(long, group = "target")]
    filter: Option<String>,
    /// Cumulative percentages of the target, e.g. 10,50,100.
    #[arg(long)]
    stages: String,
    /// Pause when more than this share (20%) or number (5) of a stage's finished devices failed.
    #[arg(long)]
    failure_threshold: String,
    /// Finished devices a stage needs before its failure threshold is judged.
    #[arg(long, value_name = "N", default_value_t = 0)]
    min_finished: u32,
    /// Share of a stage's devices that must succeed before it advances (default: all).
    #[arg(long, value_name = "PERCENT")]
    success_threshold: Option<String>,
    /// Open the next stage by itself once the success threshold is met.
    #[arg(long)]
    auto_advance: bool,
    /// Wait this long after a stage succeeded before advancing, e.g. 30m.
    #[arg(long, value_name = "DURATION")]
    soak: Option<String>,
    /// Roll out an older release deliberately (a rollback).
    #[arg(long)]
    rollback: bool,
    /// Devices may defer the update (not forced).
    #[arg(long)]
    optional: bool,
    /// Assign new devices only in this daily UTC window, e.g. 01:00-05:00.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    window: Option<String>,
    /// At most this many new deployments a minute.
    #[arg(long, value_name = "N")]
    rate: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum RolloutCommand {
    /// Start a staged rollout of a release; prints it with its id.
    Create(Box<RolloutCreate>),
    /// List rollouts, newest first.
    List {
        /// Only this product's rollouts.
        #[arg(long)]
        product: Option<String>,
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show a rollout with its per-stage counts by deployment state.
    Show {
        /// The rollout id, as `otter rollout list` shows it.
        id: String,
    },
    /// Stop assigning new devices (assigned ones may finish).
    Pause {
        /// The rollout id, as `otter rollout list` shows it.
        id: String,
        /// Why, shown as its pause_reason (default: who paused it).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Continue a paused rollout; its failures so far are acknowledged.
    Resume {
        /// The rollout id, as `otter rollout list` shows it.
        id: String,
    },
    /// Stop the rollout for good and cancel its active deployments.
    Abort {
        /// The rollout id, as `otter rollout list` shows it.
        id: String,
        /// Why, kept as its reason (default: who aborted it).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Open the next stage by hand (or complete the rollout after its last stage).
    Advance {
        /// The rollout id, as `otter rollout list` shows it.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// List devices; every filter given must hold (docs/devices.md).
    List {
        /// Only this product's devices.
        #[arg(long)]
        product: Option<String>,
        /// Only devices with this tag; repeat (or give a comma list) for devices with all.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Only devices that reported this version.
        #[arg(long)]
        version: Option<String>,
        /// Only devices whose last report has this state, e.g. failure.
        #[arg(long)]
        state: Option<String>,
        /// Only devices following this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only members of this group of --product.
        #[arg(long, requires = "product")]
        group: Option<String>,
        /// A device filter, e.g. 'tag=lab,version<2.0,seen<1h'.
        #[arg(long)]
        filter: Option<String>,
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Add tags to a device (tags it has stay once).
    Tag {
        /// The device id, as `otter device list` shows it.
        id: String,
        /// Tags: [a-z0-9][a-z0-9._:-]{0,63}, e.g. lab, site:berlin.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Remove tags from a device (tags it lacks are ignored).
    Untag {
        /// The device id, as `otter device list` shows it.
        id: String,
        /// The tags to remove.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Let an enrolled hardware id enrol once more with the product's enrolment secret (a
    /// device that lost its token); its current token stops working when it does.
    AllowReenroll {
        /// The enrolled device's hardware id, as it reports it (e.g. its MAC address).
        hardware_id: String,
        /// The product the device belongs to.
        #[arg(long)]
        product: String,
        /// How long the permission stays open, e.g. 30m, 24h (at most 7d).
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        valid_for: String,
    },
    /// Show a device and its update history.
    Show {
        /// The device id, as `otter device list` shows it.
        id: String,
    },
    /// Move a device to another channel.
    SetChannel {
        /// The device id, as `otter device list` shows it.
        id: String,
        /// The channel it follows from now on, e.g. beta.
        channel: String,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Create a group: a static list of devices (--devices) or a saved filter (--filter).
    Create {
        /// The group's name: [a-z0-9][a-z0-9._-]{0,63}, unique within the product.
        name: String,
        /// The product whose devices it holds.
        #[arg(long)]
        product: String,
        /// A static group of these device ids (comma list).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "filter",
            conflicts_with = "filter"
        )]
        devices: Option<Vec<String>>,
        /// A filter group: the devices this filter matches, e.g. 'tag=lab,version<2.0'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// List a product's groups.
    List {
        /// The product.
        #[arg(long)]
        product: String,
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show a group (list its devices with `otter device list --product P --group NAME`).
    Show {
        /// The group's name.
        name: String,
        /// The product.
        #[arg(long)]
        product: String,
    },
    /// Delete a group (its devices stay).
    Delete {
        /// The group's name.
        name: String,
        /// The product.
        #[arg(long)]
        product: String,
    },
    /// Add devices to a static group.
    Add {
        /// The group's name.
        name: String,
        /// Device ids of the group's product.
        #[arg(required = true)]
        devices: Vec<String>,
        /// The product.
        #[arg(long)]
        product: String,
    },
    /// Remove devices from a static group.
    Remove {
        /// The group's name.
        name: String,
        /// Device ids.
        #[arg(required = true)]
        devices: Vec<String>,
        /// The product.
        #[arg(long)]
        product: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// List audit entries, newest first.
    List {
        /// Only entries of this actor: a token's name, `system`, `anonymous` or
        /// `otterd admin (offline)`.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, e.g. release.push or token.revoke.
        #[arg(long)]
        action: Option<String>,
        /// Only entries on this product name, release, device or token id.
        #[arg(long)]
        target: Option<String>,
        /// Only entries at or after this time: Unix seconds, RFC 3339, or a duration back from
        /// now such as 24h or 7d.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries at or before this time (same forms as --since).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Show at most this many (default: all, fetched page by page).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
}

#[derive(Subcommand, Debug)]
enum DevCommand {
    /// Write a format-valid (not runnable) application image.
    SynthImage {
        /// The target chip, e.g. esp32c3 (esp8266 gives an ESP8266 ROM image).
        #[arg(long)]
        chip: String,
        /// esp_app_desc_t.version, 1 to 31 bytes.
        #[arg(long)]
        version: String,
        /// Approximate total size in bytes (default about 64 KiB).
        #[arg(long)]
        size: Option<usize>,
        /// esp_app_desc_t.secure_version (ESP-IDF's anti-rollback counter).
        #[arg(long, default_value_t = 0)]
        secure_version: u32,
        /// Seed of the pseudo-random payload.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the image.
        #[arg(long)]
        out: PathBuf,
    },
}

fn run(cli: Cli, o: Output) -> CliResult<()> {
    match cli.command {
        Command::Keygen {
            out,
            key_type,
            force,
        } => keys::keygen(&out, key_type, force, o),
        Command::Inspect { file } => inspect::inspect(&file, o),
        Command::Sign {
            image,
            product,
            secure_boot_v2,
            esp8266_signed,
            esp32_arduino_signed,
            manifest,
            out,
            force,
        } => match (product, secure_boot_v2, esp8266_signed) {
            (Some(product), false, false) if !esp32_arduino_signed => {
                let out = out.unwrap_or_else(|| PathBuf::from("release.otter"));
                signing::sign(&image, &product, &manifest, &out, force, o)
            }
            (_, sbv2, esp8266) => {
                let format = if sbv2 {
                    image_signing::Format::SecureBootV2
                } else if esp8266 {
                    image_signing::Format::Esp8266
                } else {
                    image_signing::Format::Esp32Arduino
                };
                image_signing::sign_image(&image, format, &manifest, out.as_deref(), force, o)
            }
        },
        Command::Verify {
            bundle,
            public_keys,
            threshold,
        } => signing::verify(&bundle, &public_keys, threshold, o),
        Command::Release(Online { server, command }) => {
            let api = server.api()?;
            match command {
                ReleaseCommand::Push {
                    file,
                    product,
                    channel,
                    keys,
                    version,
                    security_counter,
                    expires_at,
                    expires_in,
                    allow_lower_counter,
                } => {
                    let sign_with = (!keys.is_empty()).then_some(ManifestArgs {
                        keys,
                        version,
                        security_counter,
                        expires_at,
                        expires_in,
                    });
                    release::push(
                        &api,
                        &file,
                        product.as_deref(),
                        &channel,
                        sign_with.as_ref(),
                        allow_lower_counter,
                        o,
                    )
                }
                ReleaseCommand::List {
                    product,
                    channel,
                    limit,
                } => release::list(&api, product.as_deref(), channel.as_deref(), limit, o),
                ReleaseCommand::Show { id } => release::show(&api, &id, o),
                ReleaseCommand::Promote {
                    release,
                    channel,
                    allow_lower_counter,
                } => release::promote(&api, &release, &channel, allow_lower_counter, o),
                ReleaseCommand::Attach {
                    release,
                    kind,
                    file,
                } => commands::payload::attach(&api, &release, &kind, &file, o),
            }
        }
        Command::Product(Online { server, command }) => {
            let api = server.api()?;
            match command {
                ProductCommand::Create {
                    name,
                    chip,
                    description,
                    secret_file,
                } => product::create(
                    &api,
                    &name,
                    &chip,
                    description.as_deref(),
                    secret_file.as_deref(),
                    o,
                ),
                ProductCommand::List { limit } => product::list(&api, limit, o),
                ProductCommand::Show { name } => product::show(&api, &name, o),
                ProductCommand::Update {
                    name,
                    max_devices,
                    enrollments_per_minute,
                    allowlist,
                } => product::update(
                    &api,
                    &name,
                    max_devices.as_deref(),
                    enrollments_per_minute.as_deref(),
                    allowlist.as_deref(),
                    o,
                ),
                ProductCommand::Allowlist(AllowlistCommand::Import { product, file }) => {
                    product::allowlist_import(&api, &product, &file, o)
                }
                ProductCommand::Allowlist(AllowlistCommand::List { product, limit }) => {
                    product::allowlist_list(&api, &product, limit, o)
                }
                ProductCommand::Allowlist(AllowlistCommand::Remove {
                    product,
                    hardware_id,
                }) => product::allowlist_remove(&api, &product, &hardware_id, o),
                ProductCommand::RotateSecret { name, secret_file } => {
                    product::rotate_secret(&api, &name, secret_file.as_deref(), o)
                }
                ProductCommand::Key(KeyCommand::Add {
                    product,
                    public_key,
                    name,
                }) => product::add_key(&api, &product, &public_key, name.as_deref(), o),
                ProductCommand::Key(KeyCommand::Remove { product, key_id }) => {
                    product::remove_key(&api, &product, &key_id, o)
                }
                ProductCommand::FollowGithub {
                    product,
                    repo,
                    asset_pattern,
                    channel,
                    github_token_env,
                    sign_on_import,
                } => github::follow(
                    &api,
                    &product,
                    &github::FollowArgs {
                        repo: &repo,
                        asset_pattern: &asset_pattern,
                        channel: &channel,
                        token_env: github_token_env.as_deref(),
                        sign_on_import,
                    },
                    o,
                ),
                ProductCommand::UnfollowGithub { product } => github::unfollow(&api, &product, o),
            }
        }
        Command::Token(Online { server, command }) => {
            let api = server.api()?;
            match command {
                TokenCommand::Create {
                    role,
                    products,
                    name,
                } => token::create(&api, &role, &products, name.as_deref(), o),
                TokenCommand::List { limit } => token::list(&api, limit, o),
                TokenCommand::Revoke { id } => token::revoke(&api, &id, o),
            }
        }
        Command::User(Online { server, command }) => {
            let api = server.api()?;
            match command {
                UserCommand::Create {
                    name,
                    role,
                    products,
                } => user::create(&api, &name, &role, &products, o),
                UserCommand::List { limit } => user::list(&api, limit, o),
                UserCommand::Disable { name } => user::disable(&api, &name, o),
            }
        }
        Command::Device(Online { server, command }) => {
            let api = server.api()?;
            match command {
                DeviceCommand::List {
                    product,
                    tags,
                    version,
                    state,
                    channel,
                    group,
                    filter,
                    limit,
                } => {
                    let sel = device::Selection {
                        product: product.as_deref(),
                        tags: &tags,
                        version: version.as_deref(),
                        state: state.as_deref(),
                        channel: channel.as_deref(),
                        group: group.as_deref(),
                        filter: filter.as_deref(),
                    };
                    device::list(&api, &sel, limit, o)
                }
                DeviceCommand::Tag { id, tags } => device::tag(&api, &id, &tags, o),
                DeviceCommand::Untag { id, tags } => device::untag(&api, &id, &tags, o),
                DeviceCommand::AllowReenroll {
                    hardware_id,
                    product,
                    valid_for,
                } => device::allow_reenroll(&api, &product, &hardware_id, &valid_for, o),
                DeviceCommand::Show { id } => device::show(&api, &id, o),
                DeviceCommand::SetChannel { id, channel } => {
                    device::set_channel(&api, &id, &channel, o)
                }
            }
        }
        Command::Group(Online { server, command }) => {
            let api = server.api()?;
            match command {
                GroupCommand::Create {
                    name,
                    product,
                    devices,
                    filter,
                } => group::create(
                    &api,
                    &product,
                    &name,
                    devices.as_deref(),
                    filter.as_deref(),
                    o,
                ),
                GroupCommand::List { product, limit } => group::list(&api, &product, limit, o),
                GroupCommand::Show { name, product } => group::show(&api, &product, &name, o),
                GroupCommand::Delete { name, product } => group::delete(&api, &product, &name, o),
                GroupCommand::Add {
                    name,
                    devices,
                    product,
                } => group::members(&api, &product, &name, &devices, true, o),
                GroupCommand::Remove {
                    name,
                    devices,
                    product,
                } => group::members(&api, &product, &name, &devices, false, o),
            }
        }
        Command::Audit(Online {
            server,
            command:
                AuditCommand::List {
                    actor,
                    action,
                    target,
                    since,
                    until,
                    limit,
                },
        }) => {
            let filters = audit::Filters {
                actor: actor.as_deref(),
                action: action.as_deref(),
                target: target.as_deref(),
                since: since.as_deref(),
                until: until.as_deref(),
            };
            audit::list(&server.api()?, &filters, limit, o)
        }
        Command::Rollout(Online { server, command }) => {
            let api = server.api()?;
            match command {
                RolloutCommand::Create(c) => {
                    let RolloutCreate {
                        release,
                        tag,
                        group,
                        channel,
                        filter,
                        stages,
                        failure_threshold,
                        min_finished,
                        success_threshold,
                        auto_advance,
                        soak,
                        rollback,
                        optional,
                        window,
                        rate,
                    } = *c;
                    let target = match (tag, group, channel, filter) {
                        (Some(t), ..) => ("tag", t),
                        (_, Some(g), ..) => ("group", g),
                        (_, _, Some(c), _) => ("channel", c),
                        (.., Some(f)) => ("filter", f),
                        _ => {
                            return Err(error::CliError::usage(
                                "give a target: --tag, --group, --channel or --filter",
                            ))
                        }
                    };
                    rollout::create(
                        &api,
                        rollout::CreateArgs {
                            release: &release,
                            target: (target.0, &target.1),
                            stages: &stages,
                            failure_threshold: &failure_threshold,
                            min_finished,
                            success_threshold: success_threshold.as_deref(),
                            auto_advance,
                            soak: soak.as_deref(),
                            rollback,
                            optional,
                            window: window.as_deref(),
                            rate,
                        },
                        o,
                    )
                }
                RolloutCommand::List { product, limit } => {
                    rollout::list(&api, product.as_deref(), limit, o)
                }
                RolloutCommand::Show { id } => rollout::show(&api, &id, o),
                RolloutCommand::Pause { id, reason } => {
                    rollout::act(&api, &id, "pause", reason.as_deref(), o)
                }
                RolloutCommand::Resume { id } => rollout::act(&api, &id, "resume", None, o),
                RolloutCommand::Abort { id, reason } => {
                    rollout::act(&api, &id, "abort", reason.as_deref(), o)
                }
                RolloutCommand::Advance { id } => rollout::act(&api, &id, "advance", None, o),
            }
        }
        Command::Whoami(server) => token::whoami(&server.api()?, o),
        Command::Dev(DevCommand::SynthImage {
            chip,
            version,
            size,
            secure_version,
            seed,
            out,
        }) => dev::synth_image(&chip, &version, size, secure_version, seed, &out, o),
        Command::Completions { shell } => {
            completions(shell);
            Ok(())
        }
    }
}

/// Writes the completion script for `shell` on stdout (the script is the output: `--json`
/// changes nothing here).
fn completions(shell: clap_complete::Shell) {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "otter", &mut script);
    output::raw(&script);
}

/// Parses the command line. A usage error under `--json` goes to stderr as the JSON error
/// document every other error is (`{"error": "usage", ...}`), not as clap's text.
fn parse() -> Cli {
    let e = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    let help = matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !json || help {
        e.exit();
    }
    // clap's first paragraph, on one line: "the following required arguments were not
    // provided: <FILE>".
    let rendered = e.render().to_string();
    let message = rendered
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Output { json: true }.error(&error::CliError::usage(message));
    std::process::exit(2);
}

fn main() -> ExitCode {
    let cli = parse();
    let o = Output { json: cli.json };
    match run(cli, o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            o.error(&e);
            ExitCode::from(e.exit as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command, with the path of commands leading to it.
    fn all_args(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_string(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            all_args(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_has_help_text() {
        let mut args = Vec::new();
        all_args(&Cli::command(), "otter", &mut args);
        let missing: Vec<String> = args
            .iter()
            .filter(|(_, a)| {
                a.get_help().is_none() && !matches!(a.get_id().as_str(), "help" | "version")
            })
            .map(|(path, a)| format!("{path} {}", a.get_id()))
            .collect();
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn only_commands_that_talk_to_a_server_take_server_and_token() {
        let mut cmd = Cli::command();
        cmd.build();
        for sub in cmd.get_subcommands() {
            let online = [
                "release", "product", "token", "device", "group", "audit", "rollout", "user",
                "whoami",
            ]
            .contains(&sub.get_name());
            let mut args = Vec::new();
            all_args(sub, sub.get_name(), &mut args);
            for (path, a) in args {
                if matches!(a.get_id().as_str(), "server" | "token") {
                    assert!(online, "`otter {path}` lists --{}", a.get_id());
                }
            }
            if online {
                assert!(
                    sub.get_arguments().any(|a| a.get_id() == "server"),
                    "{}",
                    sub.get_name()
                );
            }
        }
    }
}
