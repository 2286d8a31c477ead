//! `ensure_cifar10_from` against a one-shot HTTP server on 127.0.0.1 serving a small archive.

#![cfg(feature = "data")]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::thread::JoinHandle;

use bayesian_bits::data::{ensure_cifar10_from, load_cifar10, DataError, Split};
use md5::{Digest, Md5};

const FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// A tar.gz laid out like the official one, two records per batch (labels 1, 2), minus `skip`.
fn archive(skip: Option<&str>) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut record = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, data).unwrap();
    };
    let records: Vec<u8> = [1u8, 2]
        .iter()
        .flat_map(|&l| std::iter::once(l).chain([128; 3072]))
        .collect();
    for name in FILES.iter().filter(|&&f| Some(f) != skip) {
        record(&format!("cifar-10-batches-bin/{name}"), &records);
    }
    record("cifar-10-batches-bin/batches.meta.txt", b"airplane\n");
    record("readme.html", b"outside the folder: not unpacked");
    tar.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// Serves `body` to one request; returns its URL and the server thread.
fn serve(body: Vec<u8>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/cifar-10-binary.tar.gz",
        listener.local_addr().unwrap()
    );
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
    });
    (url, server)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn downloads_verifies_and_unpacks_once() {
    let dir = tempfile::tempdir().unwrap();
    let body = archive(None);
    let md5 = md5_hex(&body);
    let (url, server) = serve(body);
    let bins = ensure_cifar10_from(dir.path(), &url, &md5).unwrap();
    server.join().unwrap();
    assert_eq!(bins, dir.path().join("cifar-10-batches-bin"));
    assert_eq!(
        entries(dir.path()),
        ["cifar-10-batches-bin"],
        "no temporary file is left"
    );
    let mut expected: Vec<&str> = FILES.to_vec();
    expected.push("batches.meta.txt");
    expected.sort();
    assert_eq!(entries(&bins), expected);
    let test = load_cifar10(dir.path(), Split::Test).unwrap();
    assert_eq!(test.labels(), [1, 2]);
    // Present now: no second request (the server is gone).
    assert_eq!(ensure_cifar10_from(dir.path(), &url, &md5).unwrap(), bins);
}

#[test]
fn checksum_mismatch_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let body = archive(None);
    let actual_md5 = md5_hex(&body);
    let (url, server) = serve(body);
    let wrong = "0123456789abcdef0123456789abcdef";
    let err = ensure_cifar10_from(dir.path(), &url, wrong).unwrap_err();
    server.join().unwrap();
    let DataError::Checksum {
        expected, actual, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((expected.as_str(), actual), (wrong, &actual_md5));
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn archive_without_a_batch_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let body = archive(Some("test_batch.bin"));
    let md5 = md5_hex(&body);
    let (url, server) = serve(body);
    let err = ensure_cifar10_from(dir.path(), &url, &md5).unwrap_err();
    server.join().unwrap();
    assert!(
        matches!(&err, DataError::Archive { msg, .. } if msg.contains("test_batch.bin")),
        "{err}"
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn offline_error_gives_the_manual_steps() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let err =
        ensure_cifar10_from(dir.path(), &url, "c32a1d4ab5d03f1284b67883e8d87530").unwrap_err();
    let DataError::Download {
        url: failed,
        manual,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(failed, &url);
    let message = err.to_string();
    assert!(
        message.contains(&url) && message.contains(manual.as_str()),
        "{message}"
    );
    assert!(
        manual.contains("cifar-10-batches-bin")
            && manual.contains("c32a1d4ab5d03f1284b67883e8d87530")
    );
    assert!(entries(dir.path()).is_empty());
}
