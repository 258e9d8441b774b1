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
