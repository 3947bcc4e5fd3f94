//! `switchboard user add|passwd|list|remove` and `switchboard invite create`: the built-in
//! apps' accounts, straight in `DATA_DIR/apps.db` (SQLite's WAL lets a running server and
//! these commands write at once), or in the group's Redis when the configuration names the
//! Redis engine.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use std::sync::Arc;
use switchboard_apps::admin;

use switchboard_apps::store::Store;

use crate::args::{ConfigSource, UserCommand};
use crate::serve::{connect_addr, load_apps, load_config};

fn open(source: &ConfigSource) -> anyhow::Result<Arc<dyn Store>> {
    let config = load_config(source)?;
    open_config(&config)
}

/// The apps' store of `config` (Redis is reached on a runtime of one thread, for this).
fn open_config(config: &switchboard_server::Config) -> anyhow::Result<Arc<dyn Store>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(switchboard_apps::open_store(config))?)
}

pub(crate) fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            source,
            name,
            admin,
        } => {
            let store = open(&source)?;
            let password = read_password(&name)?;
            let account = admin::add_user(&*store, &name, &password, admin)?;
            crate::say!(
                "switchboard: created {}{}",
                account.name,
                if account.admin { " (admin)" } else { "" }
            );
        }
        UserCommand::Passwd { source, name } => {
            let store = open(&source)?;
            let password = read_password(&name)?;
            admin::set_password(&*store, &name, &password)?;
            crate::say!("switchboard: {name}'s password is set; their sessions ended");
        }
        UserCommand::List { source } => {
            let store = open(&source)?;
            let accounts = store.accounts()?;
            let mut out = std::io::stdout().lock();
            for account in accounts {
                let role = if account.admin { "admin" } else { "member" };
                writeln!(out, "{}\t{role}\t{}", account.name, date(account.created))?;
            }
        }
        UserCommand::Remove { source, name } => {
            let store = open(&source)?;
            admin::remove_user(&*store, &name)?;
            crate::say!(
                "switchboard: removed {name}; tokens already given out expire within minutes"
            );
        }
    }
    Ok(())
}

pub(crate) fn invite(source: &ConfigSource, admin: bool) -> anyhow::Result<()> {
    let config = load_config(source)?;
    let options = load_apps(source)?;
    let store = open_config(&config)?;
    let code = admin::create_invite(&*store, admin, options.limits.invite_ttl)?;
    let link = format!(
        "http://{}{}",
        connect_addr(config.listen),
        switchboard_apps::invite_path(&code)
    );
    writeln!(std::io::stdout(), "{link}")?;
    Ok(())
}

/// The password: one line of standard input, or asked for twice at a terminal without
/// showing it.
fn read_password(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            bail!("no password on standard input (one line)");
        }
        return Ok(password);
    }
    let first = prompt(&format!("password for {name}: "))?;
    let second = prompt("again: ")?;
    if first != second {
        bail!("the two passwords differ");
    }
    Ok(first)
}

/// One line from the terminal with echo off (restored after, even on error).
fn prompt(text: &str) -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    crate::say!("{text}");
    let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    crate::say!("");
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// A time in milliseconds since the epoch as `YYYY-MM-DD` (UTC).
fn date(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(1_700_000_000_000), "2023-11-14");
        assert_eq!(super::date(951_782_400_000), "2000-02-29");
    }
}
