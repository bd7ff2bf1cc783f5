//! keyward-vcard: a virtual PIV smart card for keyward's tests.
//!
//! The card application is the crates.io `piv-authenticator` on trussed's virtual platform
//! (RAM storage, a constant RNG seed: **for tests only**); it plugs into vsmartcard's `vpcd`
//! reader driver, so pcscd and OpenSC see it as a card in the reader "Virtual PCD 00 00".
//!
//! Usage: `keyward-vcard [--port PORT] [--pull-file FILE]` (vpcd's port on 127.0.0.1, default
//! 35963; FILE pulls the card out of the reader and puts it back: see `presence.rs`). Runs until
//! vpcd closes the connection or the process is killed. Everything on the card is lost when
//! it exits.

mod apdu;
mod dispatch;
mod presence;

use std::{
    net::TcpStream,
    path::PathBuf,
    process::ExitCode,
    thread,
    time::Duration,
};

use piv_authenticator::Authenticator;
use trussed::virt::{self, StoreConfig};

/// How long to wait for vpcd (loaded by pcscd) to listen.
const CONNECT_TRIES: u32 = 100;

fn main() -> ExitCode {
    env_logger::init();
    let Options { port, pull_file } = match parse_args(std::env::args().skip(1).collect()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("keyward-vcard: {message}");
            return ExitCode::from(2);
        }
    };

    let result = virt::with_platform(StoreConfig::ram(), |platform| {
        platform.run_client_with_backends(
            "piv",
            dispatch::Dispatch::new(),
            dispatch::BACKENDS,
            |client| {
                let app = Authenticator::new(client, piv_authenticator::Options::default());
                let mut card = apdu::Card::new(app);
                presence::serve(port, pull_file.as_deref(), &mut card, connect)
            },
        )
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            eprintln!("keyward-vcard: vpcd closed the connection");
            ExitCode::SUCCESS
        }
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            eprintln!(
                "keyward-vcard: cannot reach vpcd on 127.0.0.1:{port}: {error}; start pcscd with vsmartcard-vpcd installed"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("keyward-vcard: connection to vpcd failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The command line.
struct Options {
    port: u16,
    pull_file: Option<PathBuf>,
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    const USAGE: &str = "usage: keyward-vcard [--port PORT] [--pull-file FILE]";
    let mut options = Options {
        port: vpicc::DEFAULT_PORT,
        pull_file: None,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--port" => {
                options.port = value
                    .parse()
                    .map_err(|_| format!("--port takes a TCP port number, not {value:?}"))?
            }
            "--pull-file" => options.pull_file = Some(PathBuf::from(value)),
            _ => return Err(USAGE.to_string()),
        }
    }
    Ok(options)
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(connection) => return Ok(connection),
            Err(error) if tries + 1 >= CONNECT_TRIES => return Err(error),
            Err(_) => {
                tries += 1;
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
