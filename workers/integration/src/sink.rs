//! The local Markdown sink: documents written under one configured directory, the default
//! destination that works offline. Each tenant writes under a directory of its own,
//! `<root>/<tenant>/`, and sees paths relative to it: one tenant's document never replaces
//! another's.
//!
//! Nothing is written outside the root: `dir` must be a relative path of plain components,
//! `filename` may not be or contain a `..` component or start at the root, and the directory
//! that receives the file is resolved (symbolic links included) and checked to lie inside the
//! root right before the write. The write is atomic: a temporary file in the same directory,
//! flushed to disk, then renamed over the target, so a reader never sees half a document.
//! Writing the same document again (a redelivered job) replaces the file with the same bytes.

use std::{
    io::Write as _,
    path::{Component, Path, PathBuf},
};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Error, status::Check};

/// The longest file name written, in bytes, extension included (most file systems allow 255).
const MAX_FILENAME: usize = 200;

/// `integration.markdown.write` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteInput {
    pub dir: Option<String>,
    pub filename: String,
    pub title: String,
    pub markdown: String,
}

/// The sink rooted at one directory.
#[derive(Debug, Clone)]
pub struct Sink {
    root: PathBuf,
}

impl Sink {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sink { root: root.into() }
    }

    /// Whether documents can be written: the root is created when missing, and a temporary
    /// file is created in it and removed again. The root's path is left out of the detail,
    /// which only says what failed.
    pub(crate) async fn check(&self) -> Check {
        const NAME: &str = "markdown";
        let root = self.root.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root)?;
            tempfile::NamedTempFile::new_in(&root).map(drop)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map(|()| "the output directory is writable".to_owned())
        .map_err(|source| Error::Write {
            path: "the output directory".into(),
            source,
        });
        Check::checked(NAME, outcome)
    }

    /// Writes `tenant`'s document; returns `{path, bytes}` with `path` relative to the
    /// tenant's directory.
    pub async fn write(&self, tenant: &str, input: WriteInput) -> Result<Value, Error> {
        switchyard_proto::subject::check_token(tenant).map_err(|e| {
            Error::invalid("tenant", format!("{tenant:?} cannot name a directory: {e}"))
        })?;
        let dir = relative_dir(input.dir.as_deref().unwrap_or(""))?;
        let name = file_name(&input.filename)?;
        let document = document(&input.title, &input.markdown);
        let root = self.root.join(tenant);
        let rel = dir.join(&name);
        let shown = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let shown_for_error = shown.clone();
        let bytes =
            tokio::task::spawn_blocking(move || write_atomically(&root, &dir, &name, &document))
                .await
                .map_err(|e| Error::Write {
                    path: shown_for_error.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(|e| match e {
                    WriteError::Refused { field, message } => Error::invalid(field, message),
                    WriteError::Io(source) => Error::Write {
                        path: shown_for_error,
                        source,
                    },
                })?;
        Ok(json!({ "path": shown, "bytes": bytes }))
    }
}

/// The document: the title as the first heading, then the body.
fn document(title: &str, markdown: &str) -> String {
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    let body = markdown.trim();
    if body.is_empty() {
        format!("# {title}\n")
    } else {
        format!("# {title}\n\n{body}\n")
    }
}

/// `dir` as a relative path of plain components.
fn relative_dir(dir: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    if dir.starts_with('/') || dir.starts_with('\\') || has_drive(dir) {
        return Err(Error::invalid(
            "dir",
            format!("{dir:?} is absolute; expected a path relative to the sink directory"),
        ));
    }
    for part in dir.split(['/', '\\']) {
        match part {
            "" | "." => continue,
            ".." => {
                return Err(Error::invalid(
                    "dir",
                    format!("{dir:?} leaves the sink directory (`..` is not allowed)"),
                ));
            }
            p if p.chars().any(|c| c.is_control() || c == ':') => {
                return Err(Error::invalid(
                    "dir",
                    format!("{dir:?} has a character not allowed in directory names"),
                ));
            }
            p => out.push(p),
        }
    }
    // Belt and braces: nothing but plain components may remain.
    if out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(
            "dir",
            format!("{dir:?} is not a plain relative path"),
        ));
    }
    Ok(out)
}

fn has_drive(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// A safe file name from `filename`: traversal refused, unsafe characters replaced, `.md`
/// added when there is no extension.
fn file_name(filename: &str) -> Result<String, Error> {
    let trimmed = filename.trim();
    if trimmed.starts_with('/') || trimmed.starts_with('\\') || has_drive(trimmed) {
        return Err(Error::invalid(
            "filename",
            format!("{filename:?} is an absolute path; expected a file name"),
        ));
    }
    if trimmed.split(['/', '\\']).any(|part| part.trim() == "..") {
        return Err(Error::invalid(
            "filename",
            format!("{filename:?} leaves the sink directory (`..` is not allowed)"),
        ));
    }
    let mut name: String = trimmed
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '-'
            } else {
                c
            }
        })
        .collect();
    // A leading dot would hide the file.
    name = name.trim_start_matches(['.', ' ']).trim_end().to_owned();
    if name.is_empty() {
        return Err(Error::invalid(
            "filename",
            format!("{filename:?} has nothing usable as a file name"),
        ));
    }
    let has_extension = Path::new(&name)
        .extension()
        .is_some_and(|e| !e.is_empty() && e.len() <= 8 && !e.to_string_lossy().contains(' '));
    if !has_extension {
        name.push_str(".md");
    }
    if name.len() > MAX_FILENAME {
        let (stem, ext) = match name.rfind('.') {
            Some(i) => (&name[..i], &name[i..]),
            None => (name.as_str(), ""),
        };
        let mut cut = MAX_FILENAME - ext.len();
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}{ext}", &stem[..cut]);
    }
    Ok(name)
}

/// Why [`write_atomically`] did not write.
#[derive(Debug)]
enum WriteError {
    /// The input names a place the sink does not write to.
    Refused {
        field: &'static str,
        message: String,
    },
    Io(std::io::Error),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Creates `root/dir`, checks that it resolves inside the root, and writes `name` in it
/// atomically. Returns the number of bytes written.
fn write_atomically(
    root: &Path,
    dir: &Path,
    name: &str,
    document: &str,
) -> Result<u64, WriteError> {
    std::fs::create_dir_all(root)?;
    let root = root.canonicalize()?;
    let target_dir = root.join(dir);
    std::fs::create_dir_all(&target_dir)?;
    let resolved = target_dir.canonicalize()?;
    if !resolved.starts_with(&root) {
        return Err(WriteError::Refused {
            field: "dir",
            message: format!(
                "{:?} resolves outside the sink directory (through a symbolic link)",
                dir.display().to_string()
            ),
        });
    }
    let target = resolved.join(name);
    if let Ok(meta) = std::fs::symlink_metadata(&target)
        && meta.is_dir()
    {
        return Err(WriteError::Refused {
            field: "filename",
            message: format!("{name:?} is a directory in the sink"),
        });
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".switchyard-")
        .suffix(".tmp")
        .tempfile_in(&resolved)?;
    tmp.write_all(document.as_bytes())?;
    tmp.as_file().sync_all()?;
    // rename(2) replaces a symbolic link at the target rather than following it.
    tmp.persist(&target).map_err(|e| WriteError::Io(e.error))?;
    if let Ok(d) = std::fs::File::open(&resolved) {
        let _ = d.sync_all();
    }
    Ok(document.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dir: Option<&str>, filename: &str) -> WriteInput {
        WriteInput {
            dir: dir.map(str::to_owned),
            filename: filename.into(),
            title: "Rust  async".into(),
            markdown: "Body *text*.\n".into(),
        }
    }

    #[tokio::test]
    async fn writes_under_the_root_with_the_title_as_heading() {
        let root = tempfile::tempdir().unwrap();
        let sink = Sink::new(root.path().join("out"));
        let out = sink
            .write("t1", input(Some("research/2025"), "Rust vs. Go / async?"))
            .await
            .unwrap();
        assert_eq!(out["path"], "research/2025/Rust vs. Go - async-.md");
        let text = std::fs::read_to_string(
            root.path()
                .join("out/t1/research/2025/Rust vs. Go - async-.md"),
        )
        .unwrap();
        assert_eq!(text, "# Rust async\n\nBody *text*.\n");
        assert_eq!(out["bytes"], text.len());
        // Writing again replaces the file and leaves no temporary files behind.
        sink.write("t1", input(Some("research/2025"), "Rust vs. Go / async?"))
            .await
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(root.path().join("out/t1/research/2025"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let out = sink.write("t1", input(None, "notes.txt")).await.unwrap();
        assert_eq!(out["path"], "notes.txt");
    }

    #[tokio::test]
    async fn traversal_in_filename_or_dir_is_rejected() {
        let root = tempfile::tempdir().unwrap();
        let sink = Sink::new(root.path().join("out"));
        for (dir, filename, field) in [
            (None, "../escape", "filename"),
            (None, "a/../../escape", "filename"),
            (None, "..", "filename"),
            (None, "/etc/passwd", "filename"),
            (None, "..\\escape", "filename"),
            (Some(".."), "x", "dir"),
            (Some("a/../../b"), "x", "dir"),
            (Some("/tmp"), "x", "dir"),
            (Some("C:\\temp"), "x", "dir"),
        ] {
            let err = sink
                .write("t1", input(dir, filename))
                .await
                .expect_err(filename);
            assert!(
                matches!(&err, Error::InvalidInput { field: f, .. } if f == field),
                "{dir:?} {filename:?}: {err:?}"
            );
        }
        for tenant in ["..", "a/b", ""] {
            let err = sink
                .write(tenant, input(None, "x"))
                .await
                .expect_err(tenant);
            assert!(
                matches!(&err, Error::InvalidInput { field, .. } if field == "tenant"),
                "{tenant:?}: {err:?}"
            );
        }
        assert!(!root.path().join("escape").exists());
        assert!(!root.path().join("escape.md").exists());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_symbolic_link_out_of_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(out.join("t1")).unwrap();
        std::os::unix::fs::symlink(outside.path(), out.join("t1/link")).unwrap();
        let sink = Sink::new(&out);
        let err = sink
            .write("t1", input(Some("link"), "x"))
            .await
            .expect_err("escaped");
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "dir"),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A symbolic link in place of the file is replaced, not followed.
        let victim = outside.path().join("victim.md");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, out.join("t1/y.md")).unwrap();
        sink.write("t1", input(None, "y")).await.unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(
            std::fs::read_to_string(out.join("t1/y.md"))
                .unwrap()
                .starts_with("# Rust async")
        );
    }
}
