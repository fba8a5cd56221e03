//! The load generators: `wrk` for HTTP (new connections, keep-alive, paced
//! latency) and `iperf3` for bulk TCP, run from the client namespace, and
//! parsers for what they print.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::lab::{run_with_timeout, write_file};

/// Why a load generator's output could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// A line or field the output must contain is missing.
    #[error("no {0} in the output")]
    Missing(&'static str),
    /// A field is there but does not parse.
    #[error("cannot read {field} from {text:?}")]
    Bad {
        /// Which field.
        field: &'static str,
        /// The text found.
        text: String,
    },
    /// iperf3 reported an error itself.
    #[error("iperf3 reported: {0}")]
    Iperf(String),
}

/// Socket errors `wrk` counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketErrors {
    /// Failed connects.
    pub connect: u64,
    /// Failed reads.
    pub read: u64,
    /// Failed writes.
    pub write: u64,
    /// Requests that timed out.
    pub timeout: u64,
}

impl SocketErrors {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// What one `wrk --latency` run reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WrkReport {
    /// Completed requests.
    pub requests: u64,
    /// Run time in seconds.
    pub seconds: f64,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Median latency (µs).
    pub p50_us: f64,
    /// 90th percentile latency (µs).
    pub p90_us: f64,
    /// 99th percentile latency (µs).
    pub p99_us: f64,
    /// Socket errors.
    pub errors: SocketErrors,
    /// Responses with a status other than 2xx/3xx.
    pub non_2xx: u64,
}

/// Parses a `wrk` latency such as `812.00us`, `4.12ms`, `1.50s` or `2.00m`
/// into microseconds.
pub fn parse_wrk_time(text: &str) -> Result<f64, ParseError> {
    let bad = || ParseError::Bad {
        field: "latency",
        text: text.to_string(),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return Err(bad()),
    };
    Ok(v * scale)
}

/// Parses the text `wrk --latency` prints.
pub fn parse_wrk(out: &str) -> Result<WrkReport, ParseError> {
    let mut r = WrkReport::default();
    let (mut p50, mut p90, mut p99, mut rps, mut total) = (None, None, None, None, None);
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        match first {
            "50%" | "90%" | "99%" => {
                let v = parse_wrk_time(words.next().unwrap_or(""))?;
                match first {
                    "50%" => p50 = Some(v),
                    "90%" => p90 = Some(v),
                    _ => p99 = Some(v),
                }
            }
            "Requests/sec:" => {
                let t = words.next().unwrap_or("");
                rps = Some(t.parse::<f64>().map_err(|_| ParseError::Bad {
                    field: "Requests/sec",
                    text: t.into(),
                })?);
            }
            "Socket" => r.errors = parse_socket_errors(line)?,
            "Non-2xx" => {
                let t = line.rsplit(' ').next().unwrap_or("");
                r.non_2xx = t.parse().map_err(|_| ParseError::Bad {
                    field: "Non-2xx responses",
                    text: t.into(),
                })?;
            }
            _ if line.contains(" requests in ") => {
                // "124000 requests in 8.00s, 18.00MB read"
                let bad = || ParseError::Bad {
                    field: "request count",
                    text: line.into(),
                };
                let n: u64 = first.parse().map_err(|_| bad())?;
                let secs = line
                    .split(" requests in ")
                    .nth(1)
                    .and_then(|rest| rest.split(',').next())
                    .ok_or_else(bad)?;
                total = Some((n, parse_wrk_time(secs).map_err(|_| bad())? / 1e6));
            }
            _ => {}
        }
    }
    (r.requests, r.seconds) = total.ok_or(ParseError::Missing("request count"))?;
    r.requests_per_sec = rps.ok_or(ParseError::Missing("Requests/sec"))?;
    r.p50_us = p50.ok_or(ParseError::Missing("50% latency (run wrk with --latency)"))?;
    r.p90_us = p90.ok_or(ParseError::Missing("90% latency"))?;
    r.p99_us = p99.ok_or(ParseError::Missing("99% latency"))?;
    Ok(r)
}

/// "Socket errors: connect 0, read 12, write 0, timeout 3".
fn parse_socket_errors(line: &str) -> Result<SocketErrors, ParseError> {
    let mut e = SocketErrors::default();
    let rest = line
        .split_once(':')
        .map(|(_, r)| r)
        .ok_or(ParseError::Missing("socket error counts"))?;
    for part in rest.split(',') {
        let mut kv = part.split_whitespace();
        let (k, v) = (kv.next().unwrap_or(""), kv.next().unwrap_or(""));
        let n: u64 = v.parse().map_err(|_| ParseError::Bad {
            field: "socket errors",
            text: part.trim().into(),
        })?;
        match k {
            "connect" => e.connect = n,
            "read" => e.read = n,
            "write" => e.write = n,
            "timeout" => e.timeout = n,
            _ => {}
        }
    }
    Ok(e)
}

/// What one `iperf3 -J` client run reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct IperfReport {
    /// Throughput the receiver saw, in bits per second.
    pub received_bps: f64,
    /// Throughput the sender put out, in bits per second.
    pub sent_bps: f64,
    /// TCP retransmissions on the sender.
    pub retransmits: u64,
}

/// Parses the JSON `iperf3 -c … -J` prints.
pub fn parse_iperf(out: &str) -> Result<IperfReport, ParseError> {
    let v: serde_json::Value = serde_json::from_str(out).map_err(|e| ParseError::Bad {
        field: "iperf3 JSON",
        text: e.to_string(),
    })?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(ParseError::Iperf(err.to_string()));
    }
    let end = v.get("end").ok_or(ParseError::Missing("end"))?;
    let num = |section: &'static str, field: &'static str| {
        end.get(section)
            .and_then(|s| s.get(field))
            .and_then(serde_json::Value::as_f64)
            .ok_or(ParseError::Missing(field))
    };
    Ok(IperfReport {
        received_bps: num("sum_received", "bits_per_second")?,
        sent_bps: num("sum_sent", "bits_per_second")?,
        retransmits: num("sum_sent", "retransmits").unwrap_or(0.0) as u64,
    })
}

/// One `wrk` run.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkSpec {
    /// wrk threads.
    pub threads: u32,
    /// Open connections.
    pub connections: u32,
    /// Run time.
    pub duration: Duration,
    /// Send `Connection: close`: one request per connection.
    pub close: bool,
    /// A Lua script (used for pacing).
    pub script: Option<PathBuf>,
}

impl WrkSpec {
    /// The arguments after `wrk` for `url`.
    pub fn args(&self, url: &str) -> Vec<String> {
        let mut a = vec![
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{}s", self.duration.as_secs().max(1)),
            "--timeout".into(),
            "2s".into(),
            "--latency".into(),
        ];
        if self.close {
            a.push("-H".into());
            a.push("Connection: close".into());
        }
        if let Some(s) = &self.script {
            a.push("-s".into());
            a.push(s.display().to_string());
        }
        a.push(url.into());
        a
    }
}

/// Writes the Lua script that paces every connection: after each response
/// the connection waits `delay_ms` before its next request.
pub fn write_pacing_script(path: &Path, delay_ms: u32) -> Result<()> {
    write_file(
        path,
        &format!(
            "-- Written by lb-bench: each connection waits {delay_ms} ms after every\n\
             -- response, so the offered load stays moderate and fixed.\n\
             function delay()\n  return {delay_ms}\nend\n"
        ),
    )
}

/// Runs `wrk` in namespace `ns` against `url` and parses its report.
/// Fails when wrk fails or completes no request.
pub fn run_wrk(ns: &str, spec: &WrkSpec, url: &str) -> Result<WrkReport> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "wrk"]).args(spec.args(url));
    let out = run_with_timeout(&mut cmd, spec.duration + Duration::from_secs(30))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let r = parse_wrk(&stdout).with_context(|| format!("reading wrk's report:\n{stdout}"))?;
    if r.requests == 0 {
        bail!("wrk completed no request:\n{stdout}");
    }
    Ok(r)
}

/// Runs `iperf3 -c target -p port -t secs -J` in namespace `ns`.
pub fn run_iperf(ns: &str, target: &str, port: u16, duration: Duration) -> Result<IperfReport> {
    let secs = duration.as_secs().max(1);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "iperf3", "-c", target])
        .args(["-p", &port.to_string(), "-t", &secs.to_string(), "-J"])
        .args(["--connect-timeout", "3000"]);
    let out = run_with_timeout(&mut cmd, duration + Duration::from_secs(30))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r = parse_iperf(&stdout).with_context(|| {
        format!(
            "iperf3 exited {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if r.received_bps <= 0.0 {
        bail!("iperf3 moved no data");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUT: &str = "Running 8s test @ http://198.18.100.10/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.12ms    1.23ms  30.01ms   80.00%
    Req/Sec     7.80k   500.00     9.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    4.50ms
     90%    5.20ms
     99%    1.10s
  124000 requests in 8.00s, 18.00MB read
  Socket errors: connect 1, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  15500.25
Transfer/sec:      2.25MB
";

    #[test]
    fn wrk_report_is_read_in_full() {
        let r = parse_wrk(WRK_OUT).unwrap();
        assert_eq!(r.requests, 124_000);
        assert!((r.seconds - 8.0).abs() < 1e-9);
        assert!((r.requests_per_sec - 15_500.25).abs() < 1e-9);
        assert!((r.p50_us - 812.0).abs() < 1e-9);
        assert!((r.p90_us - 5_200.0).abs() < 1e-9);
        assert!((r.p99_us - 1_100_000.0).abs() < 1e-6);
        assert_eq!(
            r.errors,
            SocketErrors {
                connect: 1,
                read: 12,
                write: 0,
                timeout: 3
            }
        );
        assert_eq!(r.errors.total(), 16);
        assert_eq!(r.non_2xx, 5);
    }

    #[test]
    fn wrk_report_without_errors_has_zero_counts() {
        let clean: String = WRK_OUT
            .lines()
            .filter(|l| !l.contains("Socket errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        let r = parse_wrk(&clean).unwrap();
        assert_eq!(r.errors, SocketErrors::default());
        assert_eq!(r.non_2xx, 0);
    }

    #[test]
    fn wrk_report_missing_parts_is_an_error() {
        let no_dist: String = WRK_OUT
            .lines()
            .filter(|l| !l.trim_start().starts_with("50%"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(matches!(parse_wrk(&no_dist), Err(ParseError::Missing(_))));
        assert_eq!(
            parse_wrk("unable to connect to 198.18.100.10:80 Connection refused"),
            Err(ParseError::Missing("request count"))
        );
        let garbled = WRK_OUT.replace("15500.25", "lots");
        assert!(matches!(parse_wrk(&garbled), Err(ParseError::Bad { .. })));
    }

    #[test]
    fn wrk_times_convert_to_microseconds() {
        assert_eq!(parse_wrk_time("250.50us").unwrap(), 250.5);
        assert_eq!(parse_wrk_time("3.00ms").unwrap(), 3000.0);
        assert_eq!(parse_wrk_time("2.00s").unwrap(), 2e6);
        assert_eq!(parse_wrk_time("1.00m").unwrap(), 60e6);
        assert!(parse_wrk_time("3.00parsecs").is_err());
        assert!(parse_wrk_time("ms").is_err());
        assert!(parse_wrk_time("").is_err());
    }

    #[test]
    fn iperf_json_gives_receiver_throughput() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"bytes":1,"bits_per_second":9.5e9,"retransmits":7},
            "sum_received":{"bytes":1,"bits_per_second":9.4e9}}}"#;
        let r = parse_iperf(json).unwrap();
        assert_eq!(r.received_bps, 9.4e9);
        assert_eq!(r.sent_bps, 9.5e9);
        assert_eq!(r.retransmits, 7);
    }

    #[test]
    fn iperf_errors_are_reported() {
        let json = r#"{"start":{},"intervals":[],"end":{},
            "error":"unable to connect to server: Connection refused"}"#;
        assert_eq!(
            parse_iperf(json),
            Err(ParseError::Iperf(
                "unable to connect to server: Connection refused".into()
            ))
        );
        assert!(matches!(
            parse_iperf("not json"),
            Err(ParseError::Bad { .. })
        ));
        assert_eq!(
            parse_iperf(r#"{"end":{"sum_sent":{"bits_per_second":1.0}}}"#),
            Err(ParseError::Missing("bits_per_second"))
        );
    }

    #[test]
    fn wrk_arguments_follow_the_spec() {
        let spec = WrkSpec {
            threads: 2,
            connections: 64,
            duration: Duration::from_secs(8),
            close: true,
            script: Some(PathBuf::from("/tmp/x/pace.lua")),
        };
        let a = spec.args("http://198.18.100.10/");
        assert_eq!(
            a,
            [
                "-t2",
                "-c64",
                "-d8s",
                "--timeout",
                "2s",
                "--latency",
                "-H",
                "Connection: close",
                "-s",
                "/tmp/x/pace.lua",
                "http://198.18.100.10/"
            ]
        );
    }
}
