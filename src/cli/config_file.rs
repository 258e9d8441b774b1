//! The optional TOML config file. Its keys are the environment variable names; each value is
//! turned into the matching `--flag` placed before the user's own arguments, and skipped when
//! the variable is set, so the order of precedence stays flag > environment > file > default.

use clap::CommandFactory;
use std::ffi::OsString;

/// Returns `args` with the file's settings inserted after the program name.
///
/// # Errors
/// A one-line message when the file cannot be read or holds an unknown key.
pub fn args_with_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("config file {path}: {e}"))?;
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| format!("config file {path}: {}", e.message()))?;
    let command = super::Cli::command();
    let mut inserted = Vec::new();
    for (key, value) in table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|env| env.eq_ignore_ascii_case(&key)))
            .ok_or_else(|| format!("config file {path}: unknown key `{key}`"))?;
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        if std::env::var_os(env).is_some() {
            continue;
        }
        let values: Vec<String> = match value {
            toml::Value::String(s) => vec![s],
            toml::Value::Integer(i) => vec![i.to_string()],
            toml::Value::Boolean(b) => vec![b.to_string()],
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    _ => Err(format!("config file {path}: `{key}` must list strings or numbers")),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(format!("config file {path}: `{key}` must be a string, number, boolean or list"));
            }
        };
        // `KEY = ""` leaves the setting unset (as `config example` shows the ones without a default).
        if values.iter().all(String::is_empty) {
            continue;
        }
        inserted.push(OsString::from(format!("--{long}={}", values.join(","))));
    }
    let mut out = Vec::with_capacity(args.len() + inserted.len());
    let mut rest = args.into_iter();
    out.extend(rest.next());
    out.extend(inserted);
    out.extend(rest);
    Ok(out)
}

fn config_path(args: &[OsString]) -> Option<String> {
    let mut iter = args.iter().filter_map(|a| a.to_str());
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(str::to_owned);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_owned());
        }
    }
    std::env::var("SMTP_VAULT_CONFIG").ok()
}

/// One setting as the file, the environment and `--help` know it.
pub struct Setting {
    /// The environment variable, which is also the file's key.
    pub env: String,
    /// The flag.
    pub flag: String,
    /// The default, if any.
    pub default: Option<String>,
    /// What it does (the flag's help, first paragraph).
    pub help: String,
    /// Whether its value is a secret (never shown by `--help`; best kept out of files).
    pub secret: bool,
}

/// Every setting the file may hold, read from the one source of truth: the command line's
/// own definitions (so this list, `--help`, `config example` and docs/configuration.md agree).
#[must_use]
pub fn settings() -> Vec<Setting> {
    let command = super::Cli::command();
    let mut out: Vec<Setting> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            if env == "SMTP_VAULT_CONFIG" {
                return None;
            }
            let defaults: Vec<String> =
                arg.get_default_values().iter().filter_map(|v| v.to_str()).map(str::to_owned).collect();
            let help = arg.get_long_help().or_else(|| arg.get_help()).map(ToString::to_string).unwrap_or_default();
            Some(Setting {
                env,
                flag: format!("--{}", arg.get_long()?),
                default: (!defaults.is_empty()).then(|| defaults.join(",")),
                help: help.split("\n\n").next().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" "),
                secret: arg.is_hide_env_values_set(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.env.cmp(&b.env));
    out
}

fn toml_value(text: &str) -> String {
    if text.parse::<i64>().is_ok() || text == "true" || text == "false" {
        text.to_owned()
    } else {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// `smtp-vault config example`: a TOML file with every setting commented out at its default,
/// each under its help; uncommenting a line and editing it sets it.
#[must_use]
pub fn example_toml() -> String {
    let mut out = String::from(
        "# smtp-vault configuration (--config FILE or SMTP_VAULT_CONFIG). Keys are the environment\n\
         # variable names; the environment and flags override the file. Every setting is shown at its\n\
         # default, commented out. Generated by `smtp-vault config example`.\n",
    );
    for s in settings() {
        out.push('\n');
        out.push_str(&format!("# {}\n", s.help));
        if s.secret {
            out.push_str("# A secret: prefer the environment (or a file only the console's user can read).\n");
        }
        out.push_str(&format!(
            "# {} = {}\n",
            s.env,
            s.default.as_deref().map_or_else(|| "\"\"".to_owned(), toml_value)
        ));
    }
    out
}

/// docs/configuration.md, generated from the same definitions (`smtp-vault config reference`);
/// a test fails when the file in the repository differs.
#[must_use]
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated by `smtp-vault config reference` from the command line's own definitions (a test\n\
         fails when this file and the code disagree). Each setting is an environment variable, the\n\
         same key in the TOML file (`--config FILE` or `SMTP_VAULT_CONFIG`; `smtp-vault config\n\
         example` prints one with every setting at its default) or a flag; a flag beats the\n\
         environment, which beats the file, which beats the default. Settings marked secret are\n\
         never shown by `--help`, and are best given in the environment.\n\n\
         | setting | flag | default | meaning |\n|---|---|---|---|\n",
    );
    for s in settings() {
        let default = s.default.as_deref().map_or_else(|| "—".to_owned(), |d| format!("`{d}`"));
        let secret = if s.secret { " **Secret.**" } else { "" };
        out.push_str(&format!("| `{}` | `{}` | {default} | {}{secret} |\n", s.env, s.flag, s.help.replace('|', "\\|")));
    }
    out
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    #[test]
    fn docs_configuration_md_is_the_generated_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == reference_markdown(),
            "docs/configuration.md is out of date: run `cargo run -- config reference > docs/configuration.md`"
        );
    }

    #[test]
    fn the_example_names_every_setting_and_loads_once_uncommented() {
        let example = example_toml();
        let uncommented: String = example
            .lines()
            .filter_map(|l| {
                l.strip_prefix("# ").filter(|l| {
                    l.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
                    })
                })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = uncommented.parse().unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let keys: Vec<&String> = table.keys().collect();
        for s in settings() {
            assert!(keys.contains(&&s.env), "{} is missing from the example", s.env);
        }
        // Every key is one the loader accepts.
        let dir = std::env::temp_dir().join(format!("smtp-vault-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("example.toml");
        std::fs::write(&file, &uncommented).unwrap_or_default();
        let args = args_with_file(vec!["smtp-vault".into(), "--config".into(), file.clone().into_os_string()]);
        let _ = std::fs::remove_dir_all(&dir);
        let args = args.unwrap_or_else(|e| panic!("{e}"));
        // And the defaults it spells out are settings the console accepts.
        let cli = <super::super::Cli as clap::Parser>::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"));
        assert!(cli.config.load().is_ok(), "the example's defaults do not load");
    }
}
