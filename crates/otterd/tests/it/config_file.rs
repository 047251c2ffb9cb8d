//! The otterd binary reads a config file with sections under its environment and flags, refuses
//! the flat format of earlier versions naming each key's section, and never prints secrets
//! (docs/configuration.md).

use std::process::Output;

fn otterd(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_otterd"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_config_file_with_sections_layers_under_environment_and_flags() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("otterd.toml");
    std::fs::write(
        &path,
        "[server]\nlog_format = \"json\"\n\n[http]\nlisten = \"127.0.0.1:9000\"\nmax_connections = 100\n\n\
         [devices]\npoll_interval_s = 900\n\n[database]\nurl = \"postgres://otter:hunter2@db/otter\"\n\n\
         [blobs]\nbackend = \"s3\"\n\n[blobs.s3]\nbucket = \"fw\"\naccess_key_id = \"AKIA1\"\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let out = otterd(
        &[
            "config",
            "show",
            "--sources",
            "--config",
            config,
            "--listen",
            "127.0.0.1:9100",
        ],
        &[
            ("OTTER_POLL_INTERVAL_S", "60"),
            ("OTTER_S3_SECRET_ACCESS_KEY", "sup3rsecret"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for line in [
        "log_format = \"json\"  # config file\n",
        "[http]\nlisten = \"127.0.0.1:9100\"  # command line\n",
        "max_connections = 100  # config file\n",
        "[devices]\npoll_interval_s = 60  # environment\n",
        "# url = \"postgres://otter:***@db/otter\"  # config file\n",
        "[blobs.s3]\nbucket = \"fw\"  # config file\n",
        "# secret_access_key = \"***\"  # environment\n",
        "max_in_flight = 512  # default\n",
    ] {
        assert!(shown.contains(line), "{line:?} not in\n{shown}");
    }
    assert!(
        !shown.contains("hunter2") && !shown.contains("sup3rsecret"),
        "{shown}"
    );

    // What `config show` prints is itself a config file that gives the same settings.
    let again = dir.path().join("shown.toml");
    std::fs::write(&again, &shown).unwrap();
    let out = otterd(
        &["config", "show", "--config", again.to_str().unwrap()],
        &[("OTTER_S3_SECRET_ACCESS_KEY", "sup3rsecret")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plain = otterd(
        &[
            "config",
            "show",
            "--config",
            config,
            "--listen",
            "127.0.0.1:9100",
        ],
        &[
            ("OTTER_POLL_INTERVAL_S", "60"),
            ("OTTER_S3_SECRET_ACCESS_KEY", "sup3rsecret"),
        ],
    );
    // The database URL's password is not in the output, so it does not come back: compare the
    // rest.
    let without_url = |s: String| {
        s.lines()
            .filter(|l| !l.starts_with("# url"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        without_url(text(&out.stdout)),
        without_url(text(&plain.stdout))
    );
}

#[test]
fn a_flat_config_file_of_the_old_format_is_refused_naming_the_sections() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("old.toml");
    std::fs::write(&path, "listen = \"0.0.0.0:8080\"\npoll_interval_s = 900\n").unwrap();
    let out = otterd(&["config", "show", "--config", path.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains(path.to_str().unwrap()) && e.contains("`listen` is a key of [http]"),
        "{e}"
    );
    std::fs::write(&path, "[blobs]\ns3_bucket = \"fw\"\n").unwrap();
    let e = text(&otterd(&["config", "show", "--config", path.to_str().unwrap()], &[]).stderr);
    assert!(e.contains("`bucket` in [blobs.s3]"), "{e}");
}
