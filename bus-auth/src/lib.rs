//! Bus security: who may connect to the NATS server and what each may do there.
//!
//! Switchyard uses NATS's decentralized authentication (see ADR 0012): an operator key signs
//! two accounts — `SWITCHYARD`, where every stream lives and every user connects, and the
//! server's system account — and the `SWITCHYARD` account key signs one user per role with
//! that role's permissions. The server trusts the operator (its config holds the operator's
//! and the accounts' JWTs, from [`AuthDir::server_config`]); users are never listed in it,
//! so issuing credentials for a new tenant or worker kind needs no server change.
//!
//! [`AuthDir`] keeps the three seeds in a directory the operator controls and writes
//! `auth.conf` (the server side) and `creds/<role>.creds` (the client side) from them.

mod jwt;
mod role;

use std::fs;
use std::path::{Path, PathBuf};

use nkeys::KeyPair;

pub use jwt::claims;
pub use role::{Permissions, Role, service_roles};

/// The account every Switchyard user connects to.
pub const ACCOUNT: &str = "SWITCHYARD";
/// The server's system account.
pub const SYSTEM_ACCOUNT: &str = "SYS";
/// The server-side file [`AuthDir::init`] writes; the shipped server configs include it.
pub const SERVER_CONFIG: &str = "auth.conf";

/// What can go wrong with keys, credentials and their files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("key: {0}")]
    Key(String),
    #[error("role: {0}")]
    Role(String),
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Writes `contents` readable by the owner only (the file holds a secret).
fn write_secret(path: &Path, contents: &str) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| file_error(parent, e))?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(|e| file_error(&tmp, e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| file_error(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

/// The keys of one deployment's bus, kept as seed files in a directory.
#[derive(Debug)]
pub struct AuthDir {
    dir: PathBuf,
    operator: KeyPair,
    account: KeyPair,
    system: KeyPair,
}

impl AuthDir {
    /// Opens `dir`, creating any of the three seeds (`operator.nk`, `account.nk`,
    /// `system.nk`) it lacks; existing keys are kept, so running it again changes no key.
    pub fn open(dir: &Path) -> Result<AuthDir, Error> {
        fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        Ok(AuthDir {
            dir: dir.to_owned(),
            operator: Self::seed(dir, "operator.nk", KeyPair::new_operator)?,
            account: Self::seed(dir, "account.nk", KeyPair::new_account)?,
            system: Self::seed(dir, "system.nk", KeyPair::new_account)?,
        })
    }

    fn seed(dir: &Path, name: &str, generate: fn() -> KeyPair) -> Result<KeyPair, Error> {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(seed) => KeyPair::from_seed(seed.trim()).map_err(|e| file_error(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = generate();
                let seed = key.seed().map_err(|e| Error::Key(e.to_string()))?;
                write_secret(&path, &format!("{seed}\n"))?;
                Ok(key)
            }
            Err(e) => Err(file_error(&path, e)),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where [`AuthDir::init`] writes `role`'s credentials.
    pub fn creds_path(&self, role: &Role) -> PathBuf {
        self.dir
            .join("creds")
            .join(format!("{}.creds", role.name()))
    }

    /// The server side: the operator's JWT, the system account and both accounts' JWTs for
    /// the server's memory resolver. A config that includes it admits only users signed by
    /// the `SWITCHYARD` account (or the system account).
    pub fn server_config(&self) -> Result<String, Error> {
        /// Bytes a client's CONNECT line may take, its JWT included.
        const MAX_CONTROL_LINE: usize = 32 << 10;
        let system = self.system.public_key();
        let operator = jwt::operator(&self.operator, &system)?;
        let account = jwt::account(&self.operator, &self.account, ACCOUNT, true)?;
        let system_jwt = jwt::account(&self.operator, &self.system, SYSTEM_ACCOUNT, false)?;
        Ok(format!(
            "# Written by `switchyard bus auth init`: the bus's operator and accounts. Users are\n\
             # not listed here: the server admits any user whose JWT the {ACCOUNT} account\n\
             # signed, with the permissions in that JWT.\n\
             operator: {operator}\n\
             system_account: {system}\n\
             # A user's JWT travels in its CONNECT line and carries its permissions: the\n\
             # engine's are longer than the default 4 KiB allows.\n\
             max_control_line: {MAX_CONTROL_LINE}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  # {ACCOUNT}\n  {account_key}: {account}\n  # \
             {SYSTEM_ACCOUNT}\n  {system}: {system_jwt}\n}}\n",
            account_key = self.account.public_key(),
        ))
    }

    /// A `.creds` file for `role`, valid until `expires` (seconds since the epoch) if given.
    pub fn credentials(&self, role: &Role, expires: Option<u64>) -> Result<String, Error> {
        role.check()?;
        let user = KeyPair::new_user();
        let jwt = jwt::user(
            &self.account,
            &user.public_key(),
            &role.name(),
            &role.permissions(),
            expires,
        )?;
        let seed = user.seed().map_err(|e| Error::Key(e.to_string()))?;
        Ok(jwt::creds(&jwt, &seed))
    }

    /// Writes `auth.conf` and the credentials of every role in `roles` under `creds/`;
    /// returns the files written.
    pub fn init(&self, roles: &[Role]) -> Result<Vec<PathBuf>, Error> {
        let server = self.dir.join(SERVER_CONFIG);
        write_secret(&server, &self.server_config()?)?;
        let mut written = vec![server];
        for role in roles {
            let path = self.creds_path(role);
            write_secret(&path, &self.credentials(role, None)?)?;
            written.push(path);
        }
        Ok(written)
    }

    /// Writes `contents` (credentials) to `path`, readable by the owner only.
    pub fn write_to(&self, path: &Path, contents: &str) -> Result<(), Error> {
        write_secret(path, contents)
    }

    /// Writes `role`'s credentials to its place under `creds/` and returns the path.
    pub fn write_credentials(&self, role: &Role) -> Result<PathBuf, Error> {
        let path = self.creds_path(role);
        write_secret(&path, &self.credentials(role, None)?)?;
        Ok(path)
    }
}
