//! `tfctl config get-contexts|current-context|use-context|set-context`: the contexts of the
//! config file (see [`crate::config`]).

use std::path::Path;

use super::CliError;
use crate::{
    config::{self, ConfigError, Context},
    term::{self, Table, plain},
};

/// `get-contexts`: a table of contexts, `*` marking the current one.
pub fn get_contexts(path: &Path) -> Result<(), CliError> {
    let file = config::read_file(path, false)?;
    let current = file.current();
    let mut table = Table::new(&["CURRENT", "NAME", "SERVER", "AUTH", "CLUSTER"]);
    for c in file.all() {
        let mark = if current.as_deref() == Some(c.name.as_str()) {
            "*"
        } else {
            ""
        };
        table.row(vec![
            plain(mark),
            plain(&c.name),
            plain(c.server.clone().unwrap_or_default()),
            plain(c.auth()),
            plain(c.cluster.clone().unwrap_or_default()),
        ]);
    }
    print!("{}", table.render(term::colour_stdout()));
    Ok(())
}

/// `current-context`.
pub fn current_context(path: &Path) -> Result<(), CliError> {
    let file = config::read_file(path, false)?;
    match file.current() {
        Some(c) => {
            println!("{c}");
            Ok(())
        }
        None => Err(ConfigError::Empty {
            path: path.to_path_buf(),
        }
        .into()),
    }
}

/// `use-context NAME`: makes NAME the current context.
pub fn use_context(path: &Path, name: &str) -> Result<(), CliError> {
    let mut file = config::read_file(path, false)?;
    if !file.all().iter().any(|c| c.name == name) {
        return Err(ConfigError::NoContext {
            path: path.to_path_buf(),
            name: name.into(),
        }
        .into());
    }
    file.current_context = Some(name.into());
    config::write_file(path, &file)?;
    println!("Switched to context {name:?}.");
    Ok(())
}

/// `set-context NAME [--server ..]`: creates NAME or sets the given fields on it.
pub fn set_context(path: &Path, name: &str, update: Context) -> Result<(), CliError> {
    if name.is_empty() {
        return Err(CliError::Usage("a context needs a name".into()));
    }
    if update.cert.is_some() != update.key.is_some() {
        return Err(CliError::Usage(
            "--cert and --key must be given together (the client certificate and its key)".into(),
        ));
    }
    let mut file = config::read_file(path, true)?;
    let existed = file.all().iter().any(|c| c.name == name);
    file.set_context(name, update);
    config::write_file(path, &file)?;
    println!(
        "Context {name:?} {} in {}.",
        if existed { "modified" } else { "created" },
        path.display()
    );
    Ok(())
}
