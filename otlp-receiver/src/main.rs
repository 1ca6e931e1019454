//! A tiny OTLP/HTTP receiver for tests: accepts protobuf exports on `/v1/metrics`,
//! `/v1/traces` and `/v1/logs`, decodes them with the `opentelemetry-proto` types and appends each one to a
//! file as a JSON line `{"path": …, "request": …}`.
//!
//!     otlp-receiver OUT_FILE        prints "listening on 127.0.0.1:PORT" once ready
//!
//! HTTP/1.1 with keep-alive and Content-Length bodies (what OTLP exporters send); anything
//! else gets a 4xx and the connection is closed. Stops when stdin closes, so a test that
//! spawned it never leaves it behind.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

type Out = Arc<Mutex<std::fs::File>>;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| usage("OUT_FILE is required"));
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| usage(&format!("cannot open {path}: {e}")));
    let out: Out = Arc::new(Mutex::new(out));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| usage(&e.to_string()));
    let addr = listener.local_addr().expect("bound address");
    println!("listening on {addr}");
    std::io::stdout().flush().ok();
    // The parent closes our stdin (or dies): exit.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    for stream in listener.incoming().flatten() {
        let out = out.clone();
        std::thread::spawn(move || serve(stream, &out));
    }
}

fn usage(message: &str) -> ! {
    eprintln!("otlp-receiver: {message}\nusage: otlp-receiver OUT_FILE");
    std::process::exit(2);
}

/// Requests on one connection until it closes.
fn serve(stream: TcpStream, out: &Out) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut length = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let Some(length) = length.filter(|_| method == "POST") else {
            let _ = reply(&mut writer, "411 Length Required", true);
            return;
        };
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let decoded = match path.as_str() {
            "/v1/metrics" => ExportMetricsServiceRequest::decode(body.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string())),
            "/v1/traces" => ExportTraceServiceRequest::decode(body.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string())),
            "/v1/logs" => ExportLogsServiceRequest::decode(body.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string())),
            _ => Err(format!("unknown path {path}")),
        };
        match decoded {
            Ok(request) => {
                let line = serde_json::json!({ "path": path, "request": request }).to_string();
                let mut file = out.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(file, "{line}");
                let _ = file.flush();
                drop(file);
                if reply(&mut writer, "200 OK", false).is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("otlp-receiver: {e}");
                let _ = reply(&mut writer, "400 Bad Request", true);
                return;
            }
        }
    }
}

fn reply(writer: &mut TcpStream, status: &str, close: bool) -> std::io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        writer,
        "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: {connection}\r\n\r\n"
    )?;
    writer.flush()
}
