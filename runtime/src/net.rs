//! The address guard for URLs that come from job input: a workflow input must not make a
//! worker call into the network it runs in (cloud metadata at `169.254.169.254`, a database on
//! `10.0.0.5`, an admin port on `127.0.0.1`).
//!
//! An address passes when it is globally reachable ([`is_public`]), when the guard allows
//! every private address, or when it lies in one of the guard's allowed networks. The check
//! happens where the address becomes known: [`AddressGuard::check_url`] before the first
//! request, [`GuardedResolver`] on every DNS answer the client gets (so a name cannot pass the
//! first check and then point elsewhere), and the redirect policy of [`guarded_client`] on
//! every hop (literal addresses there never reach a resolver). Proxies are disabled on the
//! guarded client: a proxy would resolve the name itself.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;
use reqwest::Url;

/// Why a URL from job input cannot be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not an http(s) URL, credentials in it, no host, or too many redirects.
    #[error("{url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The host is, or resolves to, an address the guard refuses.
    #[error("{host} resolves to {ip}, a non-public address that is not allowed")]
    Blocked { host: String, ip: IpAddr },
    /// The host's name cannot be resolved.
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
}

/// Which addresses URLs from job input may reach. The default allows public addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressGuard {
    /// Every loopback, private, link-local and otherwise non-public address too.
    allow_private: bool,
    /// Networks allowed although not public, e.g. `10.20.0.0/16` for an intranet wiki.
    allowed: Vec<IpNet>,
    /// Where names are looked up.
    lookup: Lookup,
}

/// A name table that answers in place of the system's resolver.
pub type NameTable = dyn Fn(&str) -> std::io::Result<Vec<IpAddr>> + Send + Sync;

/// Where a guard looks names up: the system's resolver, or a table it was given.
#[derive(Clone, Default)]
struct Lookup(Option<Arc<NameTable>>);

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "table" } else { "system" })
    }
}

impl PartialEq for Lookup {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Lookup {}

impl AddressGuard {
    /// Public addresses only.
    pub fn public_only() -> Self {
        AddressGuard::default()
    }

    /// Every address, private ones included: for a worker that only reaches trusted targets.
    pub fn allow_all() -> Self {
        AddressGuard {
            allow_private: true,
            ..AddressGuard::default()
        }
    }

    /// Public addresses and the given networks.
    pub fn with_allowed(allowed: impl IntoIterator<Item = IpNet>) -> Self {
        AddressGuard {
            allowed: allowed.into_iter().collect(),
            ..AddressGuard::default()
        }
    }

    /// The same guard, looking names up in `table` instead of the system's resolver (a
    /// deployment's own names, or a test's); every answer is checked all the same.
    #[must_use]
    pub fn with_names(
        mut self,
        table: impl Fn(&str) -> std::io::Result<Vec<IpAddr>> + Send + Sync + 'static,
    ) -> Self {
        self.lookup = Lookup(Some(Arc::new(table)));
        self
    }

    /// Parses an allow-list entry: a network (`10.0.0.0/8`, `fd00::/8`) or a single address
    /// (`127.0.0.1`, a /32 or /128).
    pub fn parse_network(entry: &str) -> Result<IpNet, String> {
        let entry = entry.trim();
        if let Ok(net) = entry.parse::<IpNet>() {
            return Ok(net.trunc());
        }
        entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!(
                "{entry:?} is not an address or network; expected e.g. `10.0.0.0/8` or `127.0.0.1`"
            )
        })
    }

    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.allow_private || is_public(ip) {
            return true;
        }
        // An IPv4-mapped IPv6 address is the IPv4 address for this purpose.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// `host` (a name or a literal address) and the addresses it stands for, each checked.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
        // IPv6 literals come bracketed in URLs.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let failed = |e: std::io::Error| Error::Resolve {
            host: host.to_owned(),
            message: e.to_string(),
        };
        let addrs: Vec<SocketAddr> = match (literal.parse::<IpAddr>(), &self.lookup.0) {
            (Ok(ip), _) => vec![SocketAddr::new(ip, port)],
            (Err(_), Some(table)) => table(host)
                .map_err(failed)?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            (Err(_), None) => tokio::net::lookup_host((host, port))
                .await
                .map_err(failed)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Error::Resolve {
                host: host.to_owned(),
                message: "no addresses".into(),
            });
        }
        match addrs.iter().find(|a| !self.allows(a.ip())) {
            Some(bad) => Err(Error::Blocked {
                host: host.to_owned(),
                ip: bad.ip(),
            }),
            None => Ok(addrs),
        }
    }

    /// Checks a URL from job input: http(s) only, no credentials, and every address its host
    /// resolves to allowed. The guarded client resolves the name again through
    /// [`GuardedResolver`], so a name that changes its answer in between is caught there.
    pub async fn check_url(&self, raw: &str) -> Result<Url, Error> {
        let url = check_syntax(raw)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        self.resolve(&host, port).await?;
        Ok(url)
    }

    /// The same checks for a redirect target, without DNS (a redirect policy cannot wait):
    /// literal addresses are checked here, names by the [`GuardedResolver`] when connecting.
    fn check_hop(&self, url: &Url) -> Result<(), Error> {
        let url = check_syntax(url.as_str())?;
        let host = url.host_str().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>()
            && !self.allows(ip)
        {
            return Err(Error::Blocked {
                host: host.to_owned(),
                ip,
            });
        }
        Ok(())
    }
}

/// Parses `raw` and checks what can be checked without DNS.
fn check_syntax(raw: &str) -> Result<Url, Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: raw.to_owned(),
        reason,
    };
    let url = Url::parse(raw.trim())
        .map_err(|e| invalid(format!("not a URL ({e}); expected http(s)://…")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme `{}` is not allowed; expected http or https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL are not allowed".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host".into()));
    }
    Ok(url)
}

/// Whether `ip` is a globally reachable unicast address (not loopback, private, link-local,
/// shared, documentation, benchmarking, multicast, reserved or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: may reach private IPv4
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240)
}

/// Resolves names for a guarded client and refuses any answer with a disallowed address.
#[derive(Debug, Clone)]
pub struct GuardedResolver(pub AddressGuard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let addrs = guard.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A client builder for URLs from job input: names resolved through [`GuardedResolver`], no
/// proxy, and at most `max_redirects` redirects (0: none followed), each hop checked — its
/// scheme, and its address when it is a literal one. Add the user agent and timeouts, then
/// build. Check the first URL with [`AddressGuard::check_url`] before sending.
pub fn guarded_client(guard: &AddressGuard, max_redirects: usize) -> reqwest::ClientBuilder {
    let policy = if max_redirects == 0 {
        reqwest::redirect::Policy::none()
    } else {
        let hop_guard = guard.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                let e = Error::InvalidUrl {
                    url: attempt.url().to_string(),
                    reason: format!("more than {max_redirects} redirects"),
                };
                return attempt.error(e);
            }
            match hop_guard.check_hop(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        })
    };
    reqwest::Client::builder()
        .no_proxy()
        .redirect(policy)
        .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
}

/// The guard's refusal behind a failed request, if that is why it failed (a blocked redirect
/// or DNS answer, or too many redirects).
pub fn refusal(e: &reqwest::Error) -> Option<&Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<Error>() {
            return Some(found);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A loopback HTTP server: `/` redirects to `redirect` when given, `/ok` answers 200.
    /// Returns its port and how many requests it got.
    async fn server(redirect: Option<String>) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&head);
                let answer = match (&redirect, text.starts_with("GET /ok")) {
                    (Some(to), false) => {
                        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
                    }
                    _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned(),
                };
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (port, requests)
    }

    /// `app.test` is this machine (allowed by the guard), `metadata.test` the cloud metadata
    /// address, `loop.test` loopback; anything else is unknown.
    fn names(host: &str) -> std::io::Result<Vec<IpAddr>> {
        match host {
            "app.test" | "loop.test" => Ok(vec![Ipv4Addr::LOCALHOST.into()]),
            "metadata.test" => Ok(vec![Ipv4Addr::new(169, 254, 169, 254).into()]),
            _ => Err(std::io::Error::other("no such name")),
        }
    }

    #[tokio::test]
    async fn a_name_of_a_private_address_is_refused_at_check_and_at_connect_time() {
        let guard = AddressGuard::public_only().with_names(names);
        for (host, ip) in [
            ("metadata.test", "169.254.169.254"),
            ("loop.test", "127.0.0.1"),
        ] {
            let err = guard
                .check_url(&format!("http://{host}/latest"))
                .await
                .expect_err(host);
            let blocked = Error::Blocked {
                host: host.to_owned(),
                ip: ip.parse().unwrap(),
            };
            assert_eq!(err, blocked);
        }
        // A client that skipped the check still cannot connect: its resolver refuses.
        let (port, requests) = server(None).await;
        let client = guarded_client(&guard, 0).build().unwrap();
        let err = client
            .get(format!("http://loop.test:{port}/ok"))
            .send()
            .await
            .expect_err("refused");
        assert!(
            matches!(refusal(&err), Some(Error::Blocked { host, .. }) if host == "loop.test"),
            "{err:?}"
        );
        assert_eq!(
            requests.load(Ordering::SeqCst),
            0,
            "nothing reached the server"
        );
    }

    #[tokio::test]
    async fn a_name_that_changes_its_answer_after_the_check_is_refused_when_connecting() {
        let (port, requests) = server(None).await;
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        // Public for the check, loopback for the connection: DNS rebinding.
        let guard = AddressGuard::public_only().with_names(move |_| {
            Ok(vec![if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Ipv4Addr::new(93, 184, 216, 34).into()
            } else {
                Ipv4Addr::LOCALHOST.into()
            }])
        });
        let url = format!("http://rebind.test:{port}/ok");
        guard.check_url(&url).await.expect("public at first");
        let client = guarded_client(&guard, 0).build().unwrap();
        let err = client.get(&url).send().await.expect_err("refused");
        let Some(Error::Blocked { ip, .. }) = refusal(&err) else {
            panic!("not the guard's refusal: {err:?}");
        };
        assert_eq!(*ip, IpAddr::from(Ipv4Addr::LOCALHOST));
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "asked at check and at connect"
        );
        assert_eq!(
            requests.load(Ordering::SeqCst),
            0,
            "nothing reached the server"
        );
    }

    #[tokio::test]
    async fn a_redirect_to_a_name_of_a_private_address_is_refused() {
        let loopback = AddressGuard::parse_network("127.0.0.1").unwrap();
        let guard = AddressGuard::with_allowed([loopback]).with_names(names);
        // A redirect to a name the guard allows is followed: the machinery works.
        let (fine, fine_requests) = server(Some("/ok".to_owned())).await;
        let client = guarded_client(&guard, 3).build().unwrap();
        let ok = client
            .get(format!("http://app.test:{fine}/"))
            .send()
            .await
            .expect("followed");
        assert_eq!(ok.status(), 200);
        assert_eq!(fine_requests.load(Ordering::SeqCst), 2);
        // One to a name of the metadata address is refused when the client resolves it.
        let (port, requests) = server(Some("http://metadata.test/latest/meta-data/".into())).await;
        let err = client
            .get(format!("http://app.test:{port}/"))
            .send()
            .await
            .expect_err("refused");
        assert_eq!(
            refusal(&err),
            Some(&Error::Blocked {
                host: "metadata.test".into(),
                ip: Ipv4Addr::new(169, 254, 169, 254).into()
            }),
            "{err:?}"
        );
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "only the first hop was sent"
        );
    }

    #[test]
    fn only_public_addresses_pass_by_default() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
            assert!(
                !AddressGuard::public_only().allows(private.parse().unwrap()),
                "{private}"
            );
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_their_addresses() {
        let guard = AddressGuard::with_allowed([
            AddressGuard::parse_network("127.0.0.1").unwrap(),
            AddressGuard::parse_network("10.20.0.0/16").unwrap(),
        ]);
        assert!(guard.allows("127.0.0.1".parse().unwrap()));
        assert!(guard.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(guard.allows("10.20.255.1".parse().unwrap()));
        assert!(!guard.allows("127.0.0.2".parse().unwrap()));
        assert!(!guard.allows("10.21.0.1".parse().unwrap()));
        assert!(!guard.allows("169.254.169.254".parse().unwrap()));
        assert!(guard.allows("1.1.1.1".parse().unwrap()));
        assert!(AddressGuard::parse_network("10.0.0.0/33").is_err());
        assert!(AddressGuard::parse_network("intranet").is_err());
        assert!(AddressGuard::allow_all().allows("169.254.169.254".parse().unwrap()));
    }

    #[tokio::test]
    async fn urls_are_checked_for_scheme_credentials_and_address() {
        let strict = AddressGuard::public_only();
        for (url, needle) in [
            ("file:///etc/passwd", "scheme `file`"),
            ("ftp://example.com/x", "scheme `ftp`"),
            ("http://user:pw@example.com/", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let err = strict.check_url(url).await.expect_err(url);
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err:?}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
        for (url, host, ip) in [
            ("http://127.0.0.1:8080/hook", "127.0.0.1", "127.0.0.1"),
            ("http://[::1]/hook", "[::1]", "::1"),
            (
                "http://169.254.169.254/latest",
                "169.254.169.254",
                "169.254.169.254",
            ),
        ] {
            let err = strict.check_url(url).await.expect_err(url);
            let expected = Error::Blocked {
                host: host.to_owned(),
                ip: ip.parse().unwrap(),
            };
            assert_eq!(err, expected, "{url}");
            assert!(err.to_string().contains("non-public address"), "{err}");
        }
        let err = strict.check_url("http://localhost:9/").await.unwrap_err();
        assert!(
            matches!(&err, Error::Blocked { host, .. } if host == "localhost"),
            "{err:?}"
        );
        assert!(
            AddressGuard::allow_all()
                .check_url("http://127.0.0.1:8080/hook")
                .await
                .is_ok()
        );
    }
}
