//! Small helpers shared by the NATS and Postgres harnesses.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

/// Ports this process has already handed out. The kernel may hand the same ephemeral port to
/// two `bind(0)` calls once the first listener is closed; parallel tests in one process would
/// then race for it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before. Another process can still take it before the caller binds it; callers that can
/// retry on "address already in use" should.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("reading the address of a freshly bound listener")
            .port();
        drop(listener);
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("could not find a free TCP port on 127.0.0.1 after 100 attempts");
}

/// The first executable file called `name` in `$PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A log file opened for appending, plus a second handle so stdout and stderr can share it.
pub(crate) fn log_stdio(path: &Path) -> (Stdio, Stdio) {
    let file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening log file {}: {e}", path.display()));
    let second = file
        .try_clone()
        .unwrap_or_else(|e| panic!("duplicating log file handle {}: {e}", path.display()));
    (Stdio::from(file), Stdio::from(second))
}

/// The last `max` bytes of a log file, for panic messages.
pub(crate) fn log_tail(path: &Path) -> String {
    const MAX: usize = 8 * 1024;
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(MAX);
            let text = String::from_utf8_lossy(&bytes[start..]);
            if start > 0 {
                format!("[… {start} earlier bytes …]\n{text}")
            } else {
                text.into_owned()
            }
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_not_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }
}
