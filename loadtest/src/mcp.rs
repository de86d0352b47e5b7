//! `mcp-overhead`: what running a workflow as an MCP tool costs over running it through the
//! HTTP API. One gateway, orchestrator and `test` worker; one client connection alternates
//! `POST /api/v1/workflows/execute` (wait for the output) and an MCP `tools/call` of the same
//! 1-step workflow on an initialized session (revision 2025-11-25), so both see the same
//! machine and bus; latency percentiles of each and their differences.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_gateway::Role;
use switchyard_runtime::config::{AuthSettings, Secret};
use tokio::net::TcpStream;

use crate::{
    report::percentile,
    worker_loop::provisioned_server,
    workflows::{Processes, spawn},
};

const TENANT: &str = "bench";
const SECRET: &str = "loadtest-secret-loadtest-secret-0123456789";
const WORKFLOW: &str = r#"name: bench_mcp
version: 1
description: One echo step
input:
  topic: { type: string, required: true }
steps:
  - { id: a, operation: test.echo, input: { topic: "{{ input.topic }}" } }
output:
  topic: "{{ steps.a.output.topic }}"
"#;
/// Calls of each kind before the measured ones.
const WARM_UP: usize = 50;

/// One run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// Measured calls of each kind.
    pub calls: usize,
    pub execute_p50_ms: f64,
    pub execute_p99_ms: f64,
    pub mcp_p50_ms: f64,
    pub mcp_p99_ms: f64,
    /// MCP minus execute, at the same percentile.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    /// The revision the session negotiated.
    pub protocol_version: String,
}

/// The processes the scenario runs.
#[derive(Debug, Clone, Copy)]
pub struct Binaries<'a> {
    pub gateway: &'a Path,
    pub orchestrator: &'a Path,
    pub worker: &'a Path,
}

/// Runs `calls` of each kind after a warm-up.
pub async fn run(binaries: Binaries<'_>, calls: usize) -> anyhow::Result<Measurement> {
    let (server, _client, js) = provisioned_server(false).await?;
    crate::gateway::register(&js, TENANT, WORKFLOW).await?;
    let addr = crate::gateway::free_address()?;
    let addr_text = addr.to_string();
    let _processes = Processes(vec![
        spawn(
            binaries.gateway,
            &server,
            &[
                ("SWITCHYARD_HTTP_ADDR", &addr_text),
                ("SWITCHYARD_GATEWAY__AUTH__SECRET", SECRET),
                ("SWITCHYARD_GATEWAY__RATE_LIMITS__START", "off"),
                ("SWITCHYARD_GATEWAY__RATE_LIMITS__READ", "off"),
            ],
        )?,
        spawn(binaries.orchestrator, &server, &[])?,
        spawn(binaries.worker, &server, &[])?,
    ]);
    let token = switchyard_gateway::auth::issue_token(
        &AuthSettings {
            secret: Some(Secret::new(SECRET)),
            ..AuthSettings::default()
        },
        TENANT,
        &[Role::Operator],
        "loadtest",
        Duration::from_secs(3600),
    )?;
    let mut client = Client::connect(addr, format!("Bearer {token}")).await?;
    client.ready().await?;
    let protocol_version = client.initialize().await?;

    let mut execute = Vec::with_capacity(calls);
    let mut mcp = Vec::with_capacity(calls);
    for i in 0..WARM_UP + calls {
        let took = client.execute(i).await?;
        if i >= WARM_UP {
            execute.push(took);
        }
        let took = client.call_tool(i).await?;
        if i >= WARM_UP {
            mcp.push(took);
        }
    }
    execute.sort_by(f64::total_cmp);
    mcp.sort_by(f64::total_cmp);
    let (e50, e99) = (percentile(&execute, 0.50), percentile(&execute, 0.99));
    let (m50, m99) = (percentile(&mcp, 0.50), percentile(&mcp, 0.99));
    Ok(Measurement {
        calls,
        execute_p50_ms: e50,
        execute_p99_ms: e99,
        mcp_p50_ms: m50,
        mcp_p99_ms: m99,
        overhead_p50_ms: m50 - e50,
        overhead_p99_ms: m99 - e99,
        protocol_version,
    })
}

/// One kept-alive HTTP/1.1 connection to the gateway (opened again if the gateway closed it
/// while starting).
struct Client {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    host: String,
    authorization: String,
    session: String,
    next_id: u64,
}

impl Client {
    async fn connect(addr: SocketAddr, authorization: String) -> anyhow::Result<Client> {
        Ok(Client {
            sender: open(addr).await?,
            addr,
            host: addr.to_string(),
            authorization,
            session: String::new(),
            next_id: 1,
        })
    }

    /// Waits until the gateway is ready and the engine runs the workflow.
    async fn ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.get("/ready").await.is_ok_and(|s| s == 200);
            if ready && self.execute(0).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the gateway or the engine never became ready");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The connection, opened again when the gateway closed it.
    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.ready().await.is_err() {
            self.sender = open(self.addr).await?;
        }
        Ok(&mut self.sender)
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<u16> {
        let request = Request::get(path)
            .header("host", &self.host)
            .body(Full::new(Bytes::new()))?;
        let response = self.sender().await?.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }

    async fn post(
        &mut self,
        path: &str,
        body: &Value,
        mcp: bool,
    ) -> anyhow::Result<(u16, Option<String>, String)> {
        let mut request = Request::post(path)
            .header("host", &self.host)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json");
        if mcp {
            request = request.header("accept", "application/json, text/event-stream");
            if !self.session.is_empty() {
                request = request
                    .header("mcp-session-id", &self.session)
                    .header("mcp-protocol-version", "2025-11-25");
            }
        }
        let request = request.body(Full::new(Bytes::from(body.to_string())))?;
        let response = self.sender().await?.send_request(request).await?;
        let status = response.status().as_u16();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((
            status,
            session,
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }

    /// Milliseconds one execute took, checked to have completed.
    async fn execute(&mut self, i: usize) -> anyhow::Result<f64> {
        let body = json!({"workflow_type": "bench_mcp", "topic": format!("t{i}"), "wait": 30});
        let started = Instant::now();
        let (status, _, text) = self.post("/api/v1/workflows/execute", &body, false).await?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        if status != 200 || !text.contains(r#""status":"completed""#) {
            bail!("execute answered {status}: {text}");
        }
        Ok(took)
    }

    /// Opens the MCP session; the revision it speaks.
    async fn initialize(&mut self) -> anyhow::Result<String> {
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "switchyard-loadtest", "version": "1"}
            }
        });
        let (status, session, text) = self.post("/mcp", &body, true).await?;
        let reply = last_message(&text).with_context(|| format!("initialize: {status} {text}"))?;
        self.session = session.context("no Mcp-Session-Id")?;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.post("/mcp", &note, true).await?;
        Ok(reply["result"]["protocolVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Milliseconds one `tools/call` took, checked to have answered the workflow's output.
    async fn call_tool(&mut self, i: usize) -> anyhow::Result<f64> {
        self.next_id += 1;
        let body = json!({
            "jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
            "params": {"name": "bench_mcp", "arguments": {"topic": format!("t{i}")}}
        });
        let started = Instant::now();
        let (status, _, text) = self.post("/mcp", &body, true).await?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let reply = last_message(&text).with_context(|| format!("tools/call: {status} {text}"))?;
        if reply["result"]["structuredContent"]["topic"] != format!("t{i}") {
            bail!("tools/call answered {status}: {text}");
        }
        Ok(took)
    }
}

/// A connection to `addr`, retried while nothing listens there yet (for up to 30 s).
async fn open(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("connecting to the gateway"),
        }
    };
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The last JSON-RPC message of a body, plain JSON or an SSE stream.
fn last_message(body: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(body) {
        return Some(v);
    }
    body.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
}

/// One line for people.
pub fn describe(m: &Measurement) -> String {
    format!(
        "mcp-overhead: {} calls each on one connection; execute p50 {:.2} ms p99 {:.2} ms; MCP tools/call ({}) p50 {:.2} ms p99 {:.2} ms; overhead p50 {:+.2} ms p99 {:+.2} ms",
        m.calls,
        m.execute_p50_ms,
        m.execute_p99_ms,
        m.protocol_version,
        m.mcp_p50_ms,
        m.mcp_p99_ms,
        m.overhead_p50_ms,
        m.overhead_p99_ms
    )
}
